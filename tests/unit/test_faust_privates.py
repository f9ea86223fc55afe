"""Every private name of faust, mode and aiokafka the shell (``streams/kafka/``) relies on, with
the behaviour it relies on: a Faust or aiokafka upgrade that changes one fails here, not in
production. Each use in ``streams/`` names its test in a comment.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event

from streams.kafka.fastpath import BatchedChangelog
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
    """``TableStore.set`` leaves the store as Faust's own write inside an event of that
    partition does: the value in that partition's database, the key indexed to it."""
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
    assert dict(ours._key_index) == dict(faust_way._key_index) == {b"a": 3, b"b": 3, b"c": 2}


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
    # A read in a partition indexes the key there, as Faust's does.
    assert data._key_index[b"k"] == 1
    # Faust deletes from the database the key is indexed to (the last one it was read in).
    store.delete(b"k")
    assert store.get(b"k", 1) is None
    assert store.get(b"k", 2) == b"two"


def test_memory_store_is_one_for_all_partitions() -> None:
    app = faust.App("privates-memory", broker="kafka://localhost:1", autodiscover=False)
    table = app.Table("t", default=None, partitions=4, key_type=bytes, value_type=bytes)
    store = TableStore(table.data)
    assert not store.partitioned
    store.set(1, b"k", b"v")
    assert store.get(b"k", 3) == b"v"
    assert table.data[b"k"] == b"v"


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
