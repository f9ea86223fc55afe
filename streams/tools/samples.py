"""A handful of sample events for ``lifecycle-triggers dev --sample``: see the worker work.

Until the simulator and the demo exist, this shows a newcomer the pipeline on the dev stack:
valid events are accepted and counted, malformed ones land on the dead-letter topic with
their reasons.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.core.timeutil import format_ms, wall_ms
from streams.kafka.topics import TopicNames


def sample_records(now_ms: int) -> list[tuple[str, bytes | None, bytes]]:
    """(topic kind, key, value) of a short, mixed sample: mostly valid, a few malformed."""
    day = 86_400_000

    def event(cid: str, eid: str, type_: str, at: int, **fields: Any) -> bytes:
        body = {"event_id": eid, "customer_id": cid, "type": type_, "occurred_at": format_ms(at)}
        return orjson.dumps({**body, **fields})

    t0 = now_ms - 30 * day
    return [
        (
            "account",
            b"c-1",
            event("c-1", "s1", "account_opened", t0, account_id="sav-1", account_type="savings"),
        ),
        (
            "account",
            b"c-1",
            event(
                "c-1",
                "s2",
                "balance",
                t0 + day,
                account_id="sav-1",
                account_type="savings",
                balance=25_000,
            ),
        ),
        (
            "usage",
            b"c-1",
            event("c-1", "s3", "visit", t0 + 2 * day, venue="Main St", sentiment="positive"),
        ),
        (
            "usage",
            b"c-2",
            event(
                "c-2", "s4", "purchase", t0 + 3 * day, product_category="air_filter", amount=19.99
            ),
        ),
        ("account", b"c-2", b'{"event_id": "broken'),
        (
            "account",
            b"c-3",
            event(
                "c-3",
                "s5",
                "transaction",
                t0,
                account_id="chk",
                account_type="checking",
                direction="debit",
                amount=-5,
                rail="card",
            ),
        ),
        ("usage", None, event("c-4", "s6", "visit", t0, venue="x", sentiment="neutral")),
    ]


def _ready(port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/ready"
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our local endpoint
            return bool(resp.status == 200)
    except OSError:
        return False


async def play_samples(bootstrap: str, topics: TopicNames, metrics_port: int) -> None:
    """Wait for the worker, produce the sample, and print what came out on dead-letters."""
    deadline = time.monotonic() + 120
    while not await asyncio.to_thread(_ready, metrics_port):
        if time.monotonic() > deadline:
            print("sample: the worker did not become ready; nothing produced", flush=True)
            return
        await asyncio.sleep(0.5)
    records = sample_records(wall_ms())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for kind, key, value in records:
            topic = topics.account_events if kind == "account" else topics.usage_events
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    print(f"sample: produced {len(records)} events (3 of them malformed)", flush=True)
    consumer = AIOKafkaConsumer(
        topics.dead_letters, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen = 0
    try:
        deadline = time.monotonic() + 30
        while seen < 3 and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for rec in batch:
                    seen += 1
                    letter = orjson.loads(rec.value)
                    print(
                        f"sample: dead letter {letter['source_topic']}[{letter['partition']}]"
                        f"@{letter['offset']}: {letter['error']}",
                        flush=True,
                    )
    finally:
        await consumer.stop()
    print(
        f"sample: counters at http://127.0.0.1:{metrics_port}/metrics "
        "(lifecycle_events_consumed_total, lifecycle_dead_letters_total)",
        flush=True,
    )
