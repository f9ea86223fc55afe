"""Co-partitioning: every input record applied at the partition its customer belongs to.

The worker joins the two input topics per partition number: one customer's account and usage
events must land on the same partition of each. That holds only when every producer hashes keys
the same way, and real producers do not: Kafka's Java client and aiokafka use murmur2,
librdkafka (confluent-kafka, kcat, most non-JVM clients) defaults to CRC32. A customer whose
account events are hashed one way and usage events the other has two copies of its state, on
two partitions, each missing half of its history: triggers that join the two never fire, or
fire on half the truth, and nothing says so.

``Router`` checks each input record against the partitioner the inputs are meant to use
(``stream.partitioner``; each topic may name its own in ``stream.topic_partitioners``). A record
on another partition is *misrouted*: counted (``lifecycle_misrouted_records_total``), logged in
a summary line, and, with ``stream.repartition: misrouted`` (the default), forwarded through the
internal ``<app-id>-repartition`` topic to the partition the partitioner names, where it is
applied in event-time order with the rest of that partition's input (a third input of the
event-time merge). Records already where they belong take no extra hop. ``all`` forwards every
record (producers with partitioners of their own); ``off`` only detects.

The forwarded record keeps its key and value; headers say where it came from. The original is
acked only after the forward is handed to the producer, and Faust flushes the producer before it
commits offsets, so a crash forwards it again at worst: the copy is the same event (same
``event_id``), which the customer's record ignores as a duplicate.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from streams.ops.ratelimited_log import SummaryLog

log = logging.getLogger(__name__)

PARTITIONERS = ("murmur2", "crc32")
REPARTITION_MODES = ("misrouted", "all", "off")
# Headers of a forwarded record: the topic kind it came from, and where it was.
SOURCE_KIND = "lt-kind"
SOURCE = "lt-source"
# Keys whose partition is remembered: a customer's key recurs, and murmur2 in Python costs
# microseconds a record. Cleared when full (the cost is a recomputation, not a wrong answer).
CACHED_KEYS = 200_000


_M = 0x5BD1E995  # murmur2's mixing constant
_MASK = 0xFFFFFFFF
_WORDS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}  # unpackers by word count


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as aiokafka's
    ``murmur2`` computes it, in half its time: the key's 4-byte words are unpacked in one
    call instead of assembled byte by byte, and each step is masked once (a unit test compares
    the two on random keys)."""
    length = len(data)
    words = length >> 2
    unpack = _WORDS.get(words)
    if unpack is None:
        unpack = _WORDS[words] = struct.Struct(f"<{words}I").unpack_from
    h = 0x9747B28C ^ length
    for k in unpack(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        base = length - rest
        if rest == 3:
            h ^= data[base + 2] << 16
        if rest >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java producer (and aiokafka's default partitioner) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's ``consistent`` and ``consistent_random`` partitioners pick
    for a record with a key."""
    return zlib.crc32(key) % partitions


PARTITION_FUNCTIONS: dict[str, Callable[[bytes, int], int]] = {
    "murmur2": murmur2_partition,
    "crc32": crc32_partition,
}


class _Expected:
    """One partitioner at one partition count, with a bounded memo of keys."""

    def __init__(self, name: str, partitions: int) -> None:
        self._fn = PARTITION_FUNCTIONS[name]
        self._partitions = partitions
        self._memo: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= CACHED_KEYS:
                self._memo.clear()
            found = self._memo[key] = self._fn(key, self._partitions)
        return found


class Router:
    """Where each input record is applied (see the module docstring)."""

    def __init__(
        self,
        partitioners: Mapping[str, str],
        partitions: int,
        mode: str,
        count: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``partitioners``: per input topic name, the partitioner its producers should use;
        ``count(topic)`` is called for every misrouted record."""
        self.mode = mode
        # One memo per partitioner: a customer's key comes on both input topics.
        shared = {name: _Expected(name, partitions) for name in set(partitioners.values())}
        self._expected = {topic: shared[name] for topic, name in partitioners.items()}
        self._count = count
        self._summary = SummaryLog(
            log,
            "misrouted input records (their producers do not use the partitioner of "
            "stream.partitioner):",
            clock=clock,
        )

    @property
    def forwards(self) -> bool:
        """Whether records may go through the repartition topic (so it is an input too)."""
        return self.mode != "off"

    def target(self, topic: str, partition: int, offset: int, key: bytes | None) -> int | None:
        """The partition to forward this record to, or None to apply it here."""
        if key is None:
            return None  # dead-lettered: an input record must have a key
        expected = self._expected[topic](key)
        if expected != partition:
            self._misrouted(topic, partition, offset, expected)
            return None if self.mode == "off" else expected
        return expected if self.mode == "all" else None

    def _misrouted(self, topic: str, partition: int, offset: int, expected: int) -> None:
        self._count(topic)
        where = f"{topic}[{partition}]@{offset}"
        self._summary.note(
            topic,
            where,
            "misrouted input record %s: its key belongs to partition %d by stream.partitioner; "
            "its producer hashes keys another way; %s",
            where,
            expected,
            "forwarded to its partition through the repartition topic"
            if self.mode != "off"
            else "applied where it is (stream.repartition: off)",
        )


def forward_headers(topic: str, kind: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Headers of a record forwarded through the repartition topic: its kind (which event
    catalogue it is read with) and where it came from (for dead letters and audits)."""
    return [(SOURCE_KIND, kind.encode()), (SOURCE, f"{topic}[{partition}]@{offset}".encode())]


def source_kind(headers: Sequence[tuple[str, bytes]] | None) -> str:
    """The kind of a forwarded record (``forward_headers``); ``usage`` if none is named."""
    for name, value in headers or ():
        if name == SOURCE_KIND:
            return "account" if value == b"account" else "usage"
    return "usage"


class Alignment:
    """Keeps a worker's partitions in step in event time while records are forwarded.

    A forwarded record reaches its partition a hop later than its neighbours there, and in a
    backlog the partition it came from may be fetched long after the partition it goes to ran
    ahead: it would arrive behind that partition's stream time, after due items it should have
    prevented had fired. As Flink aligns watermarks across a shuffle, a partition's records are
    released only up to the event time every other partition of this worker has read to (where
    more is waiting on the broker), and never past a record forwarded to it that has not come
    back yet. Only while records are being forwarded (a misrouted one in the last
    ``ACTIVE_SECONDS``, or ``stream.repartition: all``); partitions of other workers are not
    known here, so their forwards can still arrive late (within the allowed lateness they take
    part in every trigger).

    ``forwarding(partition)`` also counts forwards that came to a partition (from any worker)
    in the last ``ACTIVE_SECONDS``: the event-time merge waits its order grace for the
    repartition topic only then (``BatchDriver.pending_for``).
    """

    ACTIVE_SECONDS = 600.0

    def __init__(self, always: bool, max_wait_ms: int, clock: Callable[[], float] = time.monotonic):
        self._always = always
        self._max_wait_ms = max_wait_ms
        self._clock = clock
        self._active_until = 0.0
        # Per target partition: forwarded records not back yet, by source, with event time and
        # when they were sent (wall ms).
        self._in_flight: dict[int, dict[bytes, tuple[int, int]]] = {}
        # Per (topic, partition): the event time of the last record fetched.
        self._read_to: dict[tuple[str, int], int] = {}
        self.expired = 0  # in-flight records given up on (never came back in time)
        self._since_ms = 0
        # Per partition: when a forwarded record last came to it (clock seconds). Kept across
        # revocations: the producers that misroute records do not change with an assignment.
        self._came_at: dict[int, float] = {}

    def active(self) -> bool:
        return self._always or self._clock() < self._active_until

    def forwarding(self, partition: int) -> bool:
        """Whether forwarded records may be on their way to ``partition``: this worker forwards
        (``active``), or a forwarded record came to it in the last ``ACTIVE_SECONDS``."""
        if self.active():
            return True
        came = self._came_at.get(partition)
        return came is not None and self._clock() - came < self.ACTIVE_SECONDS

    def fetched(self, topic: str, partition: int, event_time_ms: int) -> None:
        self._read_to[(topic, partition)] = event_time_ms

    def forwarded(
        self, target: int, source: bytes | None, event_time_ms: int, now_ms: int, ours: bool
    ) -> None:
        """A record from ``source`` (``source_of``) went to ``target``; waited for there if that
        partition is ``ours``."""
        self._active_until = self._clock() + self.ACTIVE_SECONDS
        if ours and source is not None:
            self._in_flight.setdefault(target, {})[source] = (event_time_ms, now_ms)

    def arrived(self, partition: int, source: bytes | None) -> None:
        self._came_at[partition] = self._clock()
        if source is not None:
            waiting = self._in_flight.get(partition)
            if waiting:
                waiting.pop(source, None)

    def limit(
        self,
        partition: int,
        owned: Collection[int],
        topics: Sequence[str],
        unread: Callable[[str, int], bool],
        now_ms: int,
    ) -> int | None:
        """The latest event time ``partition`` may release now (None: no limit)."""
        bound: int | None = None
        waiting = self._in_flight.get(partition)
        if waiting:
            for source, (event_time, sent) in list(waiting.items()):
                if now_ms - sent > self._max_wait_ms:
                    del waiting[source]  # lost with a rebalance or a crash: not waited for
                    self.expired += 1
                elif bound is None or event_time < bound:
                    bound = event_time
        for other in owned:
            if other == partition:
                continue
            for topic in topics:
                if not unread(topic, other):
                    continue  # caught up: what comes next is new
                read_to = self._read_to.get((topic, other))
                if read_to is None:
                    # Nothing read from it yet: wait for its first fetch (every fetch asks for
                    # every partition), but not forever.
                    if now_ms - self._since_ms < self._max_wait_ms:
                        return -1
                    continue
                if bound is None or read_to < bound:
                    bound = read_to
        return bound

    def in_flight(self) -> int:
        """Forwarded records not back yet (to partitions of this worker or not)."""
        return sum(len(waiting) for waiting in self._in_flight.values())

    def assigned(self, now_ms: int) -> None:
        """A new assignment: partitions not read yet are waited for from now."""
        self._since_ms = now_ms

    def drop(self, partition: int) -> None:
        """Forget a revoked partition."""
        self._in_flight.pop(partition, None)
        for key in [k for k in self._read_to if k[1] == partition]:
            del self._read_to[key]


def source_of(headers: Sequence[tuple[str, bytes]] | None) -> bytes | None:
    """Where a forwarded record came from (``forward_headers``)."""
    for name, value in headers or ():
        if name == SOURCE:
            return value
    return None


def lane_of(kind: str, source: bytes | None) -> str:
    """The lane of a forwarded record: its source topic kind and partition (``a3``, ``u0``)."""
    partition = "?"
    if source is not None:
        text = source.decode(errors="replace")
        opened, closed = text.rfind("["), text.rfind("]")
        if 0 <= opened < closed:
            partition = text[opened + 1 : closed]
    return f"{kind[:1]}{partition}"


class InOrderAcks:
    """Acks of a topic-partition whose records are released out of offset order (the lanes
    of the repartition topic), handed out in offset order.

    Faust commits up to the first gap in a partition's acked offsets but does not see a gap
    before the first of them, so an ack released early could commit past an earlier record
    still held: here an offset is acked only once every offset fetched before it is done.
    """

    def __init__(self) -> None:
        self._fetched: dict[Any, deque[int]] = {}
        self._done: dict[Any, set[int]] = {}

    def fetched(self, tp: Any, offset: int) -> None:
        self._fetched.setdefault(tp, deque()).append(offset)

    def release(self, tp: Any, offset: int) -> list[tuple[Any, int]]:
        """``offset`` is done: the acks that may go now, in offset order."""
        done = self._done.setdefault(tp, set())
        done.add(offset)
        fetched = self._fetched.get(tp)
        out: list[tuple[Any, int]] = []
        while fetched and fetched[0] in done:
            first = fetched.popleft()
            done.discard(first)
            out.append((tp, first))
        return out

    def drop(self, partitions: Collection[int] | None = None) -> None:
        """Forget what is held of ``partitions`` (all when None): read again after a seek or
        held by another worker after a rebalance."""
        for tp in [tp for tp in self._fetched if partitions is None or tp.partition in partitions]:
            self._fetched.pop(tp, None)
            self._done.pop(tp, None)
