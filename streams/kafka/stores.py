"""A Faust table's store, read and written with the partition named.

Faust's RocksDB store keeps a database per table partition and learns which one to use from
the current stream event (``faust.streams.current_event``): the batch path has no Faust events,
so it names the partition instead. Faust's memory store is one dict for every partition and
ignores it, as Faust does.

The RocksDB calls are those of Faust's ``rocksdb.Store._set`` and ``_get`` with the event's
partition replaced by the one given (tests/unit/test_faust_privates.py checks that they still
behave so).
"""

from __future__ import annotations

from typing import Any, cast

import rocksdict
from faust.stores.memory import Store as _MemoryStore

try:  # the RocksDB driver imports without rocksdict, but cannot open a database then
    from faust.stores.rocksdb import Store as _RocksDBStore
except ImportError:  # pragma: no cover - faust always ships the module
    _RocksDBStore = None  # type: ignore[assignment,misc]


def is_partitioned(store: Any) -> bool:
    """Whether ``store`` keeps a database per partition (Faust's RocksDB store)."""
    return _RocksDBStore is not None and isinstance(store, _RocksDBStore)


class TableStore:
    """Reads and writes of one Faust table's store (``table.data``) with explicit partitions.

    RocksDB's write-ahead log stays on (unlike Kafka Streams' stores): a partition's customer
    records, due entries and stream time live in three databases, which after a crash must come
    back in step (the changelogs are sent in that order: ``fastpath.send_in_order``). Without
    the log each database would revert to its own last memtable flush, and a stream time could
    come back ahead of the records it was written with (measured: 3 µs an event less with it
    off, and that reproduction).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        table = getattr(store, "table", None)
        # Faust reads a global or partitioner-keyed table's keys from any partition.
        self.partitioned = (
            is_partitioned(store)
            and not getattr(table, "is_global", False)
            and not getattr(table, "use_partitioner", False)
        )
        # bytes keys and values with Faust's "raw" codec (the worker's tables: kafka/app.py):
        # its key and value encoding is the identity (test_faust_privates checks), and it costs
        # about 2 µs an event through Faust's serializer registry, so it is skipped.
        self.raw = (
            getattr(store, "key_type", None) is bytes
            and getattr(store, "value_type", None) is bytes
            and getattr(store, "key_serializer", None) == "raw"
            and getattr(store, "value_serializer", None) == "raw"
        )
        # Faust's memory store is a dict behind FastUserDict's Python-level get and set (a
        # key it lacks costs a KeyError raised and caught): the dict itself, read and written
        # as those methods do (test_faust_privates: test_memory_store_is_one_for_all_partitions).
        data = getattr(store, "data", None)
        self._dict: dict[Any, Any] | None = (
            data if isinstance(store, _MemoryStore) and type(data) is dict else None
        )

    def get(self, key: bytes, partition: int | None = None) -> bytes | None:
        """The value of ``key`` in ``partition``'s database; None: in whichever holds it (as
        Faust reads outside a stream event)."""
        store = self.store
        if partition is None or not self.partitioned:
            if self._dict is not None:
                return cast(bytes | None, self._dict.get(key))
            return cast(bytes | None, store.get(key))
        # rocksdb.Store._get with an event (test_faust_privates: test_rocksdb_get_in_partition),
        # without its key index: every read and write here names its partition, and the index
        # (an LRU cache under a lock, a microsecond a key) only spares a read or delete
        # *without* a partition a search of every database, which stays correct without it.
        db = store._db_for_partition(partition)
        if self.raw:
            return cast(bytes | None, db.get(key))
        value = db.get(store._encode_key(key))
        if value is None:
            return None
        return cast(bytes | None, store._decode_value(value))

    def set(self, partition: int, key: bytes, value: bytes) -> None:
        """Write ``key`` to ``partition``'s database."""
        store = self.store
        if not self.partitioned:
            if self._dict is not None:
                self._dict[key] = value
            else:
                store[key] = value
            return
        # rocksdb.Store._set with an event (test_faust_privates: test_rocksdb_set_in_partition),
        # without the key index (see ``get``).
        db = store._db_for_partition(partition)
        if self.raw:
            db.put(key, value)
        else:
            db.put(store._encode_key(key), store._encode_value(value))

    def write_many(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
        """``set`` (a value) or ``delete`` (None) each of ``items`` in ``partition``, in order:
        for RocksDB as one write batch (one write-ahead log append instead of one per key,
        about 1 µs a key; and atomic)."""
        store = self.store
        if not self.partitioned:
            for key, value in items:
                if value is None:
                    self.delete(key, partition)
                else:
                    self.set(partition, key, value)
            return
        batch = rocksdict.WriteBatch(raw_mode=True)  # Faust opens its databases raw
        raw = self.raw
        for key, value in items:
            raw_key = key if raw else store._encode_key(key)
            if value is None:
                batch.delete(raw_key)
                store._key_index.pop(raw_key, None)  # as ``delete``
            else:
                batch.put(raw_key, value if raw else store._encode_value(value))
        store._db_for_partition(partition).write(batch)

    def delete(self, key: bytes, partition: int | None = None) -> None:
        """Delete ``key`` from ``partition``'s database (None: as Faust deletes, from the
        database its key index names, else from every one)."""
        store = self.store
        if partition is None or not self.partitioned:
            del store[key]
            return
        raw_key = store._encode_key(key)
        store._db_for_partition(partition).delete(raw_key)
        store._key_index.pop(raw_key, None)  # a read without a partition may have set it
