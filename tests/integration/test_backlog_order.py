"""A backlog whose two input topics span different stretches of event time keeps its order.

aiokafka hands a fetch out one topic-partition at a time, a fixed number of bytes of each. When
one topic's records are sparse in event time and the other's dense, every fetch of the sparse
one runs further ahead, and the event-time merge (``streams/core/ordering.py``) holds its records
until the dense one catches up. Without back-pressure the merge filled up to its bound and
released records out of order (the throughput bench saw about 9,000 such releases in 200,000
events). Given such a backlog, when a worker reads it, then every record is processed and none
is released before its turn.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.core.timeutil import format_ms, parse_rfc3339_ms
from streams.tools.devstack import DevStack
from tests.support import WorkerProcess, run, unique_topics, write_config

START_MS = parse_rfc3339_ms("2024-01-01T00:00:00Z") or 0
MINUTE_MS = 60_000
DENSE = 45_000  # account events, one a minute
SPARSE = 15_000  # usage events, one every ten minutes: ten times the event time per record
CUSTOMERS = 200


def _stream(
    tag: str, prefix: str, count: int, every_minutes: int, fields: Callable[[str], dict[str, Any]]
) -> list[tuple[bytes, bytes]]:
    """``count`` events of one topic, one every ``every_minutes`` of event time, customers in
    turn; ``fields(customer)`` gives each event's type and type-specific fields."""
    records = []
    for i in range(count):
        customer = f"b-{tag}-{i % CUSTOMERS}"
        event = {
            "event_id": f"{prefix}-{tag}-{i}",
            "customer_id": customer,
            "occurred_at": format_ms(START_MS + i * every_minutes * MINUTE_MS),
            **fields(customer),
        }
        records.append((customer.encode(), orjson.dumps(event)))
    return records


def _records(tag: str) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    account = _stream(
        tag,
        "a",
        DENSE,
        1,
        lambda customer: {
            "type": "balance",
            "account_id": f"{customer}-checking",
            "account_type": "checking",
            "balance": 1_000.0,
        },
    )
    usage = _stream(
        tag,
        "u",
        SPARSE,
        10,
        lambda customer: {"type": "visit", "venue": "gym", "sentiment": "neutral"},
    )
    return account, usage


async def _load(bootstrap: str, batches: list[tuple[str, list[tuple[bytes, bytes]]]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        futures = []
        for topic, records in batches:
            for key, value in records:
                futures.append(await producer.send(topic, value, key=key, partition=0))
        for future in futures:
            await future
    finally:
        await producer.stop()


def test_a_skewed_backlog_is_merged_in_order_without_forced_releases(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = unique_topics("backlog")
    dev_stack.create_topics(topics.all, 1)
    account, usage = _records(tag)
    run(
        _load(
            dev_stack.bootstrap_servers,
            [(topics.account_events, account), (topics.usage_events, usage)],
        )
    )
    # Every record goes to partition 0 on purpose, whatever its key hashes to: not misrouted.
    config = write_config(tmp_path / "backlog.yaml", topics, {"stream": {"repartition": "off"}})
    worker = WorkerProcess(
        dev_stack, config, f"backlog-{tag}", tmp_path / "state", partitions=1
    ).start()
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 300
        done = 0.0
        while time.monotonic() < deadline:
            done = worker.metric("lifecycle_input_records_done_total")
            if done >= DENSE + SPARSE:
                break
            time.sleep(0.5)
        forced = worker.metric("lifecycle_order_forced_releases_total", reason="buffer_full")
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    assert done == DENSE + SPARSE, f"only {done:.0f} records done:\n{worker.log_text()[-3000:]}"
    assert forced == 0
