"""The shell's part of outcome measurement (streams/kafka/processor.py with the real core): a
pending goal is kept for every decided candidate, whatever its arm, and one outcome record is
published when the goal is met or expires, with the arm the gate decided; the record that no
longer holds the goal is written only after the outcome is acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streams.core import goals
from streams.core.adapter import BoundCore
from streams.core.clock import Clock
from streams.core.decisions import NOBODY, Arm, Candidate, Decision, Recipient
from streams.core.events import Event
from streams.core.state import CustomerState
from streams.core.timeutil import format_ms
from streams.kafka.processor import Processor, Stores
from streams.ops.metrics import Metrics
from streams.testing import Story, params_for
from tests.unit.test_schemas import VALIDATORS

PARAMS = params_for(["replacement_due", "never_activated"])
LATE_DAYS = PARAMS.lateness_ms / 86_400_000


class Gate:
    """Decides by a table of arms (default contact) and remembers its decisions, like the
    ledger: a decision id decided before gets its first result back."""

    def __init__(self, arms: dict[str, str] | None = None) -> None:
        self.arms = arms or {}
        self.decided: dict[str, Decision] = {}
        self.recalls: list[list[str]] = []
        self.forget = False

    async def record(self, event: Event) -> None:
        return None

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, recipient: Recipient = NOBODY
    ) -> list[Decision]:
        out = []
        for c in candidates:
            if c.decision_id not in self.decided:
                outcome = self.arms.get(c.trigger, "contact")
                self.decided[c.decision_id] = Decision(c, outcome, (), now_ms, "push")
            out.append(self.decided[c.decision_id])
        return out

    async def recall(self, customer_id: str, decision_ids: Sequence[str]) -> dict[str, Arm]:
        self.recalls.append(list(decision_ids))
        if self.forget:
            return {}
        return {
            i: Arm(self.decided[i].outcome, self.decided[i].channel)
            for i in decision_ids
            if i in self.decided
        }


class Out:
    """Collects what is published; ``fail`` makes the next sends fail (a broker gone)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.outcomes: list[tuple[bytes, dict[str, Any]]] = []
        self.fail_outcomes = False

    @staticmethod
    def _done() -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def decision(self, d: Decision) -> Any:
        self.decisions.append(d)
        return self._done()

    async def outcome(self, key: bytes, value: bytes) -> Any:
        if self.fail_outcomes:
            raise ConnectionError("broker gone")
        self.outcomes.append((key, orjson.loads(value)))
        return self._done()


def processor(gate: Gate, out: Out, stores: Stores, metrics: Metrics | None = None) -> Processor:
    return Processor(
        BoundCore(PARAMS),
        stores,
        Clock("event"),
        gate,
        out.decision,
        metrics or Metrics(),
        publish_outcome=out.outcome,
    )


def new_stores() -> Stores:
    return Stores({}, {}, {})  # type: ignore[arg-type]


def feed(p: Processor, events: list[tuple[str, Event]], first_offset: int = 0) -> None:
    async def run() -> None:
        for n, (kind, event) in enumerate(events, first_offset):
            await p.on_event(kind, 0, n, event)

    asyncio.run(run())


def filter_story(customer: str = "cust-1") -> tuple[Story, list[tuple[str, Event]]]:
    """An air filter bought on day 0 (replacement due around day 90), and the clock moved to
    day 95 by a purchase of another category (the clock's moves are such purchases)."""
    story = Story(params=PARAMS, customer_id=customer)
    events: list[tuple[str, Event]] = [
        ("usage", story.event("purchase", 0, product_category="air_filter", amount=19.99)),
        ("usage", story.event("purchase", 95, product_category="socks", amount=5)),
    ]
    return story, events


def decided(
    gate: Gate, metrics: Metrics | None = None
) -> tuple[Out, Stores, Processor, Story, list[tuple[str, Event]]]:
    """A processor over new stores that has decided ``filter_story``'s replacement_due
    (offsets 0 and 1 of partition 0 applied)."""
    out, stores = Out(), new_stores()
    p = processor(gate, out, stores, metrics)
    story, events = filter_story()
    feed(p, events)
    return out, stores, p, story, events


def test_a_converted_decision_gets_one_outcome_with_its_arm_and_the_goal_event() -> None:
    gate = Gate({"replacement_due": "holdout"})
    out, stores, p, story, events = decided(gate)
    [decision] = out.decisions
    assert decision.candidate.trigger == "replacement_due" and not out.outcomes
    converting = story.event("purchase", 100, product_category="air_filter", amount=21.5)
    feed(p, [("usage", converting)], first_offset=2)
    [(key, record)] = out.outcomes
    assert key == b"cust-1"
    VALIDATORS["decision_outcome"].validate(record)
    assert record["decision_id"] == decision.decision_id
    assert record["arm"] == "holdout" and record["channel"] == "push"
    assert record["converted"] is True
    assert record["converting_event_id"] == converting.event_id
    assert record["value"] == 21.5
    assert record["action"] == decision.candidate.action
    assert gate.recalls == [[decision.decision_id]]
    # The record no longer holds the goal: more purchases publish nothing more.
    feed(p, [("usage", story.event("purchase", 104, product_category="air_filter", amount=1))], 3)
    feed(p, [("usage", story.event("purchase", 200, product_category="socks", amount=1))], 4)
    assert len(out.outcomes) == 1


def test_a_goal_not_met_resolves_unconverted_when_the_window_and_lateness_have_passed() -> None:
    gate = Gate()
    out, stores, p, story, events = decided(gate)
    [decision] = out.decisions
    decided_day = story.day(decision.decided_at_ms)
    window_end_day = decided_day + 30
    # A purchase of another category inside the window converts nothing; the clock just short
    # of the window end plus the lateness resolves nothing either.
    short = window_end_day + LATE_DAYS - 0.01
    feed(p, [("usage", story.event("purchase", short, product_category="socks", amount=5))], 2)
    assert out.outcomes == []
    feed(p, [("usage", story.event("purchase", short + 0.02, product_category="x", amount=5))], 3)
    [(_, record)] = out.outcomes
    assert record["converted"] is False and record["arm"] == "contact"
    assert "converted_at" not in record and "value" not in record
    assert record["window_end"] == story_time(story, window_end_day)


def story_time(story: Story, day: float) -> str:
    return format_ms(story.at(day))


def test_a_late_goal_event_within_the_lateness_still_converts() -> None:
    gate = Gate()
    out, stores, p, story, events = decided(gate)
    [decision] = out.decisions
    end = story.day(decision.decided_at_ms) + 30
    # Stream time moves past the window end, within the lateness; then a purchase stamped
    # inside the window arrives late.
    feed(
        p,
        [("usage", story.event("purchase", end + LATE_DAYS / 2, product_category="x", amount=1))],
        2,
    )
    late = story.event("purchase", end - 1, product_category="air_filter", amount=3)
    feed(p, [("usage", late)], 3)
    [(_, record)] = out.outcomes
    assert record["converted"] is True and record["converting_event_id"] == late.event_id


def test_outcomes_are_published_for_every_arm_and_counted() -> None:
    metrics = Metrics()
    gate = Gate({"replacement_due": "suppressed"})
    out, stores, p, story, _ = decided(gate, metrics)
    feed(p, [("usage", story.event("purchase", 200, product_category="socks", amount=5))], 2)
    [(_, record)] = out.outcomes
    assert record["arm"] == "suppressed" and record["converted"] is False
    assert metrics.outcomes.labels("replacement_due", "suppressed", "false")._value.get() == 1


def test_a_failed_outcome_send_writes_no_state_and_a_replay_publishes_the_same_record() -> None:
    gate = Gate()
    out, stores, p, story, events = decided(gate)
    before = dict(stores.customers)  # type: ignore[call-overload]
    converting = ("usage", story.event("purchase", 100, product_category="air_filter", amount=2))
    out.fail_outcomes = True
    with pytest.raises(ConnectionError):
        feed(p, [converting], first_offset=2)
    assert dict(stores.customers) == before  # type: ignore[call-overload]
    # The input is read again by a fresh worker over the same stores and ledger.
    out.fail_outcomes = False
    p2 = processor(gate, out, stores)
    asyncio.run(p2.restore_partitions({0}))
    feed(p2, [converting], first_offset=2)
    [(_, record)] = out.outcomes
    assert record["converted"] is True
    # And once written, the same input again (a replay after the write) publishes nothing.
    p3 = processor(gate, out, stores)
    asyncio.run(p3.restore_partitions({0}))
    feed(p3, [*events, converting])
    assert len(out.outcomes) == 1


def test_a_decision_the_ledger_forgot_is_counted_not_published() -> None:
    metrics = Metrics()
    gate = Gate()
    out, stores, p, story, events = decided(gate, metrics)
    gate.forget = True
    feed(p, [("usage", story.event("purchase", 100, product_category="air_filter", amount=2))], 2)
    assert out.outcomes == []
    assert metrics.outcomes_unattributed.labels("replacement_due")._value.get() == 1


def test_without_an_outcome_publisher_no_goal_is_kept() -> None:
    gate, out, stores = Gate(), Out(), new_stores()
    p = Processor(BoundCore(PARAMS), stores, Clock("event"), gate, out.decision, Metrics())
    feed(p, filter_story()[1])
    assert len(out.decisions) == 1
    state = CustomerState.from_bytes(stores.customers[b"cust-1"])  # type: ignore[index]
    assert "goals" not in state.ext and "goals" not in state.slices


def test_the_bound_on_pending_goals_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound itself is the core's (tests/unit/test_goals.py); here, that the shell counts
    # what it drops. A customer keeps at most 6 cards, so the bound is lowered to 4.
    monkeypatch.setattr(goals, "MAX_PENDING_GOALS", 4)
    metrics = Metrics()
    gate, out, stores = Gate(), Out(), new_stores()
    p = processor(gate, out, stores, metrics)
    story = Story(params=PARAMS)
    events: list[tuple[str, Event]] = [
        ("account", story.event("account_opened", 0, account_id=f"cc{i}",
                                account_type="credit_card"))
        for i in range(6)
    ]  # fmt: skip
    events.append(("usage", story.event("purchase", 95, product_category="socks", amount=5)))
    feed(p, events)
    assert len(out.decisions) == 6
    assert metrics.goals_dropped._value.get() == 2
    # The 4 kept resolve; the 2 dropped never do.
    feed(p, [("usage", story.event("purchase", 200, product_category="socks", amount=5))], 7)
    assert len(out.outcomes) == 4


class ForgetfulCore(BoundCore):
    """The core after a plugin trigger was uninstalled: its pending goals are still in the
    records, but the catalogue no longer describes it."""

    def describe(self, trigger: str) -> tuple[str, str] | None:
        return None if trigger == "replacement_due" else super().describe(trigger)


def test_a_goal_of_a_trigger_no_longer_installed_is_counted_not_a_failure() -> None:
    metrics = Metrics()
    gate = Gate()
    out, stores, p, story, events = decided(gate, metrics)
    p2 = Processor(
        ForgetfulCore(PARAMS), stores, Clock("event"), gate, out.decision, metrics,
        publish_outcome=out.outcome,
    )  # fmt: skip
    asyncio.run(p2.restore_partitions({0}))
    feed(p2, [("usage", story.event("purchase", 100, product_category="air_filter", amount=2))], 2)
    assert out.outcomes == []
    assert metrics.outcomes_unattributed.labels("replacement_due")._value.get() == 1
    state = CustomerState.from_bytes(stores.customers[b"cust-1"])  # type: ignore[index]
    assert goals.pending(state) == []  # resolved and gone: nothing left to fail again


def test_outcomes_are_counted_once_when_their_batch_fails_and_is_read_again() -> None:
    metrics = Metrics()
    gate = Gate()
    out, stores, p, story, events = decided(gate, metrics)
    # One batch converts the goal and makes a decision whose acknowledgement fails.
    failing: asyncio.Future[None] | None = None

    async def decision_then_fail(d: Decision) -> Any:
        nonlocal failing
        failing = asyncio.get_running_loop().create_future()
        failing.set_exception(ConnectionError("broker gone"))
        return failing

    batch = [
        ("usage", story.event("purchase", 100, product_category="air_filter", amount=2)),
        *[("account", story.event("account_opened", 101, account_id="cc1",
                                  account_type="credit_card"))],
        ("usage", story.event("purchase", 195, product_category="socks", amount=5)),
    ]  # fmt: skip
    p_fail = Processor(
        BoundCore(PARAMS), stores, Clock("event"), gate, decision_then_fail, metrics,
        publish_outcome=out.outcome,
    )  # fmt: skip
    asyncio.run(p_fail.restore_partitions({0}))

    async def apply_all(proc: Processor) -> None:
        for n, (kind, event) in enumerate(batch, 2):
            proc.apply_event_nowait(kind, 0, n, event)
        await proc.flush()

    with pytest.raises(ConnectionError):
        asyncio.run(apply_all(p_fail))
    counter = metrics.outcomes.labels("replacement_due", "contact", "true")
    assert counter._value.get() == 0  # the batch was not written: nothing counted
    p2 = processor(gate, out, stores, metrics)
    asyncio.run(p2.restore_partitions({0}))
    asyncio.run(apply_all(p2))
    assert counter._value.get() == 1
