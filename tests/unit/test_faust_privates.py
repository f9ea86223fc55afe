"""Every private name of faust, mode and aiokafka the shell (``streams/kafka/``) relies on, with
the behaviour it relies on: a Faust or aiokafka upgrade that changes one fails here, not in
production. Each use in ``streams/`` names its test in a comment.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from pathlib import Path
from typing import Any

import faust
import mode
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.exceptions import NotReady
from faust.streams import _current_event
from faust.transport import consumer as faust_consumer
from faust.transport.consumer import Fetcher
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from streams.kafka import fastpath, tansu
from streams.kafka.app import _App, _TansuApp
from streams.kafka.fastpath import BatchConsumer, BatchedChangelog
from streams.kafka.stores import TableStore


class _Message:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class _Event:
    """What Faust's RocksDB store reads of the current event."""

    def __init__(self, partition: int) -> None:
        self.message = _Message("events", partition)


def _rocksdb_table(datadir: Path, name: str = "customers") -> Any:
    app = faust.App(
        f"privates-{name}",
        store="rocksdb://",
        datadir=str(datadir),
        broker="kafka://localhost:1",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table(name, default=None, partitions=4, key_type=bytes, value_type=bytes)
    app.finalize()
    return table


def _in_event(partition: int | None, work: Any) -> Any:
    event = None if partition is None else _Event(partition)
    token = _current_event.set(None if event is None else weakref.ref(event))  # type: ignore[arg-type]
    try:
        return work()
    finally:
        _current_event.reset(token)


def _contents(store: Any) -> dict[int, dict[bytes, bytes]]:
    return {p: {k: v for k, v in store._visible_items(db)} for p, db in sorted(store._dbs.items())}


# --- faust.stores.rocksdb.Store: _db_for_partition, _key_index, _encode_key/_value ------------


def test_rocksdb_set_in_partition(tmp_path: Path) -> None:
    """``TableStore.set`` leaves the databases as Faust's own write inside an event of that
    partition does: the value in that partition's database. (Faust also indexes the key to it;
    ours does not: every read and write of ours names its partition.)"""
    faust_way = _rocksdb_table(tmp_path / "faust").data
    ours = _rocksdb_table(tmp_path / "ours").data
    writes = [(2, b"a", b"1"), (3, b"b", b"2"), (2, b"c", b"3"), (3, b"a", b"4")]
    for partition, key, value in writes:

        def write(key: bytes = key, value: bytes = value) -> None:
            faust_way[key] = value

        _in_event(partition, write)
        TableStore(ours).set(partition, key, value)
    assert (
        _contents(ours)
        == _contents(faust_way)
        == {2: {b"a": b"1", b"c": b"3"}, 3: {b"b": b"2", b"a": b"4"}}
    )
    assert dict(faust_way._key_index) == {b"a": 3, b"b": 3, b"c": 2}
    assert dict(ours._key_index) == {}
    # Faust's own read outside an event finds a key without the index (in some database).
    assert ours.get(b"b") == b"2"


def test_rocksdb_get_in_partition(tmp_path: Path) -> None:
    """``TableStore.get(key, p)`` answers as Faust's read inside an event of partition ``p``
    (that partition's database only), and without a partition as Faust's read outside one."""
    data = _rocksdb_table(tmp_path).data
    store = TableStore(data)
    assert store.partitioned
    store.set(1, b"k", b"one")
    store.set(2, b"k", b"two")
    for partition in (0, 1, 2, None):
        expected = _in_event(partition, lambda: data.get(b"k"))
        assert store.get(b"k", partition) == expected
    assert store.get(b"k", 1) == b"one"
    assert store.get(b"k", 0) is None
    # A delete names its partition: the key stays in the other (a key written on two
    # partitions, as misrouted input applied where it is, has a value in each).
    store.delete(b"k", 2)
    assert store.get(b"k", 2) is None
    assert store.get(b"k", 1) == b"one"
    store.delete(b"k", 1)
    assert store.get(b"k", 1) is None
    assert data.get(b"k") is None


def test_raw_bytes_tables_encode_as_the_identity(tmp_path: Path) -> None:
    """``TableStore`` skips Faust's serializer registry for a table of bytes (the worker's
    tables, made as ``kafka/app.py`` makes them: bytes key and value types, no serializer
    named): Faust's own encoding of their keys and values is the identity."""
    app = faust.App("privates-raw", store="rocksdb://", datadir=str(tmp_path),
                    broker="kafka://localhost:1", autodiscover=False)  # fmt: skip
    table = app.Table("raw", default=None, partitions=4, key_type=bytes, value_type=bytes)
    app.finalize()
    store = table.data
    assert TableStore(store).raw
    for data in (b"", b"cust-1", b'{"a": 1}', b"\x00\xff\xfe", bytes(range(256)), b"\x02" * 300):
        assert store._encode_key(data) == data
        assert store._encode_value(data) == data
        assert store._decode_value(data) == data


def test_a_table_of_other_types_is_encoded_by_faust(tmp_path: Path) -> None:
    app = faust.App("privates-json", store="rocksdb://", datadir=str(tmp_path),
                    broker="kafka://localhost:1", autodiscover=False)  # fmt: skip
    table = app.Table("json", default=None, partitions=4, key_type=str, value_type=int)
    app.finalize()
    assert not TableStore(table.data).raw


def test_memory_store_is_one_for_all_partitions() -> None:
    app = faust.App("privates-memory", broker="kafka://localhost:1", autodiscover=False)
    table = app.Table("t", default=None, partitions=4, key_type=bytes, value_type=bytes)
    store = TableStore(table.data)
    assert not store.partitioned
    store.set(1, b"k", b"v")
    assert store.get(b"k", 3) == b"v"
    assert table.data[b"k"] == b"v"
    # Read and written through the store's dict, as Faust's own get and set are.
    assert store._dict is table.data.data
    assert store.get(b"missing", 0) is None is table.data.get(b"missing")
    table.data[b"theirs"] = b"w"
    assert store.get(b"theirs") == b"w"
    store.delete(b"k")
    assert table.data.get(b"k") is None


def test_write_many_is_set_and_delete_in_one_batch(tmp_path: Path) -> None:
    """``TableStore.write_many`` (one RocksDB write batch) leaves the databases as ``set`` and
    ``delete`` of each item in turn do."""
    one_by_one = TableStore(_rocksdb_table(tmp_path / "one").data)
    batched = TableStore(_rocksdb_table(tmp_path / "many").data)
    for store in (one_by_one, batched):
        store.set(2, b"gone", b"x")
        store.set(3, b"gone", b"y")  # the same key on another partition stays
    items: list[tuple[bytes, bytes | None]] = [
        (b"a", b"1"), (b"gone", None), (b"b", b"2"), (b"a", b"3"), (b"never", None)
    ]  # fmt: skip
    for key, value in items:
        if value is None:
            one_by_one.delete(key, 2)
        else:
            one_by_one.set(2, key, value)
    batched.write_many(2, items)
    assert (
        _contents(batched.store)
        == _contents(one_by_one.store)
        == {
            2: {b"a": b"3", b"b": b"2"},
            3: {b"gone": b"y"},
        }
    )


def test_changelog_writes_go_to_the_named_partition(tmp_path: Path) -> None:
    changelog = BatchedChangelog(_rocksdb_table(tmp_path))
    changelog.at(3)[b"k"] = b"v"
    assert changelog.get(b"k", 3) == b"v"
    assert changelog.at(3).get(b"k") == b"v"
    assert changelog.get(b"k", 1) is None
    assert changelog._writes == {3: [(b"k", b"v")]}
    del changelog.at(3)[b"k"]
    assert changelog.get(b"k", 3) is None
    assert changelog._writes == {3: [(b"k", b"v"), (b"k", None)]}
    changelog.at(3).write_many([(b"m", b"1"), (b"k", b"2"), (b"m", None)])
    assert changelog.get(b"k", 3) == b"2"
    assert changelog.get(b"m", 3) is None
    assert changelog._writes[3][2:] == [(b"m", b"1"), (b"k", b"2"), (b"m", None)]


# --- faust's aiokafka Consumer: offset bookkeeping and acks -----------------------------------


def _consumer() -> Any:
    app = _App(
        "privates-consumer",
        broker="kafka://localhost:1",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=False,
    )
    consumer = app.consumer
    assert isinstance(consumer, BatchConsumer)
    return consumer


async def _acking(consumer: Any, *topics: str) -> None:
    """Subscribe ``consumer``'s app to ``topics`` as the worker's agent does (acks enabled)."""
    consumer.app.topics.add(consumer.app.topic(*topics))
    await consumer.app.topics._update_indices()


def test_consumer_offset_bookkeeping() -> None:
    """``_read_offset``, ``_committed_offset``, ``_acked``, ``_acked_index``: per-TP defaults
    the shell reads and resets (``BatchConsumer.read_from_beginning``, ``perform_seek``,
    ``ack_offset``, ``BatchDriver.read_offset``); ``_n_acked`` and ``_commit_every`` drive the
    commit in the fetch loop."""
    consumer = _consumer()
    tp = TP("events", 0)
    assert consumer._read_offset[tp] is None
    assert consumer._committed_offset[tp] is None
    assert consumer._acked[tp] == []
    assert consumer._acked_index[tp] == set()
    assert consumer._n_acked == 0
    assert consumer._commit_every == consumer.app.conf.broker_commit_every
    # A commit takes the acked offsets up to the first gap (Consumer._new_offset).
    consumer._acked[tp].extend([0, 1, 2, 4])
    assert consumer._filter_committable_offsets({tp}) == {tp: 3}


def _message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, [], b"k", b"v", None)


@pytest.mark.asyncio
async def test_ack_offset_is_faust_ack() -> None:
    """``BatchConsumer.ack_offset(tp, offset)`` does what Faust's ``Consumer.ack(message)``
    does for a message at that offset: the same bookkeeping, so the same commits, and the
    wake-up of a ``wait_empty`` waiting for acks."""
    ours, faust_way = _consumer(), _consumer()
    tp, other = TP("events", 0), TP("events", 1)
    for consumer in (ours, faust_way):
        await _acking(consumer, "events")
        consumer._committed_offset[tp] = 2
    acks = [(tp, 5), (tp, 2), (tp, 1), (tp, 3), (tp, 3), (other, 0), (tp, 7), (other, 1)]
    for tp_, offset in acks:
        waiting = ours._waiting_for_ack = asyncio.get_running_loop().create_future()
        ours.ack_offset(tp_, offset)
        assert waiting.done()
        faust_way.ack(_message(tp_, offset))
    for name in ("_acked", "_acked_index"):
        assert dict(getattr(ours, name)) == dict(getattr(faust_way, name))
    assert ours._n_acked == faust_way._n_acked == 6
    assert ours._filter_committable_offsets({tp, other}) == {tp: 4, other: 2}
    assert faust_way._filter_committable_offsets({tp, other}) == {tp: 4, other: 2}
    # The same lock as Faust's acks take.
    assert fastpath.ack_lock is faust_consumer.ack_lock


@pytest.mark.asyncio
async def test_ack_offsets_is_faust_ack_of_each() -> None:
    """``ack_offsets(tp, offsets)`` (one call per topic-partition of a batch) leaves the same
    bookkeeping as Faust's ``ack`` of each message in turn, and wakes a waiter."""
    ours, faust_way = _consumer(), _consumer()
    tp, other = TP("events", 0), TP("events", 1)
    for consumer in (ours, faust_way):
        await _acking(consumer, "events")
        consumer._committed_offset[tp] = 2
    waiting = ours._waiting_for_ack = asyncio.get_running_loop().create_future()
    assert ours.ack_offsets(tp, [5, 2, 1, 3, 3, 7]) == 4  # 1 is below the committed offset
    assert ours.ack_offsets(other, [0, 1]) == 2
    assert waiting.done()
    for tp_, offset in [
        (tp, 5),
        (tp, 2),
        (tp, 1),
        (tp, 3),
        (tp, 3),
        (tp, 7),
        (other, 0),
        (other, 1),
    ]:
        faust_way.ack(_message(tp_, offset))
    for name in ("_acked", "_acked_index"):
        assert dict(getattr(ours, name)) == dict(getattr(faust_way, name))
    assert ours._n_acked == faust_way._n_acked == 6
    assert ours._filter_committable_offsets({tp, other}) == faust_way._filter_committable_offsets(
        {tp, other}
    )


@pytest.mark.asyncio
async def test_ack_offset_ignores_topics_without_acks() -> None:
    ours, faust_way = _consumer(), _consumer()
    tp = TP("not-subscribed", 0)
    ours.ack_offset(tp, 0)
    faust_way.ack(_message(tp, 0))
    assert ours._n_acked == faust_way._n_acked == 0
    assert not ours._acked[tp] and not faust_way._acked[tp]


# --- faust's aiokafka Consumer: what the batch loop overrides and calls ----------------------


def _params(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_consumer_methods_the_batch_loop_overrides() -> None:
    """Overridden in ``BatchConsumer``: the same names, parameters and kinds, or the override
    is silently never called."""
    base = faust_aiokafka.Consumer
    expected = {
        "_getmany": (["self", "active_partitions", "timeout"], True),
        "_drain_messages": (["self", "fetcher"], True),
        "perform_seek": (["self"], True),
        "on_partitions_revoked": (["self", "revoked"], True),
        "on_partitions_assigned": (["self", "assigned", "generation_id"], True),
    }
    for name, (params, is_async) in expected.items():
        function = getattr(base, name)
        assert _params(function) == params, name
        assert inspect.iscoroutinefunction(function) is is_async, name
    # Faust's fetcher runs _drain_messages: ours replaces it.
    assert "consumer._drain_messages(self)" in inspect.getsource(Fetcher._fetcher.fun)


def test_consumer_methods_the_batch_loop_calls() -> None:
    base = faust_aiokafka.Consumer
    expected = {
        "_wait_next_records": (["self", "timeout"], True),
        "_to_message": (["self", "tp", "record"], False),
        "_get_active_partitions": (["self"], False),
        "_add_gap": (["self", "tp", "offset_from", "offset_to"], True),
        "_new_consumer_thread": (["self"], False),
    }
    for name, (params, is_async) in expected.items():
        function = getattr(base, name)
        assert _params(function) == params, name
        assert inspect.iscoroutinefunction(function) is is_async, name
    consumer = _consumer()
    assert isinstance(consumer._buffered_partitions, set)
    assert isinstance(consumer._stopped, asyncio.Event | mode.utils.locks.Event)
    assert isinstance(consumer.suspend_flow, asyncio.Event | mode.utils.locks.Event)
    assert isinstance(consumer.consumer_stopped_errors, tuple)
    # The fetcher whose loop is replaced is a mode service with the same stop flag.
    fetcher = Fetcher(consumer.app)
    assert isinstance(fetcher._stopped, asyncio.Event | mode.utils.locks.Event)
    assert not fetcher._stopped.is_set()


def test_consumer_thread_methods() -> None:
    """``_thread`` (Faust's consumer thread): seeks, the aiokafka consumer, the Tansu overrides
    (``streams/kafka/tansu.py``)."""
    thread = faust_aiokafka.AIOKafkaConsumerThread
    expected = {
        "seek_to_beginning": (["self", "partitions"], True),
        "seek_wait": (["self", "partitions"], True),
        "_ensure_consumer": (["self"], False),
        "_create_worker_consumer": (["self", "transport"], False),
        "_create_client_consumer": (["self", "transport"], False),
        "_highwaters": (["self", "partitions"], True),
    }
    for name, (params, is_async) in expected.items():
        function = getattr(thread, name)
        assert _params(function) == params, name
        assert inspect.iscoroutinefunction(function) is is_async, name
    assert isinstance(_consumer()._thread, thread)


# --- aiokafka ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aiokafka_partition_state() -> None:
    """``BatchConsumer.partition_state``: aiokafka's per-partition fetch state, reached through
    ``_subscription.subscription.assignment``."""
    consumer = AIOKafkaConsumer(bootstrap_servers="localhost:1")
    tp = TopicPartition("events", 0)
    consumer._subscription.assign_from_user({tp})
    state = consumer._subscription.subscription.assignment.state_value(tp)
    assert state.highwater is None and not state.has_valid_position
    state.highwater = 10
    state.reset_to(4)
    assert state.has_valid_position and state.position == 4
    assert hasattr(state, "timestamp")
    assert (
        consumer._subscription.subscription.assignment.state_value(TopicPartition("events", 1))
        is None
    )


@pytest.mark.asyncio
async def test_aiokafka_fetch_settings_are_read_at_start() -> None:
    """``streams/kafka/tansu.py`` sets ``_fetch_max_wait_ms`` and ``_enable_auto_commit`` on a
    consumer not started yet: aiokafka must keep them as attributes and read them at start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers="localhost:1", fetch_max_wait_ms=123, enable_auto_commit=True
    )
    assert consumer._fetch_max_wait_ms == 123
    assert consumer._enable_auto_commit is True
    start = inspect.getsource(AIOKafkaConsumer.start)
    assert "self._fetch_max_wait_ms" in start
    assert "self._enable_auto_commit" in start


# --- faust's producer, app and worker --------------------------------------------------------


def test_producer_ensure_producer() -> None:
    """The changelog batches go straight to aiokafka's producer (``Checkpoint``)."""
    producer = _consumer().app.producer
    with pytest.raises(NotReady):
        producer._ensure_producer()
    marker = object()
    producer._producer = marker
    assert producer._ensure_producer() is marker
    assert _params(AIOKafkaProducer.create_batch) == ["self"]
    assert _params(AIOKafkaProducer.send_batch) == ["self", "batch", "topic", "partition"]


def test_app_transports() -> None:
    """``_new_transport``/``_new_producer_transport`` pick our consumers."""
    assert isinstance(_consumer(), BatchConsumer)
    app = _TansuApp("privates-tansu", broker="kafka://localhost:1", autodiscover=False)
    assert isinstance(app.consumer, tansu.Consumer)
    assert isinstance(app.producer.transport, tansu.Transport)


def test_worker_signal_handlers() -> None:
    """``_Worker`` arms its watchdog in ``_on_sigterm``/``_on_sigint``: mode must call them."""
    install = inspect.getsource(mode.Worker._install_signal_handlers_unix)
    assert "self._on_sigterm" in install and "self._on_sigint" in install
    assert _params(mode.Worker._on_sigterm) == ["self"]
    assert _params(mode.Worker._on_sigint) == ["self"]
    assert "spinner" in faust.Worker.__annotations__
