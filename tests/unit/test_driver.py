"""The batch driver without a broker: a fake consumer hands it fetches, fake changelogs take the
writes. What it acks and when, what it drops on a rebalance or a seek, and the order in which a
batch settles (``streams/kafka/checkpoint.py``).

The same on a real broker: ``tests/integration/test_crash_under_load.py``,
``test_backlog_order.py``, ``test_rolling_restart.py``.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Iterable
from typing import Any

import orjson
import pytest
from faust.types import TP

from streams.core.clock import Clock
from streams.core.decisions import Decision
from streams.core.ingest import Decoder
from streams.core.timeutil import format_ms
from streams.kafka.containment import Contained, DeadLetterOut
from streams.kafka.copartition import SOURCE, SOURCE_KIND, Alignment, Router, murmur2_partition
from streams.kafka.driver import HOLD_BACK_AT, BatchDriver
from streams.kafka.fastpath import BatchedChangelog
from streams.kafka.pipeline import Ingest
from streams.kafka.processor import ContactAll, Processor, Stores
from streams.kafka.topics import TopicNames
from streams.ops.metrics import Metrics
from tests.unit.test_processor import TinyCore

ACCOUNT, USAGE, TICKS = "account-events", "usage-events", "app-clock-ticks"
REPARTITION = "app-repartition"
NOW = 1_700_000_000_000
TOPICS = TopicNames(ACCOUNT, USAGE, "decisions", "dead-letters")


class _Record:
    def __init__(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.offset = offset
        self.key = key
        self.value = value
        self.headers: list[tuple[str, bytes]] = []


def _visit(offset: int, event_id: str, at: int = NOW - 60_000, customer: str = "c1") -> _Record:
    payload = {
        "event_id": event_id,
        "customer_id": customer,
        "type": "visit",
        "occurred_at": format_ms(at),
        "venue": "branch",
        "sentiment": "positive",
    }
    return _Record(offset, customer.encode(), orjson.dumps(payload))


def _transaction(offset: int, event_id: str, at: int, customer: str = "c1") -> _Record:
    payload = {
        "event_id": event_id,
        "customer_id": customer,
        "type": "transaction",
        "occurred_at": format_ms(at),
        "account_id": "a1",
        "account_type": "savings",
        "direction": "debit",
        "amount": 1.5,
        "rail": "internal",
    }
    return _Record(offset, customer.encode(), orjson.dumps(payload))


def _forwarded(offset: int, event_id: str, at: int, customer: str = "c1") -> _Record:
    """A usage record another worker forwarded through the repartition topic."""
    record = _visit(offset, event_id, at, customer)
    record.headers = [(SOURCE_KIND, b"usage"), (SOURCE, f"{USAGE}[9]@{offset}".encode())]
    return record


class _FetchState:
    def __init__(self, end: int) -> None:
        self.highwater = end
        self.position = end
        self.timestamp = NOW
        self.has_valid_position = True


class FakeConsumer:
    """What the driver uses of ``fastpath.BatchConsumer``: epoch, seeks, fetch states, acks."""

    def __init__(self) -> None:
        self.epoch = 0
        self._seeks = 0
        self._read_offset: dict[TP, int | None] = {}
        self.ends: dict[TP, int] = {}
        self.acked: list[tuple[TP, int]] = []
        self.read_from_start: list[TP] = []

    @property
    def seeks(self) -> int:
        return self._seeks

    def partition_state(self, tp: TP) -> _FetchState | None:
        return _FetchState(self.ends.get(tp, 0))

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        return {tp: self.ends.get(tp, 0) for tp in partitions}

    async def read_from_beginning(self, tps: Any) -> None:
        self.read_from_start.extend(tps)

    def ack_offsets(self, tp: TP, offsets: Iterable[int]) -> None:
        self.acked.extend((tp, offset) for offset in offsets)


class _Store(dict[bytes, bytes]):
    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted = offset


class _Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.data = _Store()
        self.changelog_topic = types.SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")

    def items(self) -> Any:
        return self.data.items()


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    def append(self, key: bytes, value: bytes | None, timestamp: Any) -> object:
        self.records.append((key, value))
        return object()


class _Producer:
    """Acknowledges every record batch at once; remembers the order of everything sent."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        self.log.append(f"changelog {topic}[{partition}]")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(types.SimpleNamespace(offset=0))
        return future


class _Publisher:
    """Decisions: acknowledged when the test says (``held``), or at once; or failing."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.held = False
        self.fail = False
        self.waiting: list[asyncio.Future[Any]] = []

    async def __call__(self, decision: Decision) -> Awaitable[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(ConnectionError("broker gone"))
        elif not self.held:
            future.set_result(None)
            self.log.append(f"decision {decision.candidate.instance} acked")
        else:
            self.waiting.append(future)
        return future


class Rig:
    """The driver with the fake consumer; ``wall`` and ``mono`` are its clocks (wall ms and
    monotonic seconds), ``mode`` its stream.repartition."""

    def __init__(self, mode: str = "off", order_grace_ms: int = 0) -> None:
        self.wall = NOW
        self.mono = 0.0
        self.log: list[str] = []
        self.consumer = FakeConsumer()
        self.publisher = _Publisher(self.log)
        self.changelogs = [
            BatchedChangelog(_Table(name)) for name in ("customers", "due-index", "stream-time")
        ]
        self.metrics = metrics = Metrics()
        self.processor = processor = Processor(
            TinyCore(),
            Stores(self.changelogs[0], self.changelogs[1], self.changelogs[2]),
            Clock("event"),
            ContactAll(),
            self.publisher,
            metrics,
        )

        async def send_dead_letter(key: bytes | None, value: bytes) -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            self.log.append("dead letter")
            return future

        self.driver = BatchDriver(
            consumer=self.consumer,
            processor=processor,
            ingest=Ingest(TOPICS, Decoder(), metrics, lambda: NOW),
            contained=Contained(processor.step_event_nowait, metrics, lambda: NOW),
            dead_letters=DeadLetterOut(send_dead_letter, metrics),
            router=Router({t: "murmur2" for t in TOPICS.inputs}, 4, mode, lambda t: None),
            topics=TOPICS,
            ticks=TICKS,
            repartition=REPARTITION,
            forward=self._no_forward,
            changelogs=self.changelogs,
            producer=lambda: _Producer(self.log),
            metrics=metrics,
            cluster="cluster-1",
            wall_clock=False,
            max_order_wait_ms=1_000,
            order_grace_ms=order_grace_ms,
            on_replaced="reset",
            wall_ms=lambda: self.wall,
            monotonic=lambda: self.mono,
        )

    async def _no_forward(self, **kwargs: Any) -> None:
        raise AssertionError("nothing is forwarded: the records are where they belong")

    def assign(self, *partitions: int) -> None:
        self.consumer.epoch += 1
        tps = {TP(topic, p) for p in partitions for topic in (ACCOUNT, USAGE, TICKS)}
        asyncio.run(self.driver.on_partitions_assigned(None, assigned=tps))

    async def fetch(self, *parts: tuple[str, int, list[_Record]]) -> Awaitable[None] | None:
        """Hand one fetch to the driver (the consumer's fetch state moved past its records)."""
        for topic, partition, records in parts:
            tp = TP(topic, partition)
            self.consumer.ends[tp] = max(self.consumer.ends.get(tp, 0), records[-1].offset + 1)
        batch = [(TP(topic, partition), records) for topic, partition, records in parts]
        return await self.driver.handle(batch, self.consumer.epoch)


def _acked(rig: Rig) -> list[tuple[str, int, int]]:
    return [(tp.topic, tp.partition, offset) for tp, offset in rig.consumer.acked]


# --- assignment ---------------------------------------------------------------------------


def test_an_assignment_restores_and_checks_the_partitions_before_the_first_batch() -> None:
    rig = Rig()
    rig.assign(0, 1)
    driver = rig.driver
    assert driver.owned == {0, 1} and driver.assigned and driver.stale

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1")]))
        assert rest is not None
        await rest

    asyncio.run(go())
    assert not driver.stale
    # The log identity check at assignment writes the cluster into each partition's marks.
    assert rig.processor.log_marks(0).cluster == "cluster-1"
    assert rig.processor.log_marks(1).cluster == "cluster-1"
    assert _acked(rig) == [(USAGE, 0, 0)]
    assert driver.processed == {(USAGE, 0): 0}


# --- the ack rules ------------------------------------------------------------------------


def test_input_is_acked_only_after_its_decisions_and_state() -> None:
    """The order of a batch's rest: decisions acknowledged, then the customer changelog, then
    the derived ones, then the input offsets."""
    rig = Rig()
    rig.assign(0)

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1"), _visit(1, "e2")]))
        assert rest is not None and rig.consumer.acked == []
        rig.log.append("rest starts")
        await rest
        rig.log.append("acked" if rig.consumer.acked else "not acked")

    asyncio.run(go())
    assert rig.log == [
        "rest starts",
        "decision e1 acked",
        "decision e2 acked",
        "changelog customers-changelog[0]",
        "changelog due-index-changelog[0]",
        "changelog stream-time-changelog[0]",
        "acked",
    ]
    assert _acked(rig) == [(USAGE, 0, 0), (USAGE, 0, 1)]
    assert rig.changelogs[0].get(b"c1", 0) is not None


def test_nothing_is_written_or_acked_while_a_decision_waits_for_the_broker() -> None:
    rig = Rig()
    rig.assign(0)
    rig.publisher.held = True

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1")]))
        assert rest is not None
        running = asyncio.ensure_future(rest)
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(rig.publisher.waiting) == 1
        assert rig.log == [] and rig.consumer.acked == []
        assert rig.changelogs[0].get(b"c1") is None
        rig.publisher.waiting[0].set_result(None)
        await running

    asyncio.run(go())
    assert rig.log[0] == "changelog customers-changelog[0]"
    assert _acked(rig) == [(USAGE, 0, 0)]


def test_a_dead_letter_is_acked_in_its_offset_order() -> None:
    rig = Rig()
    rig.assign(0)

    async def go() -> None:
        rest = await rig.fetch(
            (USAGE, 0, [_visit(0, "e1"), _Record(1, b"c1", b"{"), _visit(2, "e3")])
        )
        assert rest is not None
        await rest

    asyncio.run(go())
    assert "dead letter" in rig.log
    assert _acked(rig) == [(USAGE, 0, 0), (USAGE, 0, 1), (USAGE, 0, 2)]


def test_ticks_are_acked_with_their_batch() -> None:
    rig = Rig()
    rig.assign(0)

    async def go() -> None:
        rest = await rig.fetch((TICKS, 0, [_Record(0, None, b""), _Record(1, None, b"")]))
        assert rest is not None
        await rest

    asyncio.run(go())
    assert _acked(rig) == [(TICKS, 0, 0), (TICKS, 0, 1)]
    assert rig.driver.processed == {}  # ticks are not input


def test_records_held_for_event_time_order_stay_unacked() -> None:
    """A record of one topic waits in the merge while the other topic of its partition may
    still hold earlier events (unknown: no fetch answer yet); it is not acked."""
    rig = Rig()
    rig.assign(0)
    rig.consumer.partition_state = lambda tp: None  # type: ignore[method-assign]

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1")]))
        assert rest is not None
        await rest

    asyncio.run(go())
    assert rig.consumer.acked == []
    assert rig.driver.merger.partitions() == [0]  # the visit waits in the merge


def test_a_crowded_partition_is_held_back_from_the_next_fetches() -> None:
    rig = Rig()
    rig.assign(0)
    rig.consumer.partition_state = lambda tp: None  # type: ignore[method-assign]
    records = [_visit(n, f"e{n}") for n in range(HOLD_BACK_AT + 1)]

    async def go() -> None:
        await rig.fetch((USAGE, 0, records))

    asyncio.run(go())
    assert rig.driver.held_back() == {TP(USAGE, 0)}


# --- the order grace and the repartition topic ---------------------------------------------

GRACE_MS = 500


def _released_without_waiting(rig: Rig, partition: int, offset: int = 0) -> list[tuple[str, int]]:
    """Fetch a usage record and a later account record of ``partition`` (the repartition
    topic caught up, no news newer than the fetch) and settle the batch: what was acked."""
    usage = _visit(offset, f"u{offset}", at=NOW - 60_000)
    account = _transaction(offset, f"a{offset}", at=NOW - 30_000)

    async def go() -> None:
        rest = await rig.fetch((USAGE, partition, [usage]), (ACCOUNT, partition, [account]))
        assert rest is not None
        await rest

    before = len(rig.consumer.acked)
    asyncio.run(go())
    return [(tp.topic, offset) for tp, offset in rig.consumer.acked[before:]]


def test_a_caught_up_repartition_topic_is_not_waited_for_while_nothing_is_forwarded() -> None:
    """On correctly partitioned input the repartition topic stays empty: once its high
    watermark says caught up, the usage record goes at once, not after the order grace. The
    account record still waits the grace for the usage topic (external producers do not keep
    order across topics)."""
    rig = Rig("misrouted", GRACE_MS)
    partition = murmur2_partition(b"c1", 4)
    rig.assign(partition)
    assert _released_without_waiting(rig, partition) == [(USAGE, 0)]
    assert rig.driver.merger.partitions() == [partition]  # the account record waits


def test_the_repartition_topic_gets_the_grace_while_this_worker_forwards() -> None:
    rig = Rig("misrouted", GRACE_MS)
    partition = murmur2_partition(b"c1", 4)
    rig.assign(partition)
    # A misrouted record this worker forwarded to a partition of another worker.
    rig.driver.alignment.forwarded((partition + 1) % 4, b"usage-events[0]@3", NOW, NOW, False)
    assert _released_without_waiting(rig, partition) == []
    # The alignment lapses ACTIVE_SECONDS after the last forward: no grace for it then.
    rig.mono += Alignment.ACTIVE_SECONDS
    assert _released_without_waiting(rig, partition, offset=1) == [(USAGE, 0), (USAGE, 1)]


def test_the_repartition_topic_gets_the_grace_while_forwards_come_to_the_partition() -> None:
    """Another worker forwards records to this partition: its forwards are waited for the
    grace, as the input topics are, for ``Alignment.ACTIVE_SECONDS`` after the last came."""
    rig = Rig("misrouted", GRACE_MS)
    partition = murmur2_partition(b"c1", 4)
    rig.assign(partition)

    async def forward_comes() -> None:
        early = _forwarded(0, "f0", at=NOW - 90_000)
        await rig.fetch((REPARTITION, partition, [early]))

    asyncio.run(forward_comes())
    rig.mono += Alignment.ACTIVE_SECONDS - 1
    # The forwarded record goes (both inputs have later records); the usage record waits.
    assert _released_without_waiting(rig, partition) == [(REPARTITION, 0)]
    assert not rig.driver.alignment.active()  # not this worker's forwarding
    rig.mono += 1
    assert _released_without_waiting(rig, partition, offset=1) == [(USAGE, 0), (USAGE, 1)]


# --- rebalances and seeks -----------------------------------------------------------------


def test_a_batch_fetched_before_a_rebalance_is_dropped() -> None:
    rig = Rig()
    rig.assign(0)

    async def go() -> None:
        batch = [(TP(USAGE, 0), [_visit(0, "e1")])]
        assert await rig.driver.handle(batch, rig.consumer.epoch - 1) is None

    asyncio.run(go())
    assert rig.publisher.waiting == [] and rig.log == []


def test_a_rebalance_while_a_batch_settles_acks_nothing_and_drops_what_is_held() -> None:
    rig = Rig()
    rig.assign(0)
    rig.publisher.held = True

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1")]))
        assert rest is not None
        running = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        rig.consumer.epoch += 1  # a revocation started
        for future in rig.publisher.waiting:
            future.set_result(None)
        await running

    asyncio.run(go())
    assert rig.consumer.acked == []
    # Nothing was written: the partition's writes were refused, not sent to the changelog.
    assert not any(line.startswith("changelog") for line in rig.log)
    assert rig.changelogs[0].get(b"c1") is None
    assert rig.driver.stale  # restored again before the next batch
    assert rig.processor.pending_partitions() == set()


def test_a_revocation_drops_the_revoked_partitions_records_and_state() -> None:
    rig = Rig()
    rig.assign(0, 1)
    rig.consumer.partition_state = lambda tp: None  # type: ignore[method-assign]

    async def go() -> None:
        await rig.fetch((USAGE, 0, [_visit(0, "e1")]), (USAGE, 1, [_visit(0, "e2", customer="c2")]))
        rig.driver.processed[(USAGE, 1)] = 5
        rig.consumer.epoch += 1
        await rig.driver.on_partitions_revoked(None, revoked={TP(USAGE, 1), TP(ACCOUNT, 1)})

    asyncio.run(go())
    driver = rig.driver
    assert driver.owned == {0} and not driver.assigned
    assert driver.merger.partitions() == [0]  # partition 1 dropped, 0 still held
    assert (USAGE, 1) not in driver.processed and (USAGE, 1) not in driver.last_seen


def test_a_seek_drops_held_records_before_the_next_batch() -> None:
    """After a seek every record not acked comes again: what the merge holds would be applied
    twice, so it goes, and the partitions are restored from the tables again."""
    rig = Rig()
    rig.assign(0)
    known = rig.consumer.partition_state
    rig.consumer.partition_state = lambda tp: None  # type: ignore[method-assign]

    async def go() -> None:
        first = await rig.fetch((USAGE, 0, [_visit(0, "e1")]))
        assert first is not None
        await first
        assert rig.driver.merger.partitions() == [0] and rig.consumer.acked == []
        rig.consumer._seeks += 2  # a seek to the committed offsets, begun and ended
        rig.consumer.partition_state = known  # type: ignore[method-assign]
        again = await rig.fetch((USAGE, 0, [_visit(0, "e1")]))
        assert again is not None
        await again

    asyncio.run(go())
    # The copy held from before the seek was dropped: the record is applied and acked once.
    assert rig.driver.merger.partitions() == []
    assert _acked(rig) == [(USAGE, 0, 0)]
    assert rig.log.count("decision e1 acked") == 1
    assert rig.driver.seeks_seen == 2


def test_a_seek_while_a_batch_settles_acks_nothing() -> None:
    rig = Rig()
    rig.assign(0)
    rig.publisher.held = True

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1")]))
        assert rest is not None
        running = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        rig.consumer._seeks += 1
        for future in rig.publisher.waiting:
            future.set_result(None)
        await running

    asyncio.run(go())
    assert rig.consumer.acked == [] and rig.driver.stale


def test_a_failing_rest_acks_nothing_and_raises() -> None:
    """A decision the broker refuses: the rest raises (the fetch loop stops with it), nothing
    is written or acked, and the unwritten state is dropped (the input is read again)."""
    rig = Rig()
    rig.assign(0)
    rig.publisher.fail = True

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1"), _visit(1, "e2")]))
        assert rest is not None
        with pytest.raises(ConnectionError):
            await rest

    asyncio.run(go())
    assert rig.consumer.acked == []
    assert not any(line.startswith("changelog") for line in rig.log)
    assert rig.changelogs[0].get(b"c1") is None
    assert rig.processor.pending_partitions() == set()
    assert rig.driver.processed == {}


# --- end offsets and lag ------------------------------------------------------------------


def test_lag_counts_from_the_last_offset_done() -> None:
    rig = Rig()
    rig.assign(0)

    async def go() -> None:
        rest = await rig.fetch((USAGE, 0, [_visit(0, "e1"), _visit(1, "e2")]))
        assert rest is not None
        await rest
        rig.consumer.ends[TP(USAGE, 0)] = 10
        await rig.driver.read_log_ends()

    asyncio.run(go())
    assert rig.driver.log_ends[(USAGE, 0)] == 10
    assert rig.driver.lag_of(USAGE, 0) == 8
    # Nothing done yet on the account topic: counted from Faust's read offset.
    rig.consumer._read_offset[TP(ACCOUNT, 0)] = 3
    rig.consumer.ends[TP(ACCOUNT, 0)] = 7
    assert rig.driver.lag_of(ACCOUNT, 0) == 4
