"""The due-time index: which customers have something time-based due, and when.

One entry per customer with a due item (the earliest time at which the core's ``advance``
could fire something for it), grouped by partition. Popping what is due costs
O(log n) per due item; nothing here ever looks at customers without a due item. The durable
copy lives in a changelog-backed table (see ``streams/kafka/processor.py``); this in-memory heap is
rebuilt from that table's entries for the partitions a worker owns.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class DueIndex:
    """Per-partition min-heaps of (due time, customer key) with lazy deletion."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}
        self._due: dict[int, dict[bytes, int]] = {}

    def set(self, partition: int, customer: bytes, due_ms: int | None) -> None:
        """Make ``due_ms`` the customer's due time (None removes the entry)."""
        entries = self._due.get(partition)
        if entries is None:
            entries = self._due[partition] = {}
        if due_ms is None:
            entries.pop(customer, None)
            return
        if entries.get(customer) == due_ms:
            return
        entries[customer] = due_ms
        heap = self._heaps.get(partition)
        if heap is None:
            heap = self._heaps[partition] = []
        heapq.heappush(heap, (due_ms, customer))
        if len(heap) > 2 * len(entries) + 64:
            # Superseded entries are skipped when popped, but one due far ahead is never
            # popped: rebuild so the heap stays proportional to the live entries.
            self.rebuild(partition, list(entries.items()))

    def get(self, partition: int, customer: bytes) -> int | None:
        return self._due.get(partition, {}).get(customer)

    def pop_due_items(self, partition: int, now_ms: int) -> list[tuple[bytes, int]]:
        """Remove and return (customer, due time) of those due at or before ``now_ms``."""
        heap = self._heaps.get(partition)
        if not heap or heap[0][0] > now_ms:
            return []
        entries = self._due[partition]
        due: list[tuple[bytes, int]] = []
        while heap and heap[0][0] <= now_ms:
            due_ms, customer = heapq.heappop(heap)
            if entries.get(customer) == due_ms:  # else a stale heap entry: skip it
                del entries[customer]
                due.append((customer, due_ms))
        return due

    def next_due(self, partition: int) -> int | None:
        heap = self._heaps.get(partition)
        entries = self._due.get(partition, {})
        while heap and entries.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def rebuild(self, partition: int, entries: Iterable[tuple[bytes, int]]) -> None:
        """Replace a partition's entries (after recovery), e.g. from the durable table."""
        table = dict(entries)
        self._due[partition] = table
        heap = [(due, customer) for customer, due in table.items()]
        heapq.heapify(heap)
        self._heaps[partition] = heap

    def drop(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._due.pop(partition, None)

    def size(self, partition: int) -> int:
        return len(self._due.get(partition, {}))

    def heap_size(self, partition: int) -> int:
        """Entries in the partition's heap, superseded ones included (for tests)."""
        return len(self._heaps.get(partition, []))

    def partitions(self) -> list[int]:
        return sorted(self._due)
