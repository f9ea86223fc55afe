"""The order in which the batch path hands changelog writes to the producer, and the order in
which the rests of overlapping batches run.

After a crash the next owner restores the customers, due-index and stream-time tables from
three changelogs. A derived table ahead of the records it was derived from cannot be repaired
(a due entry removed or moved on whose record never arrived), one behind them can: so the
derived changelogs go out only once the broker holds the customer records.
"""

from __future__ import annotations

import asyncio
import collections
import types
from typing import Any

import pytest
from faust.types import TP

from streams.kafka.fastpath import BatchConsumer, BatchedChangelog, _Tail, send_in_order

pytestmark = pytest.mark.asyncio


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class _Store(dict[bytes, bytes]):
    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted = offset


class _Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.data = _Store()
        self.changelog_topic = _Topic(f"{name}-changelog")


class _Batch:
    def __init__(self, room: int) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self._room = room

    def append(self, key: bytes, value: bytes | None, timestamp: Any) -> object | None:
        if len(self.records) == self._room:
            return None
        self.records.append((key, value))
        return object()


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Producer:
    """Keeps every batch's future unresolved until the test acknowledges it."""

    def __init__(self, room: int = 100) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]], asyncio.Future[Any]]] = []

    def create_batch(self) -> _Batch:
        return _Batch(self.room)

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch.records, future))
        return future

    def topics(self) -> list[str]:
        return [topic for topic, *_ in self.sent]

    def acknowledge(self, failure: BaseException | None = None) -> None:
        for n, (_, _, _, future) in enumerate(self.sent):
            if not future.done():
                if failure is None:
                    future.set_result(_Meta(n))
                else:
                    future.set_exception(failure)


def _write(changelog: BatchedChangelog, partition: int, key: bytes, value: bytes) -> None:
    changelog.at(partition)[key] = value


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _changelogs() -> tuple[BatchedChangelog, BatchedChangelog, BatchedChangelog]:
    customers, due, clock = (
        BatchedChangelog(_Table(name)) for name in ("customers", "due-index", "stream-time")
    )
    return customers, due, clock


async def test_derived_changelogs_wait_for_the_broker_to_hold_the_records() -> None:
    customers, due, clock = _changelogs()
    producer = _Producer(room=2)  # three records of partition 1: two batches
    for n in range(3):
        _write(customers, 1, b"c%d" % n, b"record")
    _write(customers, 4, b"c9", b"record")
    _write(due, 1, b"c0", b"[1,100]")
    _write(clock, 1, b"1", b"100")

    sending = asyncio.create_task(send_in_order(producer, customers, [due, clock]))
    await _turns()
    assert producer.topics() == ["customers-changelog"] * 3
    assert not sending.done()
    # Written to the stores at once, whatever the changelog's state.
    assert due.get(b"c0") == b"[1,100]"

    producer.acknowledge()
    await sending
    assert producer.topics() == ["customers-changelog"] * 3 + [
        "due-index-changelog",
        "stream-time-changelog",
    ]
    assert [records for _, _, records, _ in producer.sent[:2]] == [
        [(b"c0", b"record"), (b"c1", b"record")],
        [(b"c2", b"record")],
    ]


async def test_a_failed_record_batch_stops_the_derived_writes() -> None:
    customers, due, clock = _changelogs()
    producer = _Producer()
    _write(customers, 0, b"c0", b"record")
    _write(due, 0, b"c0", b"[0,5]")
    sending = asyncio.create_task(send_in_order(producer, customers, [due, clock]))
    await _turns()
    producer.acknowledge(RuntimeError("broker gone"))
    with pytest.raises(RuntimeError, match="broker gone"):
        await sending
    assert producer.topics() == ["customers-changelog"]
    # The failure stays: the next send raises it too, nothing more goes out.
    with pytest.raises(RuntimeError, match="broker gone"):
        await customers.send(producer)


async def test_no_wait_when_nothing_derived_changed() -> None:
    customers, due, clock = _changelogs()
    producer = _Producer()
    _write(customers, 2, b"c0", b"record")
    await asyncio.wait_for(send_in_order(producer, customers, [due, clock]), timeout=1)
    assert producer.topics() == ["customers-changelog"]
    producer.acknowledge()
    await _turns()
    # The acknowledged offset is what a RocksDB store persists as the changelog offset.
    assert customers.table.data.persisted == 0


async def test_batch_rests_run_one_at_a_time_in_batch_order() -> None:
    tail = _Tail()
    log: list[str] = []
    release_first = asyncio.Event()

    async def rest(name: str, wait: asyncio.Event | None = None) -> None:
        log.append(f"{name} starts")
        if wait is not None:
            await wait.wait()
        log.append(f"{name} ends")

    await tail.then(rest("first", release_first), epoch=1)
    await asyncio.sleep(0)
    second = asyncio.ensure_future(tail.then(rest("second"), epoch=1))
    for _ in range(5):
        await asyncio.sleep(0)
    assert log == ["first starts"] and not second.done()  # waits for the first rest
    release_first.set()
    await second
    await tail.wait()
    assert log == ["first starts", "first ends", "second starts", "second ends"]


async def test_a_failed_rest_stops_the_next_batch_and_is_raised() -> None:
    tail = _Tail()

    async def failing() -> None:
        raise RuntimeError("ledger said WRONGTYPE")

    started: list[str] = []

    async def never() -> None:
        started.append("next")

    await tail.then(failing(), epoch=1)
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="WRONGTYPE"):
        tail.raise_failure()  # what the fetch loop checks before each fetch
    await tail.then(failing(), epoch=1)
    next_rest = never()
    with pytest.raises(RuntimeError, match="WRONGTYPE"):
        await tail.then(next_rest, epoch=1)
    assert started == [] and next_rest.cr_frame is None  # closed, never run


class _Flags:
    def set_flag(self, flag: str) -> None:
        pass

    def unset_flag(self, flag: str) -> None:
        pass


class _LoopConsumer(BatchConsumer):
    """The batch consumer's fetch loop, its Faust and aiokafka sides replaced by scripted
    fetches: each step is a fetch (``{tp: records}``) or a callable run in place of one."""

    def __init__(self, steps: list[Any]) -> None:  # noqa: D107 - Faust's own set-up skipped
        self._steps = steps
        self._stopped = asyncio.Event()
        self.suspend_flow = asyncio.Event()
        self.sought = 0  # calls of perform_seek
        self._crashed = asyncio.Event()
        self.diag = _Flags()
        self._read_offset: Any = collections.defaultdict(lambda: None)
        self._active_partitions = None
        self._paused_partitions: set[TP] = set()
        self._buffered_partitions: set[TP] = set()
        self._commit_every = None
        self._n_acked = 0
        self.flow_active = True
        self.delivered: list[tuple[str, int]] = []  # what took Faust's path (changelogs)
        self.app = types.SimpleNamespace(
            topics=types.SimpleNamespace(acks_enabled_for=lambda topic: True), rebalancing=False
        )

    def assignment(self) -> set[TP]:
        return {TP("in", 0), TP("changelog", 0), TP("changelog", 1)}

    def _to_message(self, tp: TP, record: Any) -> tuple[str, int]:
        return (tp.topic, record.offset)

    async def callback(self, message: tuple[str, int]) -> None:
        self.delivered.append(message)

    async def wait_first(self, *coroutines: Any) -> None:
        first, *rest = coroutines
        for other in rest:
            other.close()
        await first

    async def perform_seek(self) -> None:
        # Back to the committed offsets (none here), counted as the real seek counts.
        self._seeks += 1
        self._read_offset.clear()
        self.sought += 1
        self._seeks += 1

    async def run(self) -> None:
        """The fetch loop until the scripted steps run out."""
        await asyncio.wait_for(
            self._drain_messages(types.SimpleNamespace(_stopped=asyncio.Event())), 5
        )

    async def _wait_next_records(self, timeout: float) -> Any:
        await asyncio.sleep(0)
        if not self._steps:
            self._stopped.set()
            return None, None
        step = self._steps.pop(0)
        if callable(step):
            return await step(self), None
        return step, None


def _records(*offsets: int) -> list[Any]:
    return [types.SimpleNamespace(offset=o, key=b"k", value=b"v") for o in offsets]


class _Rests:
    """A handler whose rests say when they start and end; a batch's rest waits for ``hold``
    when ``held(rests)`` says so as the batch is applied."""

    def __init__(self, held: Any) -> None:
        self.log: list[str] = []
        self.hold = asyncio.Event()
        self._held = held

    async def _rest(self, name: str, wait: bool) -> None:
        self.log.append(f"{name} rest starts")
        if wait:
            await self.hold.wait()
        self.log.append(f"{name} rest ends")

    async def handler(self, batch: Any, epoch: int) -> Any:
        name = f"offsets {[r.offset for _, records in batch for r in records]}"
        self.log.append(f"{name} applied")
        return self._rest(name, self._held(self))


async def test_a_batch_after_a_seek_waits_for_the_rest_from_before_it() -> None:
    # A rest from before a seek drops what the worker holds (its input is read again); the
    # batch read after the seek must not be applied until that is done, or the drop would take
    # that batch's work with it while its input is acked.
    tp = TP("in", 0)
    rests = _Rests(held=lambda rests: len(rests.log) == 1)  # the first batch's rest waits

    async def seek_then_let_the_rest_end(consumer: BatchConsumer) -> None:
        await consumer.perform_seek()  # Faust's recovery, say; no records in this fetch
        asyncio.get_running_loop().call_later(0.05, rests.hold.set)

    consumer = _LoopConsumer(
        [{tp: _records(0, 1)}, seek_then_let_the_rest_end, {tp: _records(0, 1, 2)}]
    )
    consumer.use_batches(frozenset({"in"}), rests.handler)
    await consumer.run()
    assert rests.log == [
        "offsets [0, 1] applied",
        "offsets [0, 1] rest starts",
        "offsets [0, 1] rest ends",
        "offsets [0, 1, 2] applied",
        "offsets [0, 1, 2] rest starts",
        "offsets [0, 1, 2] rest ends",
    ]


async def test_a_batch_of_the_same_seek_overlaps_the_rest_before_it() -> None:
    tp = TP("in", 0)

    def held(rests: _Rests) -> bool:
        if len(rests.log) > 1:
            rests.hold.set()  # the second batch was applied while the first rest waited
        return len(rests.log) == 1

    rests = _Rests(held)
    consumer = _LoopConsumer([{tp: _records(0, 1)}, {tp: _records(2)}])
    consumer.use_batches(frozenset({"in"}), rests.handler)
    await consumer.run()
    assert rests.log[:3] == [
        "offsets [0, 1] applied",
        "offsets [0, 1] rest starts",
        "offsets [2] applied",
    ]


@pytest.mark.parametrize("rebalancing", [False, True])
async def test_a_fetch_across_a_seek_drops_the_inputs_and_delivers_the_changelogs(
    rebalancing: bool,
) -> None:
    # The seek takes the inputs back to their committed offsets, not the changelogs: a standby
    # table's records dropped here would never come again.
    inputs, changelog = TP("in", 0), TP("changelog", 0)
    applied: list[list[int]] = []

    async def handler(batch: Any, epoch: int) -> None:
        applied.append([r.offset for _, records in batch for r in records])

    async def fetch_during_a_seek(consumer: BatchConsumer) -> Any:
        consumer._seeks += 1  # a seek starts while this fetch is under way
        return {inputs: _records(5, 6), changelog: _records(40, 41)}

    async def next_fetch(consumer: _LoopConsumer) -> Any:
        # Sought back to the committed offset (5) the fetcher reads 5 and 6 again; otherwise it
        # goes on from where it was.
        return {inputs: _records(5, 6, 7) if consumer.sought else _records(7)}

    consumer = _LoopConsumer([{changelog: _records(39)}, fetch_during_a_seek, next_fetch])
    consumer.use_batches(frozenset({"in"}), handler)
    # Faust counts the app as rebalancing until after its recovery's own seek: the dropped
    # inputs must be read again then too.
    consumer.app.rebalancing = rebalancing
    await consumer.run()
    assert consumer.delivered == [("changelog", 39), ("changelog", 40), ("changelog", 41)]
    assert applied == [[5, 6, 7]]  # the straddling fetch's inputs came again, after a seek


class _FakeThread:
    """Faust's consumer thread as ``_rewind`` sees it: positions, and the seeks asked for."""

    def __init__(self, positions: dict[tuple[str, int], int]) -> None:
        self.positions = positions
        self.sought: list[dict[Any, int]] = []
        assignment = types.SimpleNamespace(state_value=self._state)
        self._consumer = types.SimpleNamespace(
            _subscription=types.SimpleNamespace(
                subscription=types.SimpleNamespace(assignment=assignment)
            )
        )

    def _state(self, tp: Any) -> Any:
        position = self.positions.get((tp.topic, tp.partition))
        if position is None:
            return None
        return types.SimpleNamespace(has_valid_position=True, position=position)

    def _ensure_consumer(self) -> Any:
        return self._consumer

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.sought.append(dict(partitions))


async def test_changelog_records_of_a_partition_paused_since_the_fetch_are_read_again() -> None:
    # Faust pauses a standby's changelog partitions between its seek and their resumption; a
    # fetch can return their records in between. Dropped, they must be fetched again.
    changelog, other = TP("changelog", 0), TP("changelog", 1)
    consumer = _LoopConsumer([{changelog: _records(40, 41), other: _records(7)}])
    consumer._paused_partitions = {changelog}
    thread = _FakeThread({("changelog", 0): 42, ("changelog", 1): 8})
    consumer._thread = thread

    async def handler(batch: Any, epoch: int) -> None:
        return None

    consumer.use_batches(frozenset({"in"}), handler)
    await consumer.run()
    assert consumer.delivered == [("changelog", 7)]  # the partition not paused, as usual
    assert thread.sought == [{changelog: 40}]  # back to the first record dropped


class _GetmanyConsumer(BatchConsumer):
    """Only the hand-over to Faust's consumer thread, which records what it was asked for."""

    def __init__(self, held: set[TP]) -> None:  # noqa: D107 - Faust's own set-up skipped
        self.asked: list[set[TP] | None] = []
        self.held = held

        async def getmany(active: set[TP] | None, timeout: float) -> dict[TP, list[Any]]:
            self.asked.append(active)
            return {}

        self._thread = types.SimpleNamespace(getmany=getmany)


async def test_fetches_leave_out_the_topic_partitions_held_back() -> None:
    a0, u0, ticks = TP("account", 0), TP("usage", 0), TP("ticks", 0)
    consumer = _GetmanyConsumer({u0})

    async def handler(batch: Any, epoch: int) -> None:
        return None

    consumer.use_batches(frozenset({"account", "usage", "ticks"}), handler, None)
    await consumer._getmany({a0, u0, ticks}, 1.0)  # no hold-back wired: all of them
    consumer.use_batches(frozenset({"account", "usage", "ticks"}), handler, lambda: consumer.held)
    await consumer._getmany({a0, u0, ticks}, 1.0)
    consumer.held = set()
    await consumer._getmany({a0, u0, ticks}, 1.0)  # caught up: asked for again
    # Never an empty set: aiokafka would read it as every partition.
    consumer.held = {a0, u0, ticks}
    await consumer._getmany({a0, u0, ticks}, 1.0)
    assert consumer.asked == [{a0, u0, ticks}, {a0, ticks}, {a0, u0, ticks}, {a0, u0, ticks}]
