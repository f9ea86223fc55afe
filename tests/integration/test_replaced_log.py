"""A worker whose state outlives its log: a fresh broker, recreated topics, a changelog behind.

Given a worker that applied a customer's history and kept its state (a RocksDB state directory,
or changelogs on the broker), when the input log it meets is not the one that state was built
from, then its new events are applied and decided (the customer state is kept, the partition's
applied-offset marks are reset) and the reset is counted and logged at ERROR; before, every new
event at or below an old applied offset was taken for a replay and skipped without a word. A
local store ahead of its changelog is written back to an empty changelog, or dropped and
restored from one that is merely behind, instead of stopping the worker in recovery. A state
directory deleted outright comes back whole from the changelogs (in bulk:
``streams/kafka/bulk_restore.py``), byte for byte, and the worker decides on it as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import rocksdict
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.config import load_config
from streams.core.adapter import build_core
from streams.core.log_identity import RESET_GAP
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack, TansuBroker
from tests.support import WorkerProcess, consume, read_changelog, run, unique_topics, write_config

PARTITIONS = 4
FILLER = 40  # events of the customer in the first life: its applied offsets reach about this


def _event(customer: str, event_id: str, type_: str, day: int, **fields: Any) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "customer_id": customer,
            "type": type_,
            "occurred_at": f"2026-01-{day:02d}T09:00:00Z",
            **fields,
        }
    )


def _charge(customer: str, event_id: str, day: int) -> bytes:
    return _event(
        customer,
        event_id,
        "auto_renew_charged",
        day,
        contract_id="pass-1",
        amount=99.0,
        expires_at="2027-01-01T00:00:00Z",
    )


def _first_life(customer: str) -> list[tuple[str, bytes]]:
    """(kind, value): many events on both topics, then a charge that is confirmed."""
    records: list[tuple[str, bytes]] = []
    for i in range(FILLER):
        records.append(
            (
                "usage",
                _event(customer, f"{customer}-v{i}", "visit", 2, venue="v", sentiment="neutral"),
            )
        )
        records.append(
            (
                "account",
                _event(
                    customer,
                    f"{customer}-b{i}",
                    "balance",
                    2,
                    account_id="chk-1",
                    account_type="checking",
                    balance=100.0 + i,
                ),
            )
        )
    records.append(("account", _charge(customer, f"{customer}-charge-1", 3)))
    return records


def _second_life(customer: str) -> list[tuple[str, bytes]]:
    return [
        (
            "usage",
            _event(customer, f"{customer}-v-new", "visit", 10, venue="v", sentiment="neutral"),
        ),
        ("account", _charge(customer, f"{customer}-charge-2", 10)),
    ]


async def _produce(bootstrap: str, topics: TopicNames, customer: str, records: list[Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for kind, value in records:
            topic = topics.account_events if kind == "account" else topics.usage_events
            await producer.send_and_wait(topic, value, key=customer.encode())
    finally:
        await producer.stop()


def _confirmations(bootstrap: str, topics: TopicNames, until: int) -> set[str]:
    records = run(consume(bootstrap, topics.contact_decisions, until=until, timeout=90, settle=1))
    return {
        orjson.loads(r.value)["evidence"][0]
        for r in records
        if orjson.loads(r.value)["trigger"] == "auto_renew_confirmation"
    }


def _worker(
    stack: DevStack, tmp: Path, topics: TopicNames, app_id: str, store: str, bootstrap: str
) -> WorkerProcess:
    config = write_config(tmp / f"{app_id}.yaml", topics, {"policy": {"holdout_rate": 0}})
    return WorkerProcess(
        stack,
        config,
        app_id,
        tmp / "state",
        store=store,
        partitions=PARTITIONS,
        extra_env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap},
    ).start()


def _first_life_done(
    stack: DevStack, tmp: Path, topics: TopicNames, app_id: str, customer: str, store: str
) -> None:
    """Apply the customer's first life on the session's broker, and stop cleanly."""
    bootstrap = stack.bootstrap_servers
    worker = _worker(stack, tmp, topics, app_id, store, bootstrap)
    try:
        worker.wait_ready(90)
        records = _first_life(customer)
        # In two waves, so that the customer's record is written at least twice (the changelog
        # test keeps only the first of those writes).
        half = len(records) // 2
        deadline = time.monotonic() + 60
        for wave in (records[:half], records[half:]):
            run(_produce(bootstrap, topics, customer, wave))
            done = records.index(wave[-1]) + 1
            # Every record applied and its state written before the next wave and the stop.
            while worker.metric("lifecycle_input_records_done_total") < done:
                assert time.monotonic() < deadline, worker.log_text()[-3000:]
                time.sleep(0.2)
        assert _confirmations(bootstrap, topics, 1) == {f"{customer}-charge-1"}
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]


def _lived_once(stack: DevStack, tmp: Path, prefix: str, store: str) -> tuple[TopicNames, str, str]:
    """Topics, app id and customer of a first life applied and stopped (``_first_life_done``)."""
    tag = uuid.uuid4().hex[:8]
    topics, app_id, customer = unique_topics(prefix), f"{prefix}-{tag}", f"c-{prefix}-{tag}"
    _first_life_done(stack, tmp, topics, app_id, customer, store)
    return topics, app_id, customer


@contextlib.contextmanager
def _fresh_broker(tmp: Path) -> Iterator[TansuBroker]:
    """A second, empty broker: the log the kept state meets."""
    (tmp / "fresh-broker").mkdir()
    fresh = TansuBroker(tmp / "fresh-broker")
    fresh.start()
    try:
        yield fresh
    finally:
        fresh.stop()


def _resets(worker: WorkerProcess, topic: str, kind: str) -> float:
    return sum(
        worker.metric("lifecycle_log_resets_total", topic=topic, partition=str(p), kind=kind)
        for p in range(PARTITIONS)
    )


def _second_life_decided(
    stack: DevStack, worker: WorkerProcess, topics: TopicNames, bootstrap: str, customer: str
) -> None:
    worker.wait_ready(120)
    run(_produce(bootstrap, topics, customer, _second_life(customer)))
    # The new charge is confirmed: it was applied, not skipped as a replay of the old log.
    found = _confirmations(bootstrap, topics, 1 if bootstrap != stack.bootstrap_servers else 2)
    assert f"{customer}-charge-2" in found, worker.log_text()[-4000:]
    # (A reset reads the new logs from their start: what the first batch had applied comes
    # again and is skipped as a replay, so replays are not a sign of skipped new events here.)


def test_a_kept_state_directory_against_a_fresh_broker_applies_the_new_events(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    topics, app_id, customer = _lived_once(dev_stack, tmp_path, "fresh", "rocksdb")

    with _fresh_broker(tmp_path) as fresh:
        worker = _worker(dev_stack, tmp_path, topics, app_id, "rocksdb", fresh.bootstrap_servers)
        try:
            _second_life_decided(dev_stack, worker, topics, fresh.bootstrap_servers, customer)
            # Both input topics of the customer's partition were reset, for their offsets.
            # (A seek before the reset's marks are written checks again: counted twice, with
            # the same outcome.)
            assert _resets(worker, topics.account_events, "offsets") >= 1
            assert _resets(worker, topics.usage_events, "offsets") >= 1
            # The local tables were ahead of the empty changelogs: written back, not dropped.
            assert _resets(worker, f"{app_id}-customers-changelog", "changelog_emptied") == 1, (
                worker.log_text()[-3000:]
            )
            log = worker.log_text()
            assert "ERROR" in log and "replaced input log" in log
        finally:
            worker.stop()
        # The customer's record is on the new broker's changelog, with its whole history.
        table = run(read_changelog(fresh.bootstrap_servers, f"{app_id}-customers-changelog"))
        state = build_core(load_config(None)).load(table[customer.encode()])
        # The new log's events were applied, counted from the reset's base.
        assert state.applied_offsets["account"] > RESET_GAP
        assert state.applied_offsets["usage"] > RESET_GAP


TABLES = ("customers", "due-index", "stream-time")
OFFSET_KEY = b"__faust\0offset__"  # faust.stores.rocksdb.Store.offset_key


def _local_tables(state_dir: Path) -> dict[str, dict[bytes, bytes]]:
    """Every RocksDB table partition under ``state_dir`` (the worker stopped): per table, its
    records over all partitions, and per partition the changelog offset it holds."""
    tables: dict[str, dict[bytes, bytes]] = {}
    for path in sorted(state_dir.rglob("*.db")):
        table, _, partition = path.name.removesuffix(".db").rpartition("-")
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            for key, value in db.items():
                if key == OFFSET_KEY:
                    tables.setdefault(f"{table} offsets", {})[partition.encode()] = value
                else:
                    tables.setdefault(table, {})[key] = value
        finally:
            db.close()
    return tables


async def _append(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    await _append_to(bootstrap, topic, 0, records)


async def _append_to(
    bootstrap: str, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_a_deleted_state_directory_is_restored_whole_from_the_changelogs(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """The cold start restores each assigned partition in bulk (streams/kafka/bulk_restore.py)
    to exactly what the worker held before its state directory was deleted, and decides on it
    as before: the new charge is confirmed once, nothing of the first life again."""
    topics, app_id, customer = _lived_once(dev_stack, tmp_path, "cold", "rocksdb")
    bootstrap = dev_stack.bootstrap_servers
    state_dir = tmp_path / "state"
    before = _local_tables(state_dir)
    assert customer.encode() in before["customers"]
    # Beyond what the worker wrote: a key written twice and deleted, and one kept, on a
    # partition the customer need not be on, so that the restore meets a tombstone. The value
    # is a valid customer record (a copy), in case the worker reads it.
    changelog = f"{app_id}-customers-changelog"
    copy = before["customers"][customer.encode()]
    run(
        _append(
            bootstrap,
            changelog,
            [(b"gone-" + customer.encode(), copy), (b"gone-" + customer.encode(), copy)]
            + [(b"gone-" + customer.encode(), None), (b"kept-" + customer.encode(), copy)],
        )
    )
    shutil.rmtree(state_dir)

    worker = _worker(dev_stack, tmp_path, topics, app_id, "rocksdb", bootstrap)
    try:
        worker.wait_ready(120)
        log_text = worker.log_text()
        assert "bulk restore:" in log_text, log_text[-3000:]
        run(_produce(bootstrap, topics, customer, _second_life(customer)))
        confirmed = run(consume(bootstrap, topics.contact_decisions, until=2, timeout=90, settle=2))
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    confirmations = [
        orjson.loads(r.value)["evidence"][0]
        for r in confirmed
        if orjson.loads(r.value)["trigger"] == "auto_renew_confirmation"
    ]
    # Each charge confirmed exactly once: the first life was not decided again, the new
    # charge was decided on the restored state.
    assert sorted(confirmations) == [f"{customer}-charge-1", f"{customer}-charge-2"]

    after = _local_tables(state_dir)
    for name in TABLES:
        # The restored tables hold what the changelogs hold (tombstones deleted), and that is
        # what the worker held, plus the second life's writes and the key added above.
        on_log = run(read_changelog(bootstrap, f"{app_id}-{name}-changelog"))
        assert after.get(name, {}) == on_log, name
    assert b"gone-" + customer.encode() not in after["customers"]
    assert after["customers"][b"kept-" + customer.encode()] == copy
    untouched = {k: v for k, v in before["customers"].items() if k != customer.encode()}
    assert {k: after["customers"][k] for k in untouched} == untouched


def test_a_restore_in_bulk_equals_the_state_before_the_directory_was_deleted(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """Byte for byte: a cold start, stopped before any new input, holds every table record
    and every partition's changelog offset that the state directory held."""
    topics, app_id, _ = _lived_once(dev_stack, tmp_path, "bulk", "rocksdb")
    state_dir = tmp_path / "state"
    before = _local_tables(state_dir)
    shutil.rmtree(state_dir)
    worker = _worker(dev_stack, tmp_path, topics, app_id, "rocksdb", dev_stack.bootstrap_servers)
    try:
        worker.wait_ready(120)
        assert "bulk restore:" in worker.log_text()
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    after = _local_tables(state_dir)
    # The stream-time table moves with wall-clock ticks only under CLOCK=wall; this is event.
    assert after == before


async def _recreate(bootstrap: str, names: tuple[str, ...]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
        for _ in range(50):
            if not set(names) & set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def test_recreated_input_topics_are_applied_from_their_start(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    topics, app_id, customer = _lived_once(dev_stack, tmp_path, "recreated", "memory")
    bootstrap = dev_stack.bootstrap_servers
    run(_recreate(bootstrap, topics.inputs))

    worker = _worker(dev_stack, tmp_path, topics, app_id, "memory", bootstrap)
    try:
        _second_life_decided(dev_stack, worker, topics, bootstrap, customer)
        assert _resets(worker, topics.account_events, "offsets") >= 1
    finally:
        worker.stop()


async def _copy_head(source: str, target: str, topic: str, keep: int) -> int:
    """Copy the first ``keep`` records of each partition of ``topic`` to the same partition on
    another broker; returns how many were copied."""
    consumer = AIOKafkaConsumer(bootstrap_servers=source, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=target)
    await consumer.start()
    await producer.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=target)
    await admin.start()
    copied = 0
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        for p in range(PARTITIONS):
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            got: list[Any] = []
            for _ in range(20):
                batch = await consumer.getmany(tp, timeout_ms=300, max_records=keep)
                got.extend(batch.get(tp, []))
                if len(got) >= keep or (got and not batch):
                    break
            for record in got[:keep]:
                await producer.send_and_wait(topic, record.value, key=record.key, partition=p)
                copied += 1
    finally:
        await admin.close()
        await producer.stop()
        await consumer.stop()
    return copied


def test_a_changelog_behind_local_state_is_restored_from_not_a_crash(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    topics, app_id, customer = _lived_once(dev_stack, tmp_path, "behind", "rocksdb")

    with _fresh_broker(tmp_path) as fresh:
        # The customers changelog on the new broker holds only the start of what the local
        # store holds: behind it, not empty.
        changelog = f"{app_id}-customers-changelog"
        assert run(_copy_head(dev_stack.bootstrap_servers, fresh.bootstrap_servers, changelog, 1))
        worker = _worker(dev_stack, tmp_path, topics, app_id, "rocksdb", fresh.bootstrap_servers)
        try:
            _second_life_decided(dev_stack, worker, topics, fresh.bootstrap_servers, customer)
            assert _resets(worker, changelog, "changelog_behind") == 1, worker.log_text()[-3000:]
            assert "ConsistencyError" not in worker.log_text()
        finally:
            worker.stop()


def test_with_on_replaced_log_fail_a_replaced_log_stops_the_worker(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    topics, app_id, customer = _lived_once(dev_stack, tmp_path, "failing", "memory")
    bootstrap = dev_stack.bootstrap_servers
    run(_recreate(bootstrap, topics.inputs))
    config = write_config(
        tmp_path / f"{app_id}-fail.yaml",
        topics,
        {"policy": {"holdout_rate": 0}, "stream": {"on_replaced_log": "fail"}},
    )
    worker = WorkerProcess(
        dev_stack, config, app_id, tmp_path / "state", partitions=PARTITIONS
    ).start()
    try:
        assert worker.proc is not None
        code = worker.proc.wait(timeout=90)
    finally:
        worker.stop()
    assert code != 0
    log = worker.log_text()
    assert "replaced input log" in log and "stream.on_replaced_log is 'fail'" in log, log[-3000:]


def test_input_topics_recreated_while_the_worker_runs_stop_it_and_the_restart_applies_them(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics, app_id, customer = unique_topics("live-rec"), f"live-rec-{tag}", f"c-live-{tag}"
    bootstrap = dev_stack.bootstrap_servers
    worker = _worker(dev_stack, tmp_path, topics, app_id, "memory", bootstrap)
    try:
        worker.wait_ready(90)
        records = _first_life(customer)
        run(_produce(bootstrap, topics, customer, records))
        deadline = time.monotonic() + 60
        while worker.metric("lifecycle_input_records_done_total") < len(records):
            assert time.monotonic() < deadline, worker.log_text()[-3000:]
            time.sleep(0.2)
        # Deleted and created again under the running worker: no rebalance follows on this
        # broker, and the consumer would wait past the new logs' ends for ever.
        run(_recreate(bootstrap, topics.inputs))
        assert worker.proc is not None
        code = worker.proc.wait(timeout=90)
    finally:
        worker.stop()
    assert code != 0
    assert "replaced input log" in worker.log_text(), worker.log_text()[-3000:]
    # The restart (a supervisor's) checks the state against the new logs and applies them.
    again = _worker(dev_stack, tmp_path, topics, app_id, "memory", bootstrap)
    try:
        _second_life_decided(dev_stack, again, topics, bootstrap, customer)
        assert _resets(again, topics.account_events, "offsets") >= 1
    finally:
        again.stop()
