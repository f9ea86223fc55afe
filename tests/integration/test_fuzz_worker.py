"""Bad input at scale through a running worker.

Given a worker (real broker, real Redis, event clock, memory store), when more than 10,000
generated and mutated records (the decoder fuzz test's generator) reach both input topics, with
the events of a few valid planted customers produced in between, then every record is either
accepted (``lifecycle_events_consumed_total``) or dead-lettered (counted on the dead-letter
topic), exactly as the decoder predicts for each record; accepted + dead-lettered == produced;
the worker stays up; and the planted customers get exactly their expected decisions.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from streams.core.errors import InvalidEvent
from streams.core.ingest import Decoder
from streams.core.timeutil import parse_rfc3339_ms, wall_ms
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack
from streams.tools.scenarios import build
from tests.support import WorkerProcess, consume, run, unique_topics, write_config
from tests.unit.test_fuzz_decoder import ACCOUNT_TYPES, Mutator

FUZZ_RECORDS = 10_500
# Later than every fuzz seed (they end in 2024), so that the planted histories are never late.
PLANTED_START = parse_rfc3339_ms("2025-06-01T00:00:00Z") or 0
PLANTED = ("auto_renew_confirmation", "renewal_after_positive_visit", "savings_drop_to_wire")
BIG = 8 * 1024
Record = tuple[str, bytes | None, bytes | None]


def _records(tag: str) -> tuple[list[Record], dict[str, str]]:
    """Fuzz records with the planted customers' events spread among them, in their order."""
    mutator = Mutator(seed=7)
    rng = random.Random(11)
    fuzz: list[Record] = []
    while len(fuzz) < FUZZ_RECORDS:
        kind, key, value = mutator.record()
        # Keep the volume on the broker moderate: few records near the 64 KiB limit.
        if value is not None and len(value) > BIG and rng.random() > 0.05:
            continue
        fuzz.append((kind, key, value))
    planted: list[Record] = []
    customers: dict[str, str] = {}
    for trigger in PLANTED:
        scenario = build(trigger, f"planted-{tag}-{trigger}", PLANTED_START)
        customers[scenario.customer_id] = trigger
        for event in scenario.events:
            kind = "account" if event["type"] in ACCOUNT_TYPES else "usage"
            planted.append((kind, scenario.customer_id.encode(), orjson.dumps(event)))
    planted.sort(key=lambda r: orjson.loads(r[2] or b"{}")["occurred_at"])
    step = len(fuzz) // (len(planted) + 1)
    out: list[Record] = []
    for i, record in enumerate(fuzz):
        out.append(record)
        if i % step == step - 1 and planted:
            out.append(planted.pop(0))
    out.extend(planted)
    return out, customers


async def _produce(bootstrap: str, topics: TopicNames, records: list[Record]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=1_048_576, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for kind, key, value in records:
            topic = topics.account_events if kind == "account" else topics.usage_events
            futures.append(await producer.send(topic, value, key=key))
        for future in futures:
            await future
    finally:
        await producer.stop()


def test_ten_thousand_mutated_records_through_a_worker(dev_stack: DevStack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = unique_topics("fuzz")
    config = write_config(tmp_path / "config.yaml", topics, {"policy": {"holdout_rate": 0}})
    records, planted = _records(tag)
    decoder = Decoder()
    now = wall_ms()
    predicted: Counter[str] = Counter()
    for kind, key, value in records:
        try:
            decoder.decode(kind, key, value, now)
            predicted["accepted"] += 1
        except InvalidEvent:
            predicted["dead"] += 1
    assert predicted["accepted"] > 1000 and predicted["dead"] > 1000, predicted

    worker = WorkerProcess(dev_stack, config, f"fuzz-{tag}", tmp_path / "state").start()
    try:
        worker.wait_ready()
        started = time.monotonic()
        run(_produce(dev_stack.bootstrap_servers, topics, records))

        inputs = (f'topic="{topics.account_events}"', f'topic="{topics.usage_events}"')

        def counted(name: str) -> float:
            _, text = worker.get("/metrics")
            return sum(
                float(line.rpartition(" ")[2])
                for line in text.splitlines()
                if line.startswith(name + "{") and any(t in line for t in inputs)
            )

        deadline = time.monotonic() + 75
        while True:
            accepted = counted("lifecycle_events_consumed_total")
            dead_counted = counted("lifecycle_dead_letters_total")
            if accepted + dead_counted >= len(records) or time.monotonic() > deadline:
                break
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_text()[-3000:]
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        bootstrap = dev_stack.bootstrap_servers
        dead = run(consume(bootstrap, topics.dead_letters, until=predicted["dead"], settle=1))
        assert accepted == predicted["accepted"], (accepted, predicted)
        assert len(dead) == predicted["dead"] == dead_counted
        assert accepted + len(dead) == len(records)
        for rec in dead[:: max(1, len(dead) // 200)]:
            letter = orjson.loads(rec.value)
            assert letter["error"] and letter["error_code"]

        decisions = run(consume(bootstrap, topics.contact_decisions, until=len(planted)))
        got: Counter[tuple[str, str]] = Counter()
        for rec in decisions:
            d = orjson.loads(rec.value)
            if d["customer_id"] in planted:
                got[(d["customer_id"], d["trigger"])] += 1
        assert got == Counter({(c, t): 1 for c, t in planted.items()}), got
        assert worker.proc is not None and worker.proc.poll() is None, "the worker stopped"
    finally:
        code = worker.stop()
    assert code == 0, worker.log_text()[-3000:]
    print(
        f"\nfuzz through a worker: {len(records)} records, {accepted:.0f} accepted, "
        f"{len(dead)} dead-lettered, {elapsed:.1f} s"
    )
