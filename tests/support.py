"""Helpers for integration tests: unique names, real worker processes, produce and consume."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.kafka.copartition import murmur2_partition
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack, dev_environment, free_port, stop_process


def unique_topics(prefix: str = "t") -> TopicNames:
    tag = uuid.uuid4().hex[:10]
    return TopicNames(
        account_events=f"{prefix}-{tag}-account-events",
        usage_events=f"{prefix}-{tag}-usage-events",
        contact_decisions=f"{prefix}-{tag}-contact-decisions",
        dead_letters=f"{prefix}-{tag}-dead-letters",
        decision_outcomes=f"{prefix}-{tag}-decision-outcomes",
    )


def write_config(path: Path, topics: TopicNames, extra: dict[str, Any] | None = None) -> Path:
    document: dict[str, Any] = {
        "topics": {
            "account_events": topics.account_events,
            "usage_events": topics.usage_events,
            "contact_decisions": topics.contact_decisions,
            "dead_letters": topics.dead_letters,
            "decision_outcomes": topics.decision_outcomes,
        }
    }
    document.update(extra or {})
    path.write_text(yaml.safe_dump(document))
    return path


_TOLD = re.compile(
    r"WARNING|ERROR|CRITICAL|Traceback|dropped;|restored|did not finish|"
    r"Revoking|newly assigned|Worker ready|Seek stream|Stopping"
)


def worker_log_digest(directory: Path, lines: int = 60) -> str:
    """What the worker logs under ``directory`` tell of rebalances, seeks, drops and errors:
    the last ``lines`` such lines of each, oldest log first. Printed when a test fails
    (``tests/conftest.py``): a test of restarts fails by chance, and its CI output must be
    enough to start from."""
    out: list[str] = []
    for log in sorted(directory.glob("*.log"), key=lambda path: path.stat().st_mtime):
        told = [
            line[:240]
            for line in log.read_text(errors="replace").splitlines()
            if _TOLD.search(line)
        ]
        out.append(f"--- {log.name}: {len(told)} lines of interest, the last {lines}")
        out.extend(told[-lines:])
    return "\n".join(out)


@dataclass
class WorkerProcess:
    """A real ``lifecycle-triggers worker`` process pointed at the dev stack."""

    stack: DevStack
    config: Path
    app_id: str
    state_dir: Path
    clock: str = "event"
    store: str = "memory"
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> WorkerProcess:
        self.metrics_port = free_port()
        env = dev_environment(self.stack)
        env.update(
            {
                "CLOCK": self.clock,
                "TRIGGERS_CONFIG": str(self.config),
                "TOPIC_PARTITIONS": str(self.partitions),
                "METRICS_PORT": str(self.metrics_port),
                "STATE_DIR": str(self.state_dir),
                "STATE_STORE": self.store,
                "APP_ID": self.app_id,
                # Each worker test has its own ledger keys: runs compared with each other must
                # not answer one another's decisions.
                "LEDGER_NAMESPACE": self.app_id,
            }
        )
        env.update(self.extra_env)
        self.log_path = self.state_dir.parent / f"{self.app_id}-{time.monotonic_ns()}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own local endpoint
                f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2
            ) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 60.0, ledger: bool = True) -> None:
        """Wait until /ready (partitions assigned, tables recovered) and, with ``ledger``,
        /ledger (Redis answers) say 200: the worker can decide."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_text()[-4000:]}")
            try:
                if self.get("/ready")[0] == 200 and (not ledger or self.get("/ledger")[0] == 200):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout} s:\n{self.log_text()[-4000:]}")

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when the sample does not exist yet)."""
        _, text = self.get("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, rest = key.partition("{")
            if metric != name:
                continue
            got = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
            if got == want:
                return float(value)
        return 0.0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return stop_process(self.proc, sig, timeout)


Record = tuple[bytes | None, bytes | None]


def key_on_partition(prefix: str, partition: int, partitions: int) -> str:
    """A key starting with ``prefix`` that murmur2 (the worker's default partitioner) places on
    ``partition``: a record produced there with it is not misrouted."""
    for n in range(100_000):
        key = f"{prefix}-{n}"
        if murmur2_partition(key.encode(), partitions) == partition:
            return key
    raise AssertionError(f"no key for partition {partition} of {partitions}")


async def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def published_decisions(
    bootstrap: str,
    topic: str,
    until: int,
    timeout: float = 90.0,
    settle: float = 3.0,
    distinct: bool = False,
) -> list[dict[str, Any]]:
    """The decision (or outcome) records on ``topic`` once ``until`` arrived (distinct
    decision ids with ``distinct``: a restarted worker publishes some again), decoded."""
    records = asyncio.run(
        consume(
            bootstrap,
            topic,
            until=until,
            timeout=timeout,
            settle=settle,
            distinct=decision_id if distinct else None,
        )
    )
    return [orjson.loads(r.value) for r in records]


def decision_id(record: ConsumerRecord[bytes, bytes]) -> Any:
    """A decision record's id (for ``consume(distinct=...)``)."""
    return orjson.loads(record.value)["decision_id"]


async def consume(
    bootstrap: str,
    topic: str,
    *,
    until: int,
    timeout: float = 60.0,
    settle: float = 2.0,
    distinct: Callable[[ConsumerRecord[bytes, bytes]], Any] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the start until ``until`` records arrived, then ``settle`` s more.

    With ``distinct``, ``until`` counts distinct values of ``distinct(record)``: after a
    restart a worker re-publishes decisions, and counting those would stop the read before the
    decisions still to come.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        got: list[ConsumerRecord[bytes, bytes]] = []
        seen: set[Any] = set()
        deadline = time.monotonic() + timeout
        settled_at: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                got.extend(records)
                if distinct is not None:
                    seen.update(distinct(r) for r in records)
            count = len(got) if distinct is None else len(seen)
            if count >= until and settled_at is None:
                settled_at = time.monotonic() + settle
            if settled_at is not None and time.monotonic() >= settled_at:
                break
        return got
    finally:
        await consumer.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def keyed(records: Sequence[tuple[str, bytes]]) -> list[Record]:
    return [(k.encode(), v) for k, v in records]


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, timeout: float
) -> list[TopicPartition]:
    """The topic's partitions, once the metadata names them; empty if it never does in time."""
    partitions = consumer.partitions_for_topic(topic)
    deadline = time.monotonic() + timeout
    while not partitions and time.monotonic() < deadline:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in partitions or ()]


async def end_offsets(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """Each partition's ListOffsets(latest) answer (on Tansu: the last batch's base offset + 1,
    so more than zero once the partition holds a record); empty if the topic does not exist."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic, timeout)
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_changelog(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[bytes, bytes]:
    """A table's contents as its changelog says: the last value per key, tombstones deleting."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        tps = await _partitions(consumer, topic, timeout)
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        table: dict[bytes, bytes] = {}
        # The fetch high watermark, not ListOffsets: Tansu answers the latter with the last
        # batch's base offset + 1.
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end")
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for rec in records:
                    if rec.value is None:
                        table.pop(rec.key, None)
                    else:
                        table[rec.key] = rec.value
            if batch:
                continue
            done = True
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    done = False
            if done:
                break
        return table
    finally:
        await consumer.stop()


# What the outcome records of a live run must say, apart from what the contact ledger decides:
# the arm and channel (checked against the decisions instead).
DECIDED_BY_THE_LEDGER = ("arm", "channel", "global_control")


def model_outcomes(
    records: Sequence[tuple[str, int | None, str, bytes]],
    partitions: int,
    config: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The outcome records the pure path gives for ``records`` ((kind, partition or None, key,
    value) in event-time order, as the live tests produce them) without the fields the ledger
    decides (``DECIDED_BY_THE_LEDGER``), by decision id: the reference a live run's outcome
    records are held to."""
    from streams.config import build_config
    from streams.core.adapter import build_core
    from streams.core.clock import Clock
    from streams.core.decisions import Arm, Decision
    from streams.core.ingest import validate_payload
    from streams.kafka.processor import ContactAll, Processor, Stores
    from streams.ops.metrics import Metrics

    class ContactAllRecalled(ContactAll):
        # The arm of every decision is contact (the channel is the ledger's: not compared).
        async def recall(self, customer_id: str, ids: Sequence[str]) -> dict[str, Arm]:
            return {i: Arm("contact", "") for i in ids}

    found: dict[str, dict[str, Any]] = {}

    async def done() -> None:
        return None

    async def publish_decision(decision: Decision) -> Any:
        return asyncio.ensure_future(done())

    async def publish_outcome(key: bytes, value: bytes) -> Any:
        record = orjson.loads(value)
        for name in DECIDED_BY_THE_LEDGER:
            record.pop(name, None)
        found[record["decision_id"]] = record
        return asyncio.ensure_future(done())

    processor = Processor(
        build_core(build_config(config or {})),
        Stores({}, {}, {}),
        Clock("event"),
        ContactAllRecalled(),
        publish_decision,
        Metrics(),
        publish_outcome=publish_outcome,
    )

    async def feed() -> None:
        offsets: dict[tuple[str, int], int] = {}
        for kind, partition, key, value in records:
            p = murmur2_partition(key.encode(), partitions) if partition is None else partition
            offset = offsets.get((kind, p), 0)
            offsets[(kind, p)] = offset + 1
            await processor.on_event(kind, p, offset, validate_payload(kind, orjson.loads(value)))

    asyncio.run(feed())
    return found
