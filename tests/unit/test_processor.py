"""The processing shell with a stand-in core: replay skips, decisions before state, due items.

The real trigger core has its own tests; here a tiny core makes the shell's ordering visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streams import events as ev
from streams.clock import Clock
from streams.decisions import Candidate, Decision
from streams.metrics import Metrics
from streams.processor import ContactAll, Processor, Stores


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
    successor.restore_partitions({0})
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


def test_contact_all_orders_by_priority_then_trigger() -> None:
    async def run() -> list[str]:
        cands: Sequence[Candidate] = [
            Candidate("c", "b", "1", "a", "email", "marketing", 10, (), 0),
            Candidate("c", "a", "1", "a", "email", "marketing", 10, (), 0),
            Candidate("c", "z", "1", "a", "email", "service", 100, (), 0),
        ]
        return [d.candidate.trigger for d in await ContactAll().decide(cands, 0)]

    assert asyncio.run(run()) == ["z", "a", "b"]
