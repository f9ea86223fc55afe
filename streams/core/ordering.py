"""Event-time ordering across the co-partitioned input topics.

Faust reads ``account-events`` and ``usage-events`` independently, so during a backfill or a
replay one topic can run days of event time ahead of the other; stream time would then jump and
the other topic's events would arrive beyond the allowed lateness. Like Kafka Streams, we merge a
partition's input topics by event time: a record is released once every input topic of its
partition has a record buffered to compare with, or the empty topic is known to be caught up
(its fetch high watermark says nothing more is there), or it has waited long enough.

Pure: the caller says, per topic, whether more records are known to be pending.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
LANE = "\0"  # between a topic and its lane in a queue's name

# The answer to "does this topic's partition have records we have not received yet, that were
# there by ``since_ms`` (when the record waiting on it arrived)?": True (the high watermark
# says so), False (caught up, by news from no earlier than ``since_ms``), None (not known yet).
Pending = Callable[[str, int], bool | None]


@dataclass(slots=True)
class _Held(Generic[T]):
    event_time_ms: int
    arrived_ms: int
    seq: int
    item: T


@dataclass(slots=True)
class _Partition(Generic[T]):
    queues: dict[str, deque[_Held[T]]] = field(default_factory=dict)


class EventTimeMerger(Generic[T]):
    """Holds records per (partition, topic) and releases them in event-time order.

    ``wait_unknown_ms``: how long a record may wait for a topic whose backlog is unknown. A
    topic known to have records pending is waited for as long as the caller says so (the
    caller decides when a backlog that delivers nothing is no backlog, e.g. transaction
    markers). ``max_held``: per partition; beyond it the earliest record is released
    regardless, so memory stays bounded.
    """

    def __init__(
        self,
        topics: Sequence[str],
        wait_unknown_ms: int = 1_000,
        max_held: int = 10_000,
    ) -> None:
        self._topics = tuple(topics)
        self._wait_unknown_ms = wait_unknown_ms
        self._max_held = max_held
        self._partitions: dict[int, _Partition[T]] = {}
        self._seq = 0
        self._laned: set[str] = set()  # topics split into lanes (``add``)
        self.forced = 0  # records released before their turn because max_held was reached

    def add(
        self,
        partition: int,
        topic: str,
        event_time_ms: int,
        arrived_ms: int,
        item: T,
        lane: str | None = None,
    ) -> None:
        """Hold ``item``. A ``lane`` splits a topic into queues of their own: the repartition
        topic carries records of several source partitions, each in its own order, and one
        FIFO queue would release one source's late records after another's early ones."""
        # (get, then make: ``setdefault`` would build a default for every record)
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition()
        if lane is not None:
            self._laned.add(topic)
            topic = f"{topic}{LANE}{lane}"
        queue = part.queues.get(topic)
        if queue is None:
            queue = part.queues[topic] = deque()
        self._seq += 1
        queue.append(_Held(event_time_ms, arrived_ms, self._seq, item))

    def first_arrival(self, partition: int) -> int | None:
        """When the earliest-arrived record held of ``partition`` arrived (None: none held)."""
        part = self._partitions.get(partition)
        if part is None:
            return None
        heads = [q[0].arrived_ms for q in part.queues.values() if q]
        return min(heads) if heads else None

    def crowded(self, limit: int) -> list[tuple[int, str]]:
        """The (partition, topic) pairs holding ``limit`` or more records: topics that ran
        ahead of another topic of their partition in event time. The caller stops taking more
        of them until the other catches up (back-pressure), so the bound (``max_held``) is not
        what keeps memory in check and the order holds."""
        return [
            (partition, topic.split(LANE, 1)[0])
            for partition, part in self._partitions.items()
            for topic, queue in part.queues.items()
            if len(queue) >= limit
        ]

    def release(
        self, partition: int, now_ms: int, pending: Pending, until_ms: int | None = None
    ) -> list[T]:
        """The records of ``partition`` that may be processed now, in processing order.

        Within a topic, records keep their offset order; across topics, the earliest event
        time goes first (ties: the record that arrived first). With ``until_ms``, no record
        with a later event time goes (the caller aligns partitions:
        ``streams/kafka/copartition.py``).
        """
        part = self._partitions.get(partition)
        if part is None:
            return []
        out: list[T] = []
        queues = part.queues
        total = sum(len(q) for q in queues.values())
        max_held = self._max_held
        while total:
            # The head with the earliest (event time, seq): a plain loop over the few queues.
            head: _Held[T] | None = None
            queue: deque[_Held[T]] | None = None
            for q in queues.values():
                if q:
                    h = q[0]
                    if (
                        head is None
                        or h.event_time_ms < head.event_time_ms
                        or (h.event_time_ms == head.event_time_ms and h.seq < head.seq)
                    ):
                        head, queue = h, q
            assert head is not None and queue is not None  # noqa: S101 - total > 0
            if total <= max_held:
                if until_ms is not None and head.event_time_ms > until_ms:
                    break
                if not self._may_go(part, head, now_ms, pending):
                    break
            else:
                self.forced += 1
            queue.popleft()
            out.append(head.item)
            total -= 1
        return out

    def _may_go(self, part: _Partition[T], head: _Held[T], now_ms: int, pending: Pending) -> bool:
        waited = now_ms - head.arrived_ms
        for topic in self._topics:
            if part.queues.get(topic):
                continue  # a record to compare with: min() already chose between them
            if topic in self._laned:
                prefix = topic + LANE
                if any(q and name.startswith(prefix) for name, q in part.queues.items()):
                    continue
            more = pending(topic, head.arrived_ms)
            if more is None and waited < self._wait_unknown_ms:
                return False
            if more:
                return False
        return True

    def drop(self, partition: int) -> list[T]:
        """Forget a revoked partition's held records (the new owner reads them again)."""
        part = self._partitions.pop(partition, None)
        if part is None:
            return []
        return [h.item for q in part.queues.values() for h in q]

    def partitions(self) -> list[int]:
        return sorted(p for p, part in self._partitions.items() if any(part.queues.values()))
