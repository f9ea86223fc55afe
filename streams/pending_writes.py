"""Table writes held back until the batch they belong to is settled (a record cache).

Like Kafka Streams' record cache: within a batch of input events only the last value per key
reaches the table (and so its changelog), and nothing reaches it before the caller says so. The
processor writes a batch's state only once the decisions of that batch are acknowledged
(decisions before state), and the agent acks the batch's input only after the write, so an
offset commit never overtakes an unwritten state change.

Pure: knows only the ``Store`` protocol of ``streams/processor.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class _Store(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...


class PendingWrites:
    """A store's unwritten changes by key (``None``: a delete), each with its partition.

    Reads see the pending value first, then the store.
    """

    def __init__(self, store: _Store) -> None:
        self.store = store
        self._pending: dict[int, dict[bytes, bytes | None]] = {}
        self._partition_of: dict[bytes, int] = {}

    def get(self, key: bytes) -> bytes | None:
        partition = self._partition_of.get(key)
        if partition is not None:
            return self._pending[partition][key]
        return self.store.get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Hold ``value`` (None deletes) for ``key``; the last one before a flush wins."""
        before = self._partition_of.get(key)
        if before is not None and before != partition:
            # A key moves partition only if the caller's partitioning changed; keep one entry.
            del self._pending[before][key]
        self._partition_of[key] = partition
        self._pending.setdefault(partition, {})[key] = value

    def __len__(self) -> int:
        return len(self._partition_of)

    def partitions(self) -> set[int]:
        """The partitions with pending changes."""
        return {p for p, entries in self._pending.items() if entries}

    def flush(self, partition: int) -> int:
        """Write ``partition``'s pending changes to the store; returns how many."""
        entries = self._pending.pop(partition, None)
        if not entries:
            return 0
        store = self.store
        for key, value in entries.items():
            del self._partition_of[key]
            if value is not None:
                store[key] = value
            elif store.get(key) is not None:
                del store[key]
        return len(entries)

    def discard(self, partitions: Iterable[int]) -> int:
        """Forget the pending changes of ``partitions`` (revoked: their input is read again)."""
        dropped = 0
        for partition in partitions:
            entries = self._pending.pop(partition, None) or {}
            for key in entries:
                del self._partition_of[key]
            dropped += len(entries)
        return dropped
