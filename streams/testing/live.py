"""The testing kit's live half: stories through a real worker, a real broker and Redis.

``run_live`` starts ``lifecycle-triggers worker`` (a subprocess, the event clock) on fresh
topics of the broker at ``bootstrap_servers`` with the contact ledger at ``redis_url``,
produces the stories' events in event-time order (and, on every partition, a clock event of an
unrelated customer every ``clock_step_days`` until ``until_day``, as a busy partition would:
stream time moves on, so time-based triggers come due), reads the published decisions until
``expect`` arrived (and ``settle`` seconds more), stops the worker and returns them, decoded::

    from streams.testing import Story, to_wire
    from streams.testing.live import run_live

    decisions = run_live([story], bootstrap_servers=..., redis_url=..., workdir=tmp_path,
                         config={"triggers": {"complaint_streak": {"enabled": True}}},
                         expect=1, until_day=60)

The configuration document is the worker's (topics are filled in; ``policy.holdout_rate`` is 0
unless given, so every decision is a contact or a suppression). The worker's log is
``workdir/<app id>.log``. Every story needs a customer id of its own. With
``broker_kind="tansu"`` (this project's dev stack) the worker uses the Tansu broker's settings.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.core.timeutil import MS_PER_DAY, format_ms
from streams.kafka.copartition import murmur2_partition
from streams.testing import Story, to_wire

__all__ = ["run_live"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:  # noqa: S310 - the worker's local endpoint
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def _key_on_partition(prefix: str, partition: int, partitions: int) -> str:
    for i in range(100_000):
        key = f"{prefix}-{i}"
        if murmur2_partition(key.encode(), partitions) == partition:
            return key
    raise AssertionError("no key found")  # pragma: no cover - murmur2 spreads keys


def _timeline(
    stories: Sequence[Story], tag: str, partitions: int, until_day: float, step_days: float
) -> list[tuple[int, str, int | None, str, bytes]]:
    timeline: list[tuple[int, str, int | None, str, bytes]] = []
    start = min(s.start_ms for s in stories)
    for story in stories:
        for e in story.events:
            value = orjson.dumps(to_wire(e))
            timeline.append((e.occurred_at_ms, e.topic_kind, None, e.customer_id, value))
    end = start + round(until_day * MS_PER_DAY)
    for p in range(partitions):
        cid = _key_on_partition(f"clock-{tag}-p{p}", p, partitions)
        at, n = start, 0
        while at <= end:
            clock = {"event_id": f"{cid}-{n}", "customer_id": cid, "type": "profile",
                     "occurred_at": format_ms(at)}  # fmt: skip
            timeline.append((at, "usage", p, cid, orjson.dumps(clock)))
            at += round(step_days * MS_PER_DAY)
            n += 1
    timeline.sort(key=lambda r: r[0])
    return timeline


async def _produce(
    bootstrap: str,
    topics: Mapping[str, str],
    timeline: list[tuple[int, str, int | None, str, bytes]],
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for _, kind, partition, key, value in timeline:
            topic = topics["account_events" if kind == "account" else "usage_events"]
            futures.append(await producer.send(topic, value, key=key.encode(), partition=partition))
        for f in futures:
            await f
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str, topic: str, expect: int, timeout: float, settle: float
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout
        while not partitions:
            if time.monotonic() > deadline:
                return []
            await asyncio.sleep(0.2)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        got: list[Any] = []
        settled_at: float | None = None
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                got.extend(orjson.loads(r.value) for r in records if r.value is not None)
            if len(got) >= expect and settled_at is None:
                settled_at = time.monotonic() + settle
            if settled_at is not None and time.monotonic() >= settled_at:
                break
        return got
    finally:
        await consumer.stop()


def run_live(
    stories: Sequence[Story],
    *,
    bootstrap_servers: str,
    redis_url: str,
    workdir: Path,
    config: Mapping[str, Any] | None = None,
    expect: int,
    until_day: float,
    clock_step_days: float = 2,
    partitions: int = 4,
    broker_kind: str = "tansu",
    timeout: float = 90,
    settle: float = 5,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The decisions a live worker publishes for ``stories`` (see the module's docstring)."""
    tag = uuid.uuid4().hex[:10]
    app_id = f"live-kit-{tag}"
    topics = {
        "account_events": f"{app_id}-account-events",
        "usage_events": f"{app_id}-usage-events",
        "contact_decisions": f"{app_id}-contact-decisions",
        "dead_letters": f"{app_id}-dead-letters",
    }
    document: dict[str, Any] = {k: dict(v) for k, v in (config or {}).items()}
    document["topics"] = topics
    document.setdefault("policy", {}).setdefault("holdout_rate", 0)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{app_id}.yaml"
    config_path.write_text(yaml.safe_dump(document))
    port = _free_port()
    child_env = dict(os.environ)
    child_env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "REDIS_URL": redis_url,
            "BROKER_KIND": broker_kind,
            "CLOCK": "event",
            "TRIGGERS_CONFIG": str(config_path),
            "TOPIC_PARTITIONS": str(partitions),
            "METRICS_PORT": str(port),
            "STATE_DIR": str(workdir / f"{app_id}-state"),
            "STATE_STORE": "memory",
            "APP_ID": app_id,
            "LEDGER_NAMESPACE": app_id,
        }
    )
    child_env.update(env or {})
    log_path = workdir / f"{app_id}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own worker, by the running interpreter
            [sys.executable, "-m", "streams", "worker"],
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited early: {log_path.read_text()[-3000:]}")
            try:
                if _get(port, "/ready") == 200 and _get(port, "/ledger") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready in 60 s: {log_path}")
            time.sleep(0.2)
        timeline = _timeline(stories, tag, partitions, until_day, clock_step_days)
        asyncio.run(_produce(bootstrap_servers, topics, timeline))
        return asyncio.run(
            _consume(bootstrap_servers, topics["contact_decisions"], expect, timeout, settle)
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
