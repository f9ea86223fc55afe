"""Poison records on the real broker: a record of any content is dead-lettered, never a stop.

Given a worker deciding planted scenarios on four partitions (real Tansu broker, real
redis-server, event clock), when records far over the 64 KiB message limit are produced to one
partition ahead of the scenarios (a 5 MiB value; values of 600-800 KB whose dead letter would
grow past the producer's 1,000,000-byte request limit when encoded: quotes and backslashes,
control characters, invalid UTF-8 that goes to base64; a 2 MB key), then each is dead-lettered
with its value cut to ``stream.dead_letter_max_value_bytes`` and its original length and
SHA-256 kept, and every planted decision of every partition is published: the records behind
the poison ones are processed. The worker stays up and stops cleanly.

Before dead letters were bounded, the worker exited on the first of these records (the dead
letter was over the producer's request limit), and read it again after every restart.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from streams.core.timeutil import format_ms
from streams.kafka.topics import TopicNames, ensure_topics
from streams.tools.devstack import DevStack
from streams.tools.scenarios import all_scenarios
from tests.integration.test_triggers_live import (
    POLICY,
    START_MS,
    _expected,
    _records,
)
from tests.support import (
    WorkerProcess,
    consume,
    published_decisions,
    run,
    unique_topics,
    write_config,
)

PARTITIONS = 4
POISON_PARTITION = 1
# Tansu (the dev stack's broker) took records of 120 MiB in a probe; the producer's default
# request limit (1 MiB) is what stops a test's producer first.
TEST_PRODUCER_MAX_REQUEST = 16 * 1024 * 1024
LIMIT = 64 * 1024
# Everything in a dead letter beside the cut key and value: names, position, error, hashes.
OVERHEAD = 4_096


def _poison(tag: str) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) of records no valid event looks like, each too big to copy whole."""
    quotes = b'"\\' * 300_000  # 600 KB, twice that as JSON text
    controls = bytes(range(1, 32)) * 20_000  # 620 KB, up to 6x as JSON escapes
    mixed = ('{"a":"\\"\u00e9\u4e2d\U0001f600\t\n\x00' * 20_000).encode()
    invalid_utf8 = b"\xff\xfe" + b"\x80abc" * 200_000  # 800 KB, base64 1.07 MB
    return [
        ("account", f"big-{tag}".encode(), b"x" * (5 * 1024 * 1024)),
        ("usage", f"quotes-{tag}".encode(), quotes),
        ("account", f"controls-{tag}".encode(), controls),
        ("usage", f"mixed-{tag}".encode(), mixed),
        ("account", f"binary-{tag}".encode(), invalid_utf8),
        ("usage", b"k" * 2_000_000, b"{}"),
    ]


async def _produce(
    bootstrap: str,
    topics: TopicNames,
    poison: list[tuple[str, bytes, bytes]],
    records: list[tuple[str, int | None, str, bytes]],
) -> list[tuple[str, int, int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=TEST_PRODUCER_MAX_REQUEST
    )
    await producer.start()
    try:
        positions = []
        for kind, key, value in poison:
            topic = topics.account_events if kind == "account" else topics.usage_events
            meta = await producer.send_and_wait(topic, value, key=key, partition=POISON_PARTITION)
            positions.append((topic, meta.partition, meta.offset))
        futures = []
        for kind, partition, k, v in records:
            topic = topics.account_events if kind == "account" else topics.usage_events
            futures.append(await producer.send(topic, v, key=k.encode(), partition=partition))
        for f in futures:
            await f
        return positions
    finally:
        await producer.stop()


def _original(letter: dict[str, object], field: str) -> bytes:
    text = letter[field]
    assert isinstance(text, str)
    if letter.get(f"{field}_encoding") == "base64":
        return base64.b64decode(text)
    return text.encode()


def test_poison_records_are_dead_lettered_and_every_partition_moves_on(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    scenarios = all_scenarios(START_MS, prefix=f"poison-{tag}")
    expected = _expected(scenarios)
    topics = unique_topics("poison")
    app_id = f"poison-{tag}"
    config = write_config(tmp_path / "config.yaml", topics, POLICY)
    worker = WorkerProcess(
        dev_stack, config, app_id, tmp_path / "state", partitions=PARTITIONS
    ).start()
    poison = _poison(tag)
    try:
        worker.wait_ready()
        positions = run(
            _produce(dev_stack.bootstrap_servers, topics, poison, _records(scenarios, tag))
        )
        published = published_decisions(
            dev_stack.bootstrap_servers,
            topics.contact_decisions,
            until=sum(expected.values()),
            timeout=120,
            settle=3,
        )
        dead = run(
            consume(dev_stack.bootstrap_servers, topics.dead_letters, until=len(poison), settle=1)
        )
        assert worker.proc is not None and worker.proc.poll() is None, "the worker stopped"
        unsendable = sum(
            worker.metric("lifecycle_dead_letters_unsendable_total", topic=t) for t in topics.inputs
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log_text()[-3000:]

    # Then: the records behind the poison ones were processed, on every partition.
    got = collections.Counter((d["customer_id"], d["trigger"]) for d in published)
    assert got == expected, f"missing {dict(expected - got)}, unexpected {dict(got - expected)}"

    # And: each poison record is one dead letter at its own position, bounded, and it tells
    # the original's length and hash.
    letters = {}
    for rec in dead:
        letter = orjson.loads(rec.value)
        letters[(letter["source_topic"], letter["partition"], letter["offset"])] = (rec, letter)
    assert set(letters) == set(positions)
    assert unsendable == 0
    for (_kind, key, value), position in zip(poison, positions, strict=True):
        rec, letter = letters[position]
        assert letter["error_code"] in ("too_large", "missing_field"), letter["error"]
        assert len(rec.value) <= 2 * LIMIT + OVERHEAD, position
        assert len(rec.key or b"") <= LIMIT
        for field, original in (("key", key), ("value", value)):
            assert letter[f"{field}_bytes"] == len(original), (position, field)
            assert letter[f"{field}_sha256"] == hashlib.sha256(original).hexdigest()
            cut = _original(letter, field)
            assert original.startswith(cut), (position, field)
            encoded = len(orjson.dumps(letter[field])) - 2
            assert encoded <= LIMIT, (position, field, encoded)
            assert letter[f"{field}_truncated"] is (len(cut) < len(original)), (position, field)
        assert letter["value_truncated"] or letter["key_truncated"], position


async def _plant_corrupt_state(bootstrap: str, app_id: str, customers: list[str]) -> None:
    """Write records the worker cannot read into its customers table's changelog, as an
    incompatible version or a damaged changelog would leave them: the worker restores them at
    start. Keyed like the input (the default partitioner), so each lands on its customer's
    partition."""
    changelog = f"{app_id}-customers-changelog"
    await ensure_topics(bootstrap, (changelog,), PARTITIONS, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for customer in customers:
            await producer.send_and_wait(
                changelog, b"\x00not a customer record", key=customer.encode()
            )
    finally:
        await producer.stop()


def test_a_record_whose_processing_fails_is_dead_lettered_and_the_rest_decided(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """Given a customer whose stored record cannot be read, when the planted scenarios arrive,
    then that customer's events are dead-lettered with ``processing_error`` and the error,
    every other planted decision is published, and the worker stays up."""
    tag = uuid.uuid4().hex[:8]
    scenarios = all_scenarios(START_MS, prefix=f"failing-{tag}")
    victim = next(s for s in scenarios if s.expected)
    expected = _expected([s for s in scenarios if s is not victim])
    topics = unique_topics("failing")
    app_id = f"failing-{tag}"
    run(_plant_corrupt_state(dev_stack.bootstrap_servers, app_id, [victim.customer_id]))
    config = write_config(tmp_path / "config.yaml", topics, POLICY)
    worker = WorkerProcess(
        dev_stack, config, app_id, tmp_path / "state", partitions=PARTITIONS
    ).start()
    try:
        worker.wait_ready()
        run(_produce(dev_stack.bootstrap_servers, topics, [], _records(scenarios, tag)))
        published = published_decisions(
            dev_stack.bootstrap_servers,
            topics.contact_decisions,
            until=sum(expected.values()),
            timeout=90,
            settle=3,
        )
        dead = run(
            consume(
                dev_stack.bootstrap_servers,
                topics.dead_letters,
                until=len(victim.events),
                settle=1,
            )
        )
        assert worker.proc is not None and worker.proc.poll() is None, "the worker stopped"
        counted = sum(
            worker.metric("lifecycle_dead_letters_total", topic=t, reason="processing_error")
            for t in topics.inputs
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log_text()[-3000:]
    got = collections.Counter((d["customer_id"], d["trigger"]) for d in published)
    assert got == expected, f"missing {dict(expected - got)}, unexpected {dict(got - expected)}"
    letters = [orjson.loads(r.value) for r in dead]
    assert len(letters) == len(victim.events) == counted
    by_id = {orjson.loads(letter["value"])["event_id"]: letter for letter in letters}
    assert set(by_id) == {e["event_id"] for e in victim.events}
    for letter in letters:
        assert letter["error_code"] == "processing_error"
        assert "customer record starts with" in letter["error"], letter["error"]
        assert letter["key"] == victim.customer_id
    assert "processing failed" in worker.log_text()


def test_many_records_failing_processing_stop_the_worker(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """Given customers whose stored records cannot be read, when only their events arrive,
    then the worker dead-letters no more than half of the last 100 records (the default
    stream.processing_error_max_share and window) and stops with an ERROR naming the share,
    instead of dead-lettering the whole stream."""
    tag = uuid.uuid4().hex[:8]
    customers = [f"broken-{tag}-{i}" for i in range(8)]
    topics = unique_topics("broken")
    app_id = f"broken-{tag}"
    run(_plant_corrupt_state(dev_stack.bootstrap_servers, app_id, customers))
    config = write_config(tmp_path / "config.yaml", topics, POLICY)
    worker = WorkerProcess(
        dev_stack, config, app_id, tmp_path / "state", partitions=PARTITIONS
    ).start()
    records = [
        (
            "usage",
            None,
            customer,
            orjson.dumps(
                {
                    "event_id": f"{customer}-{n}",
                    "customer_id": customer,
                    "type": "profile",
                    "occurred_at": format_ms(START_MS + n * 60_000),
                }
            ),
        )
        for n in range(15)
        for customer in customers
    ]
    try:
        worker.wait_ready()
        run(_produce(dev_stack.bootstrap_servers, topics, [], records))
        assert worker.proc is not None
        code = worker.proc.wait(timeout=60)
    finally:
        worker.stop()
    assert code != 0
    log = worker.log_text()
    assert "51 of the last 100 records failed processing" in log, log[-3000:]
    assert "stream.processing_error_max_share 0.5" in log
    dead = run(consume(dev_stack.bootstrap_servers, topics.dead_letters, until=51, timeout=5))
    assert len(dead) <= 50
