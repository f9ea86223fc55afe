"""Table writes held back until the batch they belong to is settled (a record cache).

Like Kafka Streams' record cache: within a batch of input events only the last value per key
reaches the table (and so its changelog), and nothing reaches it before the caller says so. The
processor writes a batch's state only once the decisions of that batch are acknowledged
(decisions before state), and the agent acks the batch's input only after the write, so an
offset commit never overtakes an unwritten state change.

Batches overlap: while one batch waits for its acknowledgements, the next one is applied. So the
cache holds layers: the open one that new writes go to, and sealed ones (``seal``), each
written by its own batch (``write``) and then let go (``release``). Reads see the open layer,
then the sealed ones from the newest, then the store; a sealed layer writes only its own
values, never a later batch's.

Pure: knows only the ``Store`` protocol of ``streams/kafka/processor.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol


class _Store(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...


class Layer:
    """One batch's unwritten changes: per partition, the last value per key (None deletes)."""

    __slots__ = ("by_partition", "partition_of")

    def __init__(self) -> None:
        self.by_partition: dict[int, dict[bytes, bytes | None]] = {}
        self.partition_of: dict[bytes, int] = {}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.by_partition.values())

    def partitions(self) -> set[int]:
        return {p for p, entries in self.by_partition.items() if entries}

    def discard(self, partitions: Iterable[int]) -> int:
        dropped = 0
        for partition in partitions:
            entries = self.by_partition.pop(partition, None) or {}
            for key in entries:
                if self.partition_of.get(key) == partition:
                    del self.partition_of[key]
            dropped += len(entries)
        return dropped


class PendingWrites:
    """A store's unwritten changes by key (``None``: a delete), each with its partition.

    Reads see the pending value first (the open layer, then sealed layers from the newest),
    then the store. ``at(partition)``, when given, is the store as one partition reads and
    writes it (a Faust table keeps a store per partition); without it the store is one for all.
    """

    def __init__(self, store: _Store, at: Callable[[int], _Store] | None = None) -> None:
        self.store = store
        self._at = at
        self._open = Layer()
        self._sealed: list[Layer] = []

    def get(self, key: bytes, partition: int | None = None) -> bytes | None:
        """The pending value of ``key`` (of ``partition``'s writes, when given: a key written
        on two partitions, as misrouted input applied where it is, has a value on each), else
        the store's."""
        if partition is None:
            for layer in (self._open, *reversed(self._sealed)):
                found = layer.partition_of.get(key)
                if found is not None:
                    return layer.by_partition[found][key]
            return self.store.get(key)
        # Once per event: the open layer, then the sealed ones, without building a tuple.
        entries = self._open.by_partition.get(partition)
        if entries is not None and key in entries:
            return entries[key]
        for layer in reversed(self._sealed):
            entries = layer.by_partition.get(partition)
            if entries is not None and key in entries:
                return entries[key]
        if self._at is None:
            return self.store.get(key)
        return self._at(partition).get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Hold ``value`` (None deletes) for ``key``; the last one before a flush wins."""
        layer = self._open
        layer.partition_of[key] = partition
        entries = layer.by_partition.get(partition)
        if entries is None:
            entries = layer.by_partition[partition] = {}
        entries[key] = value

    def __len__(self) -> int:
        return len(self._open) + sum(len(layer) for layer in self._sealed)

    def partitions(self) -> set[int]:
        """The partitions with pending changes, open or sealed."""
        found = self._open.partitions()
        for layer in self._sealed:
            found |= layer.partitions()
        return found

    def seal(self) -> Layer:
        """Close the open layer (a batch's writes so far) and open a new one for the next."""
        layer, self._open = self._open, Layer()
        self._sealed.append(layer)
        return layer

    def write(self, layer: Layer, partition: int) -> int:
        """Write ``layer``'s changes of ``partition`` to the store; returns how many.

        A store with ``write_many(items)`` (a list of (key, value or None to delete)) takes
        them in one call (the worker's tables: one RocksDB write batch, one write-ahead log
        append, instead of one per key); a delete of a key the store lacks is left out either
        way."""
        entries = layer.by_partition.pop(partition, None)
        if not entries:
            return 0
        store = self.store if self._at is None else self._at(partition)
        partition_of = layer.partition_of
        items: list[tuple[bytes, bytes | None]] = []
        for key, value in entries.items():
            if partition_of.get(key) == partition:
                del partition_of[key]
            if value is not None or store.get(key) is not None:
                items.append((key, value))
        many = getattr(store, "write_many", None)
        if many is not None:
            if items:
                many(items)
        else:
            for key, value in items:
                if value is None:
                    del store[key]
                else:
                    store[key] = value
        return len(entries)

    def release(self, layer: Layer) -> None:
        """Let go of a sealed layer; what it still holds is dropped."""
        self._sealed = [held for held in self._sealed if held is not layer]

    def discard(self, partitions: Iterable[int]) -> int:
        """Forget the pending changes of ``partitions``, open and sealed (revoked: their input
        is read again)."""
        partitions = list(partitions)
        dropped = self._open.discard(partitions)
        for layer in self._sealed:
            dropped += layer.discard(partitions)
        return dropped
