"""The processing shell with a stand-in core: replay skips, decisions before state, due items.

The real trigger core has its own tests; here a tiny core makes the shell's ordering visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streams.core import events as ev
from streams.core.clock import Clock
from streams.core.decisions import Candidate, Decision
from streams.kafka.processor import ContactAll, Processor, Stores
from streams.ops.metrics import Metrics


class DictStore(dict[bytes, bytes]):
    pass


class TinyCore:
    """State: the event ids applied, offsets, and one reminder due 10 ms after each visit."""

    def load(self, raw: bytes) -> dict[str, Any]:
        state: dict[str, Any] = orjson.loads(raw)
        return state

    def dump(self, state: dict[str, Any]) -> bytes:
        return orjson.dumps(state)

    def applied_offset(self, state: dict[str, Any], kind: str) -> int:
        return int(state["offsets"].get(kind, -1))

    def with_applied_offset(self, state: dict[str, Any], kind: str, offset: int) -> dict[str, Any]:
        return {**state, "offsets": {**state["offsets"], kind: offset}}

    def segment(self, state: dict[str, Any]) -> str | None:
        return None

    def step(
        self, state: dict[str, Any] | None, event: ev.Event, now_ms: int
    ) -> tuple[dict[str, Any], list[Candidate], bool]:
        state = state or {"ids": [], "offsets": {}, "due": None, "fired": []}
        if event.event_id in state["ids"]:
            return state, [], True
        new = {**state, "ids": [*state["ids"], event.event_id]}
        candidates = [_candidate(event.customer_id, "visit", event.event_id, event.occurred_at_ms)]
        new["due"] = event.occurred_at_ms + 10
        return new, candidates, False

    def advance(self, state: dict[str, Any], now_ms: int) -> tuple[dict[str, Any], list[Candidate]]:
        if state["due"] is None or state["due"] > now_ms:
            return state, []
        cid = "c1"
        return (
            {**state, "due": None, "fired": [*state["fired"], state["due"]]},
            [_candidate(cid, "reminder", str(state["due"]), state["due"])],
        )

    def next_due_ms(self, state: dict[str, Any]) -> int | None:
        due: int | None = state["due"]
        return due

    def business_unit(self, state: dict[str, Any]) -> str | None:
        return None

    def timezone(self, state: dict[str, Any]) -> str | None:
        return None

    def defer(self, state: dict[str, Any], candidate: Candidate, until_ms: int, at_ms: int) -> None:
        raise AssertionError("no quiet hours in these tests")

    def take_deferred(self, state: dict[str, Any], now_ms: int) -> list[Any]:
        return []


def _candidate(cid: str, trigger: str, instance: str, at: int) -> Candidate:
    return Candidate(cid, trigger, instance, "a", "email", "marketing", 1, (instance,), at)


def _visit(eid: str, at: int) -> ev.Visit:
    return ev.Visit(
        event_id=eid, customer_id="c1", occurred_at_ms=at, venue="v", sentiment="positive"
    )


class Publisher:
    def __init__(self) -> None:
        self.sent: list[Decision] = []
        self.fail = False

    async def __call__(self, decision: Decision) -> Any:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append(decision)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _processor(publisher: Publisher, stores: Stores | None = None) -> Processor:
    stores = stores or Stores(DictStore(), DictStore(), DictStore())
    return Processor(TinyCore(), stores, Clock("event"), ContactAll(), publisher, Metrics())


def test_replayed_offsets_are_skipped_without_new_decisions() -> None:
    publisher = Publisher()
    processor = _processor(publisher)
    asyncio.run(processor.on_event("usage", 0, 5, _visit("e1", 1_000)))
    assert [d.candidate.trigger for d in publisher.sent] == ["visit"]
    # The same record again (a replay after a crash): the state already holds offset 5.
    asyncio.run(processor.on_event("usage", 0, 5, _visit("e1", 1_000)))
    assert len(publisher.sent) == 1


def test_state_is_written_only_after_decisions_are_published() -> None:
    publisher = Publisher()
    stores = Stores(DictStore(), DictStore(), DictStore())
    processor = _processor(publisher, stores)
    publisher.fail = True
    with pytest.raises(ConnectionError):
        asyncio.run(processor.on_event("usage", 0, 5, _visit("e1", 1_000)))
    # Nothing written: a replay of offset 5 will produce the decision again.
    assert b"c1" not in stores.customers
    publisher.fail = False
    asyncio.run(processor.on_event("usage", 0, 5, _visit("e1", 1_000)))
    assert [d.candidate.instance for d in publisher.sent] == ["e1"]
    assert orjson.loads(stores.customers[b"c1"])["offsets"] == {"usage": 5}


def test_due_items_fire_when_stream_time_reaches_them_and_survive_a_restore() -> None:
    publisher = Publisher()
    stores = Stores(DictStore(), DictStore(), DictStore())
    processor = _processor(publisher, stores)
    asyncio.run(processor.on_event("usage", 0, 0, _visit("e1", 1_000)))  # due at 1_010
    assert orjson.loads(stores.due[b"c1"]) == [0, 1_010]
    # A new worker takes the partition over: it rebuilds from the due and clock tables.
    successor = _processor(publisher, stores)
    asyncio.run(successor.restore_partitions({0}))
    assert successor.due_index.get(0, b"c1") == 1_010
    other = ev.Visit(
        event_id="x", customer_id="c2", occurred_at_ms=1_009, venue="v", sentiment="neutral"
    )
    asyncio.run(successor.on_event("usage", 0, 1, other))
    assert "reminder" not in [d.candidate.trigger for d in publisher.sent]  # 1_009 < 1_010
    at_due = ev.Visit(
        event_id="y", customer_id="c2", occurred_at_ms=1_010, venue="v", sentiment="neutral"
    )
    asyncio.run(successor.on_event("usage", 0, 2, at_due))
    fired = [d for d in publisher.sent if d.candidate.trigger == "reminder"]
    assert [d.candidate.instance for d in fired] == ["1010"]
    assert fired[0].decided_at_ms == 1_010  # decided_at reads the (stream time) clock
    assert b"c1" not in stores.due  # nothing more due for c1


def test_a_late_event_whose_due_time_has_passed_fires_without_the_clock_moving() -> None:
    """Event time: the stream time stays where it is (a late event), yet the due entry the
    event sets is already at or before it: the apply_time after the step fires it (it skips a
    partition only when nothing can have come due)."""
    publisher = Publisher()
    processor = _processor(publisher)
    later = ev.Visit(
        event_id="x", customer_id="c2", occurred_at_ms=5_000, venue="v", sentiment="neutral"
    )
    asyncio.run(processor.on_event("usage", 0, 0, later))  # stream time 5_000; due 5_010
    asyncio.run(processor.on_event("usage", 0, 1, _visit("e1", 1_000)))  # late: due 1_010
    assert processor._clock.stream_time(0) == 5_000
    fired = [d.candidate.instance for d in publisher.sent if d.candidate.trigger == "reminder"]
    assert fired == ["1010"]


def test_a_restored_partition_fires_what_is_due_at_its_restored_stream_time() -> None:
    publisher = Publisher()
    stores = Stores(DictStore(), DictStore(), DictStore())
    processor = _processor(publisher, stores)
    asyncio.run(processor.on_event("usage", 0, 0, _visit("e1", 1_000)))  # due at 1_010
    stores.clock[b"0"] = b"2000"  # as if the stream time had reached 2_000 before a crash
    successor = _processor(publisher, stores)
    asyncio.run(successor.restore_partitions({0}))
    asyncio.run(successor.on_time(0))  # no event: only the restored stream time
    fired = [d.candidate.instance for d in publisher.sent if d.candidate.trigger == "reminder"]
    assert fired == ["1010"]


def test_contact_all_orders_by_priority_then_trigger() -> None:
    async def run() -> list[str]:
        cands: Sequence[Candidate] = [
            Candidate("c", "b", "1", "a", "email", "marketing", 10, (), 0),
            Candidate("c", "a", "1", "a", "email", "marketing", 10, (), 0),
            Candidate("c", "z", "1", "a", "email", "service", 100, (), 0),
        ]
        return [d.candidate.trigger for d in await ContactAll().decide(cands, 0)]

    assert asyncio.run(run()) == ["z", "a", "b"]


class WriteLog(DictStore):
    """A store that records every write, to count changelog records."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        super().__init__()
        self._name = name
        self._log = log

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._log.append((self._name, key))
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self._log.append((self._name, key))
        super().__delitem__(key)


class HeldPublisher(Publisher):
    """Acks only when told to, so the test sees what happens before an ack."""

    def __init__(self) -> None:
        super().__init__()
        self.acks: list[asyncio.Future[None]] = []

    async def __call__(self, decision: Decision) -> Any:
        self.sent.append(decision)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


def _logged_stores(log: list[tuple[str, bytes]]) -> Stores:
    return Stores(WriteLog("customers", log), WriteLog("due", log), WriteLog("clock", log))


def test_a_batch_writes_its_state_after_every_ack_and_once_per_key() -> None:
    writes: list[tuple[str, bytes]] = []
    stores = _logged_stores(writes)
    publisher = HeldPublisher()
    processor = _processor(publisher, stores)

    async def scenario() -> None:
        for offset, at in enumerate((1_000, 1_001, 1_002)):
            await processor.apply_event("usage", 0, offset, _visit(f"e{offset}", at))
        flushing = asyncio.ensure_future(processor.flush())
        for _ in range(10):
            await asyncio.sleep(0)
        # Three decisions handed to the producer; nothing written while unacknowledged.
        assert len(publisher.sent) == 3
        assert writes == []
        for ack in publisher.acks[:2]:
            ack.set_result(None)
        await asyncio.sleep(0)
        assert not flushing.done() and writes == []  # the third is not acknowledged yet
        publisher.acks[2].set_result(None)
        await flushing

    asyncio.run(scenario())
    # One record per key: the customer's last state, its due entry, the stream time and the
    # partition's log marks.
    assert sorted(writes) == [
        ("clock", b"0"),
        ("clock", b"log:0"),
        ("customers", b"c1"),
        ("due", b"c1"),
    ]
    state = orjson.loads(stores.customers[b"c1"])
    assert state["ids"] == ["e0", "e1", "e2"]  # each event saw the ones before it
    assert state["offsets"] == {"usage": 2}
    assert orjson.loads(stores.due[b"c1"]) == [0, 1_012]
    assert stores.clock[b"0"] == b"1002"


def test_unchanged_due_entries_and_stream_time_are_not_written_again() -> None:
    writes: list[tuple[str, bytes]] = []
    stores = _logged_stores(writes)
    processor = _processor(Publisher(), stores)
    asyncio.run(processor.on_event("usage", 0, 0, _visit("e0", 1_000)))
    writes.clear()
    # A replay of the same offset, stamped before the partition's stream time.
    asyncio.run(processor.on_event("usage", 0, 0, _visit("e0", 1_000)))
    assert writes == []


def test_a_flush_drops_the_writes_of_a_partition_no_longer_owned() -> None:
    stores = Stores(DictStore(), DictStore(), DictStore())
    processor = _processor(Publisher(), stores)

    async def scenario() -> None:
        await processor.apply_event("usage", 3, 0, _visit("e0", 1_000))
        assert processor.pending_partitions() == {3}
        await processor.flush(lambda partition: partition != 3)

    asyncio.run(scenario())
    assert stores.customers == {} and stores.due == {} and stores.clock == {}
    assert processor.pending_partitions() == set()
    assert processor.due_index.size(3) == 0


def test_revoked_partitions_lose_their_unwritten_state_and_stream_time() -> None:
    stores = Stores(DictStore(), DictStore(), DictStore())
    publisher = Publisher()
    processor = _processor(publisher, stores)

    async def scenario() -> None:
        await processor.on_event("usage", 0, 0, _visit("e0", 1_000))
        await processor.apply_event("usage", 0, 1, _visit("e1", 5_000))
        processor.drop_partitions({0})
        await processor.flush()
        # Reassigned: state, due index and stream time come back from the tables.
        await processor.restore_partitions({0})

    asyncio.run(scenario())
    assert orjson.loads(stores.customers[b"c1"])["offsets"] == {"usage": 0}
    assert processor.due_index.get(0, b"c1") == 1_010
    assert stores.clock[b"0"] == b"1000"


class SlowGate:
    """Records the order of its calls; customer ``slow`` takes a while at Redis."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def wants(self, event: ev.Event) -> bool:
        return True

    async def record(self, event: ev.Event) -> None:
        if event.customer_id == "slow":
            await asyncio.sleep(0.05)
        self.calls.append(("record", event.event_id))

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, segment: str | None
    ) -> list[Decision]:
        self.calls.append(("decide", candidates[0].instance))
        return [Decision(c, "contact", (), now_ms) for c in candidates]


def test_ledger_work_keeps_each_customers_order_and_overlaps_customers() -> None:
    gate = SlowGate()
    publisher = Publisher()
    processor = Processor(
        TinyCore(),
        Stores(DictStore(), DictStore(), DictStore()),
        Clock("event"),
        gate,
        publisher,
        Metrics(),
    )

    def visit(cid: str, eid: str, at: int) -> ev.Visit:
        return ev.Visit(
            event_id=eid, customer_id=cid, occurred_at_ms=at, venue="v", sentiment="positive"
        )

    async def scenario() -> None:
        await processor.apply_event("usage", 0, 0, visit("slow", "s1", 1_000))
        await processor.apply_event("usage", 0, 1, visit("fast", "f1", 1_001))
        await processor.apply_event("usage", 0, 2, visit("slow", "s2", 1_002))
        await processor.flush()

    asyncio.run(scenario())
    slow = [c for c in gate.calls if c[1].startswith("s")]
    assert slow == [("record", "s1"), ("decide", "s1"), ("record", "s2"), ("decide", "s2")]
    # The other customer did not wait behind the slow one.
    assert gate.calls.index(("decide", "f1")) < gate.calls.index(("record", "s1"))
    assert [d.candidate.instance for d in publisher.sent if d.candidate.customer_id == "slow"] == [
        "s1",
        "s2",
    ]


def test_a_sealed_batch_writes_only_its_own_state_while_the_next_is_applied() -> None:
    writes: list[tuple[str, bytes]] = []
    stores = _logged_stores(writes)
    publisher = HeldPublisher()
    processor = _processor(publisher, stores)

    async def scenario() -> None:
        await processor.apply_event("usage", 0, 0, _visit("e0", 1_000))
        first = processor.seal()
        # The next batch is applied before the first is settled: it sees the first's state.
        await processor.apply_event("usage", 0, 1, _visit("e1", 1_001))
        second = processor.seal()
        finishing = asyncio.ensure_future(processor.finish(first))
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(publisher.sent) == 2 and writes == []  # the first decision is not acked
        publisher.acks[0].set_result(None)
        await finishing
        # Written: the first batch's record, its due entry and its stream time; nothing of
        # the second batch, whose decision is still unacknowledged.
        assert orjson.loads(stores.customers[b"c1"]) == {
            "ids": ["e0"],
            "offsets": {"usage": 0},
            "due": 1_010,
            "fired": [],
        }
        assert stores.clock[b"0"] == b"1000"
        assert processor.pending_partitions() == {0}
        finishing = asyncio.ensure_future(processor.finish(second))
        await asyncio.sleep(0)
        assert not finishing.done()
        publisher.acks[1].set_result(None)
        await finishing

    asyncio.run(scenario())
    assert orjson.loads(stores.customers[b"c1"])["ids"] == ["e0", "e1"]
    assert stores.clock[b"0"] == b"1001"
    assert processor.pending_partitions() == set()


class FirstSlowGate(SlowGate):
    """Only event ``s1`` takes a while at Redis."""

    async def record(self, event: ev.Event) -> None:
        if event.event_id == "s1":
            await asyncio.sleep(0.05)
        self.calls.append(("record", event.event_id))


def test_ledger_work_keeps_a_customers_order_across_sealed_batches() -> None:
    gate = FirstSlowGate()
    processor = Processor(
        TinyCore(),
        Stores(DictStore(), DictStore(), DictStore()),
        Clock("event"),
        gate,
        Publisher(),
        Metrics(),
    )

    def visit(eid: str, at: int) -> ev.Visit:
        return ev.Visit(
            event_id=eid, customer_id="slow", occurred_at_ms=at, venue="v", sentiment="positive"
        )

    async def scenario() -> None:
        await processor.apply_event("usage", 0, 0, visit("s1", 1_000))
        first = processor.seal()
        await processor.apply_event("usage", 0, 1, visit("s2", 1_001))
        second = processor.seal()
        await processor.finish(first)
        await processor.finish(second)

    asyncio.run(scenario())
    assert gate.calls == [("record", "s1"), ("decide", "s1"), ("record", "s2"), ("decide", "s2")]


def test_revoking_a_partition_drops_its_sealed_writes() -> None:
    stores = Stores(DictStore(), DictStore(), DictStore())
    processor = _processor(Publisher(), stores)

    async def scenario() -> None:
        await processor.apply_event("usage", 0, 0, _visit("e0", 1_000))
        sealed = processor.seal()
        processor.drop_partitions({0})
        assert processor.pending_partitions() == set()
        await processor.finish(sealed)

    asyncio.run(scenario())
    assert stores.customers == {} and stores.due == {} and stores.clock == {}


def test_a_due_entry_older_than_its_record_leaves_the_record_alone() -> None:
    # After a crash the due table can lag the customers table: the restored index holds an
    # entry for a time the record no longer has anything due at.
    writes: list[tuple[str, bytes]] = []
    stores = _logged_stores(writes)
    publisher = Publisher()
    processor = _processor(publisher, stores)

    def other(eid: str, at: int) -> ev.Visit:
        return ev.Visit(
            event_id=eid, customer_id="c2", occurred_at_ms=at, venue="v", sentiment="positive"
        )

    async def scenario() -> None:
        await processor.on_event("usage", 0, 0, _visit("e0", 1_000))  # c1 due at 1,010
        processor.due_index.set(0, b"c1", 1_005)  # as restored from a lagging due table
        writes.clear()
        await processor.on_event("usage", 0, 1, other("o1", 1_007))  # stream time 1,007

    asyncio.run(scenario())
    assert ("customers", b"c1") not in writes  # the record was not settled again
    assert ("due", b"c1") in writes and orjson.loads(stores.due[b"c1"]) == [0, 1_010]
    assert processor.due_index.get(0, b"c1") == 1_010
    assert [d.candidate.trigger for d in publisher.sent] == ["visit", "visit"]
