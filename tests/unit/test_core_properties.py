"""Hypothesis properties of the pure core: order, ticks, replays and size.

(a) Arrival order within the allowed lateness does not change the decisions, and neither does
    how often the clock ticks. Precisely what docs/contract.md promises under "Lateness" (an
    event up to 7 days behind its partition's stream time still takes part in every trigger;
    data that arrives later fires nothing that contradicts a decision already published):
    - Feeding a customer's events in any order in which each arrives at most the lateness behind
      the stream time, then advancing the clock to the end, gives exactly the (trigger,
      instance) set of feeding them in event-time order -
    - except that an event-instant decision already published is not withdrawn by a later
      arrival. Of the event-instant triggers, ``renewal_after_positive_visit`` has an exclusion
      that a late event can bring (a complaint in the 30 days before the visit, or a contract
      event that was in force at the visit): the permuted run may then hold extra offers, each
      explained by such an event arriving after its visit, and never fewer. The savings pair
      would have the same caveat for a late debit or balance that regroups a drop already
      published (drops are then pinned, see streams/core/triggers/savings.py); the generator keeps
      balances more than the lateness before the bursts and makes every burst cross the
      threshold only as a whole, so the equality is exact for them.
    - Feeding in event-time order with the clock advanced at every due time (the shell) gives
      the same set as advancing only at the end: time-based occurrences are evaluated as of
      their due time.
(b) Replaying any prefix of the stream again (repeated event ids, the crash-replay case) leaves
    the state byte-for-byte unchanged and fires nothing; the end state and the decision ids are
    those of the uninterrupted run.
(c) The serialized state stays bounded over arbitrarily long, dense histories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.config import default_trigger_params
from streams.core import events as ev
from streams.core.decisions import Candidate
from streams.core.engine import advance, next_due_ms, step
from streams.core.state import CustomerState
from streams.core.timeutil import parse_rfc3339_ms

DAY = 86_400_000
T0 = parse_rfc3339_ms("2026-01-05T00:00:00Z") or 0
PARAMS = default_trigger_params()
LATENESS = PARAMS.lateness_ms
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

Draw = Callable[[st.SearchStrategy[Any]], Any]


@dataclass
class Spec:
    """An event before it gets its id and exact time."""

    cls: type[ev.Event]
    day: float
    fields: dict[str, Any]


def _days(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _savings(draw: Draw) -> list[Spec]:
    balance = draw(st.integers(900_000, 3_000_000))
    specs = [
        Spec(
            ev.Balance,
            day,
            {"account_id": "sav", "account_type": "savings", "balance_cents": balance},
        )
        for day in range(0, 92, 7)  # the last one > lateness before any burst
    ]
    debit = {
        "account_id": "sav",
        "account_type": "savings",
        "direction": "debit",
        "rail": "internal",
    }
    for j in range(draw(st.integers(0, 3))):
        start = 100 + 25 * j + draw(_days(0, 5))
        if draw(st.booleans()):
            # One debit: a drop or not, by itself.
            amounts = [int(balance * draw(st.floats(0.3, 0.8)))]
            days = [start]
        else:
            # Two debits within the window, each below the threshold: only together (if at all).
            amounts = [int(balance * draw(st.floats(0.1, 0.49))) for _ in range(2)]
            days = [start, start + draw(_days(0, 3))]
        specs += [
            Spec(ev.Transaction, d, {**debit, "amount_cents": a})
            for d, a in zip(days, amounts, strict=True)
        ]
        total = sum(amounts)
        for kind in ("credit", "wire"):
            if draw(st.booleans()):
                fields = {
                    "account_id": "chk",
                    "account_type": "checking",
                    "amount_cents": max(1, int(total * draw(st.floats(0.5, 1.2)))),
                    "direction": "credit" if kind == "credit" else "debit",
                    "rail": "internal" if kind == "credit" else "wire",
                }
                specs.append(Spec(ev.Transaction, days[-1] + draw(_days(-10, 10)), fields))
    return specs


def _contracts(draw: Draw) -> list[Spec]:
    specs: list[Spec] = []
    start = draw(_days(0, 300))
    expires = start + draw(_days(20, 200))
    auto = draw(st.booleans())
    product = "annual_pass"
    base = {"contract_id": "k1", "product": product, "auto_renew": auto}
    specs.append(
        Spec(
            ev.Contract,
            start,
            {**base, "status": "active", "expires_at_ms": T0 + int(expires * DAY)},
        )
    )
    change = draw(st.sampled_from(["none", "renewed", "cancelled", "charged"]))
    at = start + draw(_days(1, expires - start + 10))
    if change == "renewed":
        specs.append(
            Spec(
                ev.Contract,
                at,
                {**base, "status": "renewed", "expires_at_ms": T0 + int((expires + 365) * DAY)},
            )
        )
    elif change == "cancelled":
        specs.append(
            Spec(
                ev.Contract,
                at,
                {**base, "status": "cancelled", "expires_at_ms": T0 + int(expires * DAY)},
            )
        )
    elif change == "charged":
        specs.append(
            Spec(
                ev.AutoRenewCharged,
                at,
                {
                    "contract_id": "k1",
                    "amount_cents": 9_900,
                    "expires_at_ms": T0 + int((expires + 365) * DAY),
                },
            )
        )
    for _ in range(draw(st.integers(0, 4))):
        fields: dict[str, Any] = {
            "venue": "zoo",
            "sentiment": draw(st.sampled_from(["positive", "positive", "neutral"])),
        }
        if draw(st.booleans()):
            fields["contract_id"] = "k1"
        specs.append(Spec(ev.Visit, draw(_days(0, 500)), fields))
    for _ in range(draw(st.integers(0, 2))):
        specs.append(Spec(ev.Complaint, draw(_days(0, 500)), {"category": "billing"}))
    for _ in range(draw(st.integers(0, 3))):
        used = draw(st.sampled_from([product, "other"]))
        specs.append(
            Spec(ev.ProductUsage, draw(_days(0, 500)), {"product": used, "activity": "login"})
        )
    return specs


def _cards(draw: Draw) -> list[Spec]:
    opened = draw(_days(0, 200))
    card = {"account_id": "cc", "account_type": "credit_card"}
    specs = [Spec(ev.AccountOpened, opened, dict(card))]
    for _ in range(draw(st.integers(0, 4))):
        specs.append(
            Spec(
                ev.Transaction,
                opened + draw(_days(0, 500)),
                {**card, "direction": "debit", "amount_cents": 1_000, "rail": "card"},
            )
        )
    for i in range(draw(st.integers(0, 8))):
        paid = draw(st.booleans())
        specs.append(
            Spec(
                ev.Statement,
                opened + 20 + 30 * i + draw(_days(0, 5)),
                {
                    "account_id": "cc",
                    "statement_balance_cents": 10_000,
                    "amount_paid_cents": 10_000 if paid else 100,
                    "minimum_due_cents": 100,
                },
            )
        )
    if draw(st.booleans()):
        specs.append(Spec(ev.AccountClosed, opened + draw(_days(0, 600)), dict(card)))
    return specs


def _purchases(draw: Draw) -> list[Spec]:
    specs: list[Spec] = []
    for category in draw(
        st.lists(st.sampled_from(["air_filter", "holiday", "coffee"]), unique=True)
    ):
        day = draw(_days(0, 100))
        for _ in range(draw(st.integers(1, 5))):
            specs.append(
                Spec(ev.Purchase, day, {"product_category": category, "amount_cents": 500})
            )
            day += draw(st.sampled_from([20, 60, 90, 200, 340, 365, 390, 400])) + draw(_days(0, 1))
    return specs


@st.composite
def histories(draw: Draw) -> list[ev.Event]:
    """One customer's events in event-time order: any mix of the four families."""
    specs: list[Spec] = []
    for family in (_savings, _contracts, _cards, _purchases):
        if draw(st.booleans()):
            specs += family(draw)
    specs.sort(key=lambda s: s.day)
    return [
        # distinct times (ties are legal but make "event-time order" ambiguous for the oracle)
        s.cls(
            event_id=f"e{i}",
            customer_id="cust",
            occurred_at_ms=T0 + int(s.day * DAY) + i,
            **s.fields,
        )
        for i, s in enumerate(specs)
    ]


@st.composite
def late_arrivals(draw: Draw) -> tuple[list[ev.Event], list[ev.Event]]:
    """A history and an arrival order in which each event is at most the lateness behind."""
    events = draw(histories())
    delays = draw(st.lists(st.integers(0, LATENESS), min_size=len(events), max_size=len(events)))
    # Event i arrives at t_i + delay_i: stream time then is <= t_i + delay_i <= t_i + lateness.
    order = sorted(range(len(events)), key=lambda i: (events[i].occurred_at_ms + delays[i], i))
    return events, [events[i] for i in order]


# --- runners ----------------------------------------------------------------------------------


def end_of(events: list[ev.Event]) -> int:
    return max((e.occurred_at_ms for e in events), default=T0) + 900 * DAY


def run_then_advance(events: list[ev.Event]) -> tuple[CustomerState | None, list[Candidate]]:
    """Step every event at the stream time as it arrives; advance the clock once, at the end."""
    state: CustomerState | None = None
    fired: list[Candidate] = []
    now = T0
    for event in events:
        now = max(now, event.occurred_at_ms)
        result = step(state, event, now, PARAMS)
        state, fired = result.state, fired + result.candidates
    if state is not None:
        result = advance(state, end_of(events), PARAMS)
        state, fired = result.state, fired + result.candidates
    return state, fired


class Shell:
    """Like the worker: advance at every due time before an event, step, advance at now."""

    def __init__(self) -> None:
        self.state: CustomerState | None = None
        self.fired: list[Candidate] = []
        self.now = T0

    def tick(self, until: int, *, inclusive: bool = True) -> None:
        while self.state is not None and (due := next_due_ms(self.state)) is not None:
            if due > until or (due == until and not inclusive):
                break
            result = advance(self.state, due, PARAMS)
            self.state, self.fired = result.state, self.fired + result.candidates

    def send(self, event: ev.Event) -> list[Candidate]:
        self.tick(event.occurred_at_ms, inclusive=False)
        self.now = max(self.now, event.occurred_at_ms)
        result = step(self.state, event, self.now, PARAMS)
        self.state, self.fired = result.state, self.fired + result.candidates
        self.tick(self.now)
        return result.candidates


def keys(fired: list[Candidate]) -> set[tuple[str, str]]:
    return {(c.trigger, c.instance) for c in fired}


# --- (a) order and ticks ----------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(late_arrivals())
def test_arrival_order_within_lateness_gives_the_same_decisions(
    case: tuple[list[ev.Event], list[ev.Event]],
) -> None:
    in_time, arrived = case
    # Given the same events in event-time order and in a late-arrival order
    _, ordered = run_then_advance(in_time)
    _, permuted = run_then_advance(arrived)
    # Then nothing is missing and nothing fires twice: every occurrence fires at most once
    assert len(permuted) == len(keys(permuted))
    assert keys(ordered) <= keys(permuted)
    # ... and the only extras are renewal offers a later-arriving event would have excluded
    position = {e.event_id: i for i, e in enumerate(arrived)}
    by_id = {e.event_id: e for e in in_time}
    for trigger, instance in keys(permuted) - keys(ordered):
        assert trigger == "renewal_after_positive_visit", (trigger, instance)
        visit = by_id[instance.split("|")[0]]
        explaining = [
            e
            for e in in_time
            if isinstance(e, ev.Complaint | ev.Contract | ev.AutoRenewCharged)
            and e.occurred_at_ms <= visit.occurred_at_ms
            and position[e.event_id] > position[visit.event_id]
        ]
        assert explaining, instance


@PROPERTY_SETTINGS
@given(histories())
def test_how_often_the_clock_ticks_does_not_matter(events: list[ev.Event]) -> None:
    # Given a history fed in event-time order, once with the clock advanced at every due time
    # (the shell) and once with it advanced only at the end
    shell = Shell()
    for event in events:
        shell.send(event)
    shell.tick(end_of(events))
    _, at_end = run_then_advance(events)
    # Then the same occurrences fire at the same event times: each time-based one is evaluated
    # as of its due time, whatever the clock did in between. (Evidence may be thinner when the
    # clock lags months behind: ids of superseded purchases are not kept, to stay small.)
    assert keys(shell.fired) == keys(at_end)
    assert sorted(map(_no_evidence, shell.fired)) == sorted(map(_no_evidence, at_end))


def _no_evidence(c: Candidate) -> tuple[str, str, int, str, str, int]:
    return (c.trigger, c.instance, c.triggered_at_ms, c.action, c.channel, c.priority)


def _key(c: Candidate) -> tuple[str, str]:
    return (c.trigger, c.instance)


# --- (b) replays ------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(histories(), st.data())
def test_replaying_a_prefix_changes_nothing(events: list[ev.Event], data: st.DataObject) -> None:
    if not events:
        return
    # Given a shell run that, after event j, sees events 0..k (k <= j) delivered again
    j = data.draw(st.integers(0, len(events) - 1))
    k = data.draw(st.integers(0, j))
    reference = Shell()
    for event in events:
        reference.send(event)
    reference.tick(end_of(events))
    crashed = Shell()
    for event in events[: j + 1]:
        crashed.send(event)
    assert crashed.state is not None
    for event in events[: k + 1]:
        before = crashed.state.to_bytes()
        result = step(crashed.state, event, crashed.now, PARAMS)
        # Then each repeat leaves the state byte-for-byte as it was and fires nothing (a recent
        # one is recognised by its id; an older one finds its data already there, or too old)
        assert result.candidates == []
        assert result.state.to_bytes() == before
        crashed.state = result.state
    for event in events[j + 1 :]:
        crashed.send(event)
    crashed.tick(end_of(events))
    # ... and the run ends in the same state with the same decision ids
    assert crashed.state is not None and reference.state is not None
    assert crashed.state.to_bytes() == reference.state.to_bytes()
    assert [c.decision_id for c in crashed.fired] == [c.decision_id for c in reference.fired]


# --- (c) size -----------------------------------------------------------------------------------

KINDS: list[tuple[type[ev.Event], Callable[[int], dict[str, Any]]]] = [
    (
        ev.Balance,
        lambda n: {
            "account_id": f"s{n % 2}",
            "account_type": "savings",
            "balance_cents": 2_000_000 + n,
        },
    ),
    (
        ev.Transaction,
        lambda n: {
            "account_id": f"s{n % 2}",
            "account_type": "savings",
            "direction": "debit",
            "amount_cents": 100_000 + n,
            "rail": "internal",
            "balance_after_cents": 1_000_000,
        },
    ),
    (
        ev.Transaction,
        lambda n: {
            "account_id": "chk",
            "account_type": "checking",
            "direction": "credit",
            "amount_cents": 1_000 + n,
            "rail": "internal",
        },
    ),
    (
        ev.Transaction,
        lambda n: {
            "account_id": f"cc{n % 3}",
            "account_type": "credit_card",
            "direction": "debit",
            "amount_cents": 100,
            "rail": "card",
        },
    ),
    (
        ev.Statement,
        lambda n: {
            "account_id": f"cc{n % 3}",
            "statement_balance_cents": 100,
            "amount_paid_cents": n % 200,
            "minimum_due_cents": 1,
        },
    ),
    (
        ev.Contract,
        lambda n: {
            "contract_id": f"k{n % 3}",
            "product": f"p{n % 4}",
            "status": "active",
            "expires_at_ms": T0 + (n % 900) * DAY,
            "auto_renew": n % 2 == 0,
        },
    ),
    (ev.Visit, lambda n: {"venue": f"p{n % 4}", "sentiment": "positive"}),
    (ev.ProductUsage, lambda n: {"product": f"p{n % 5}", "activity": "login"}),
    (ev.Complaint, lambda n: {"category": "x"}),
    (ev.Purchase, lambda n: {"product_category": f"cat{n % 5}", "amount_cents": 100}),
    (ev.Consent, lambda n: {"channel": "email", "status": "opted_out" if n % 2 else "opted_in"}),
    (ev.AccountOpened, lambda n: {"account_id": f"cc{n % 3}", "account_type": "credit_card"}),
]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, len(KINDS) - 1), min_size=50, max_size=50),
    st.integers(800, 1_600),
    st.integers(0, 2**16),
)
def test_state_size_stays_bounded_over_long_histories(
    pattern: list[int], count: int, seed: int
) -> None:
    # Given years of dense, arbitrary activity (hundreds to thousands of events, several
    # accounts, contracts, categories), fed like the shell feeds them
    shell = Shell()
    sizes: list[int] = []
    for n in range(count):
        cls, fields = KINDS[pattern[(n * 7 + seed) % len(pattern)]]
        day = n * 1.3  # about 3 years for 800 events, 6 for 1,600
        event = cls(
            event_id=f"x{n}", customer_id="cust", occurred_at_ms=T0 + int(day * DAY), **fields(n)
        )
        shell.send(event)
        assert shell.state is not None
        sizes.append(len(shell.state.to_bytes()))
    # Then the record never grows past a fixed bound (pruned by time, capped by count) and the
    # second half of the history is no larger than the first: no growth with history length
    assert max(sizes) <= 12_288, max(sizes)
    half = len(sizes) // 2
    assert max(sizes[half:]) <= max(sizes[:half]) + 1_024, (max(sizes[:half]), max(sizes[half:]))


# --- (e) owned states -------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(histories())
def test_an_owned_state_updated_in_place_ends_as_the_copied_one(events: list[ev.Event]) -> None:
    # Given the same history fed once with defensive copies and once handing the state over
    copied: CustomerState | None = None
    owned: CustomerState | None = None
    fired_copied: list[Candidate] = []
    fired_owned: list[Candidate] = []
    for event in events:
        before = None if copied is None else copied.to_bytes()
        result = step(copied, event, event.occurred_at_ms, PARAMS)
        # the caller's state is left as it was without ``owned``
        assert before is None or copied is None or copied.to_bytes() == before
        copied, fired_copied = result.state, fired_copied + result.candidates
        result = step(owned, event, event.occurred_at_ms, PARAMS, owned=True)
        owned, fired_owned = result.state, fired_owned + result.candidates
    if copied is not None and owned is not None:
        end = max(e.occurred_at_ms for e in events) + 400 * 86_400_000
        late_copied = advance(copied, end, PARAMS)
        late_owned = advance(owned, end, PARAMS, owned=True)
        assert late_owned.state is owned
        fired_copied += late_copied.candidates
        fired_owned += late_owned.candidates
        # Then the same state and the same candidates
        assert late_owned.state.to_bytes() == late_copied.state.to_bytes()
    assert fired_owned == fired_copied


# --- (f) what the core skips ------------------------------------------------------------------


def _wire(event_id: str, day: int) -> ev.Event:
    """An outbound wire from checking: a follow-up kept without any savings account."""
    return ev.Transaction(
        event_id=event_id,
        customer_id="cust",
        occurred_at_ms=T0 + day * DAY,
        account_id="chk",
        account_type="checking",
        direction="debit",
        amount_cents=100_000,
        rail="wire",
    )


@PROPERTY_SETTINGS
@given(histories())
@example([_wire("w1", 0), _wire("w2", 1)])
def test_the_families_the_core_skips_would_have_changed_nothing(events: list[ev.Event]) -> None:
    # Given a history stepped event by event
    state: CustomerState | None = None
    for event in events:
        if state is not None:
            before = state.to_bytes()
            # Then a family not asked about an event type would not have folded it in
            asked = PARAMS.registry.families_for(type(event))
            for family in PARAMS.registry.families:
                if family not in asked:
                    probe = state.copy()
                    assert not family.apply(probe, event, PARAMS)
                    assert probe.to_bytes() == before
            # and a family without data has nothing due and nothing to prune, however far the
            # floor has moved
            for family in PARAMS.registry.families:
                if not family.holds_data(state):
                    assert family.due_items(state, PARAMS) == []
                    for floor in (state.floor_ms, end_of(events)):
                        moved = state.copy()
                        moved.floor_ms = floor
                        probe = moved.copy()
                        family.prune(probe, PARAMS)
                        assert probe.to_bytes() == moved.to_bytes()
        state = step(state, event, event.occurred_at_ms, PARAMS).state
