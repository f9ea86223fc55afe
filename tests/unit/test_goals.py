"""Goals (streams/core/goals.py): each goal on both sides of its window and threshold, late goal
events within and beyond the allowed lateness, explicit attribution, and the bound on pending
goals."""

from __future__ import annotations

from typing import Any

import pytest

from streams.config import build_config, default_trigger_params
from streams.core import goals
from streams.core.decisions import Candidate
from streams.core.engine import advance, next_due_ms, step, track_goals
from streams.core.events import (
    AccountOpened,
    AutoRenewCharged,
    Contract,
    Engagement,
    Event,
    ProductUsage,
    Purchase,
    Transaction,
    Visit,
)
from streams.core.state import ContractState, CustomerState, PinnedDrop, SavingsAccount
from streams.core.timeutil import format_ms
from streams.core.triggers import TriggerParams

DAY = 86_400_000
T0 = 1_780_000_000_000
PARAMS = default_trigger_params()
LATE = PARAMS.lateness_ms
_n = 0


def _id() -> str:
    global _n
    _n += 1
    return f"e-{_n}"


def customer() -> CustomerState:
    s = CustomerState("cust-1", T0 - LATE)
    s.savings["sav-1"] = SavingsAccount(
        drops=[PinnedDrop("deb-1", T0 - 3 * DAY, T0 - DAY, 100_000, ("deb-1",))]
    )
    s.contracts["ct-1"] = ContractState(
        product="gym", versions=[(T0 - 90 * DAY, "active", T0 + 20 * DAY, 0, "c-0")]
    )
    return s


def decide(s: CustomerState, trigger: str, instance: str, params: TriggerParams = PARAMS) -> str:
    c = Candidate("cust-1", trigger, instance, "a", "email", "marketing", 1, (), T0)
    track_goals(s, [c], T0, params)
    return c.decision_id


def txn(day: float, account: str, direction: str, cents: int) -> Transaction:
    account_type = "savings" if account.startswith("sav") else "credit_card"
    return Transaction(
        event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(day * DAY),
        account_id=account, account_type=account_type, direction=direction,
        amount_cents=cents, rail="internal",
    )  # fmt: skip


def opened(day: float, account_type: str) -> AccountOpened:
    return AccountOpened(
        event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(day * DAY),
        account_id="new-1", account_type=account_type,
    )  # fmt: skip


def outcome_after(s: CustomerState, *events: Event, expire_at: int | None = None) -> Any:
    for e in events:
        goals.observe(s, e)
    if expire_at is not None:
        goals.expire(s, expire_at, LATE)
    out = goals.take_outcomes(s)
    assert len(out) <= 1
    return out[0] if out else None


CASES = [
    # trigger, instance, converting event maker (day -> event), non-converting event maker
    ("savings_drop_to_checking", "sav-1|deb-1",
     lambda d: opened(d, "loan"), lambda d: opened(d, "investment")),
    ("savings_drop_to_wire", "sav-1|deb-1",
     lambda d: opened(d, "investment"), lambda d: opened(d, "loan")),
    ("savings_drop_to_wire", "sav-1|deb-1",
     lambda d: txn(d, "sav-1", "credit", 50_000), lambda d: txn(d, "sav-1", "credit", 49_999)),
    ("savings_drop_unexplained", "sav-1|deb-1",
     lambda d: txn(d, "sav-1", "credit", 50_000), lambda d: txn(d, "sav-2", "credit", 90_000)),
    ("lapsed_transactor", "card-1|2026-01-01T00:00:00Z|lapse",
     lambda d: txn(d, "card-1", "debit", 1_000), lambda d: txn(d, "card-1", "credit", 1_000)),
    ("lapsed_revolver", "card-1|2026-01-01T00:00:00Z|lapse",
     lambda d: txn(d, "card-1", "debit", 1_000), lambda d: txn(d, "card-2", "debit", 1_000)),
    ("never_activated", "card-1|never",
     lambda d: txn(d, "card-1", "debit", 1_000), lambda d: txn(d, "card-9", "debit", 1_000)),
    ("replacement_due", "filters|2026-01-01T00:00:00Z",
     lambda d: Purchase(event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(d * DAY),
                        product_category="filters", amount_cents=2_500),
     lambda d: Purchase(event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(d * DAY),
                        product_category="shoes", amount_cents=2_500)),
    ("usual_booking_missed", "haircut|2026-01-01T00:00:00Z",
     lambda d: Purchase(event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(d * DAY),
                        product_category="haircut", amount_cents=2_500),
     lambda d: Purchase(event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(d * DAY),
                        product_category="filters", amount_cents=2_500)),
    ("auto_renew_unused", f"ct-1|{format_ms(T0 + 20 * DAY)}|unused",
     lambda d: ProductUsage(event_id=_id(), customer_id="cust-1",
                            occurred_at_ms=T0 + round(d * DAY), product="x", activity="login",
                            contract_id="ct-1"),
     lambda d: Visit(event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(d * DAY),
                     venue="v", sentiment="positive", contract_id="ct-2")),
    ("renewal_reminder", f"ct-1|{format_ms(T0 + 20 * DAY)}|T-30",
     lambda d: Contract(event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(d * DAY),
                        contract_id="ct-1", product="gym", status="renewed",
                        expires_at_ms=T0 + 400 * DAY, auto_renew=False, price_cents=9_900),
     lambda d: Contract(event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + round(d * DAY),
                        contract_id="ct-1", product="gym", status="active",
                        expires_at_ms=T0 + 20 * DAY, auto_renew=False)),
    ("renewal_after_positive_visit", "visit-1|ct-1",
     lambda d: AutoRenewCharged(event_id=_id(), customer_id="cust-1",
                                occurred_at_ms=T0 + round(d * DAY), contract_id="ct-1",
                                amount_cents=9_900, expires_at_ms=T0 + 400 * DAY),
     lambda d: AutoRenewCharged(event_id=_id(), customer_id="cust-1",
                                occurred_at_ms=T0 + round(d * DAY), contract_id="ct-9",
                                amount_cents=9_900, expires_at_ms=T0 + 400 * DAY)),
]  # fmt: skip
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def _window_days(trigger: str) -> int:
    # The renewal goals end at the contract's expiry (day 20 here), before their 60 days.
    return 20 if trigger.startswith("renewal") else PARAMS.goals[trigger].window_ms // DAY


@pytest.mark.parametrize(("trigger", "instance", "hit", "miss"), CASES, ids=IDS)
def test_goal_converts_inside_its_window(trigger: str, instance: str, hit: Any, miss: Any) -> None:
    s = customer()
    did = decide(s, trigger, instance)
    out = outcome_after(s, hit(_window_days(trigger)))  # the window's last moment counts
    assert out is not None and out.converted and out.decision_id == did
    assert out.converted_at_ms == T0 + _window_days(trigger) * DAY
    assert out.window_end_ms == T0 + _window_days(trigger) * DAY


@pytest.mark.parametrize(("trigger", "instance", "hit", "miss"), CASES, ids=IDS)
def test_goal_not_met_outside_its_window_or_threshold(
    trigger: str, instance: str, hit: Any, miss: Any
) -> None:
    s = customer()
    decide(s, trigger, instance)
    window = _window_days(trigger)
    after_end = hit(window + 0.001)
    at_decision = hit(0)  # the window is open at decided_at: (decided_at, end]
    assert outcome_after(s, at_decision, after_end, miss(1)) is None
    out = outcome_after(s, expire_at=T0 + window * DAY + LATE)
    assert out is not None and not out.converted
    assert out.converted_at_ms is None and out.value_cents is None


def test_credits_sum_across_events_to_half_the_drop() -> None:
    s = customer()
    decide(s, "savings_drop_unexplained", "sav-1|deb-1")
    assert outcome_after(s, txn(1, "sav-1", "credit", 20_000)) is None
    assert outcome_after(s, txn(2, "sav-1", "debit", 90_000)) is None  # a debit adds nothing
    out = outcome_after(s, txn(3, "sav-1", "credit", 30_000))
    assert out.converted and out.value_cents == 30_000


def test_late_goal_event_within_the_lateness_counts_beyond_it_not() -> None:
    s = customer()
    decide(s, "never_activated", "card-1|never")
    end = T0 + 30 * DAY
    goals.expire(s, end + LATE - 1, LATE)  # not expired yet: a late event may still come
    assert goals.take_outcomes(s) == []
    out = outcome_after(s, txn(29, "card-1", "debit", 700))
    assert out.converted and out.value_cents == 700
    s = customer()
    decide(s, "never_activated", "card-1|never")
    out = outcome_after(s, expire_at=end + LATE)
    assert not out.converted
    # The same late event once the goal expired: nothing (one outcome per decision).
    assert outcome_after(s, txn(29, "card-1", "debit", 700)) is None


def test_engagement_converted_naming_the_decision_converts_it() -> None:
    s = customer()
    did = decide(s, "replacement_due", "filters|2026-01-01T00:00:00Z")

    def engagement(action: str, decision_id: str) -> Engagement:
        return Engagement(
            event_id=_id(), customer_id="cust-1", occurred_at_ms=T0 + DAY, channel="email",
            action=action, decision_id=decision_id,
        )  # fmt: skip

    assert outcome_after(s, engagement("clicked", did), engagement("converted", "d-other")) is None
    out = outcome_after(s, engagement("converted", did))
    assert out.converted and out.value_cents is None


def test_service_trigger_and_disabled_goal_track_nothing() -> None:
    s = customer()
    decide(s, "auto_renew_confirmation", "evt-1")
    assert goals.pending(s) == []
    config = build_config({"triggers": {"never_activated": {"goal": {"enabled": False}}}})
    params = TriggerParams.from_config(config)
    assert "never_activated" not in params.goals and "lapsed_transactor" in params.goals
    decide(s, "never_activated", "card-1|never", params)
    assert goals.pending(s) == []


def test_goal_window_is_configurable() -> None:
    config = build_config({"triggers": {"never_activated": {"goal": {"window_days": 5}}}})
    params = TriggerParams.from_config(config)
    s = customer()
    decide(s, "never_activated", "card-1|never", params)
    assert goals.pending(s)[0]["e"] == T0 + 5 * DAY


def test_pending_goals_are_bounded_oldest_dropped_and_counted() -> None:
    s = customer()
    for i in range(goals.MAX_PENDING_GOALS + 3):
        c = Candidate("cust-1", "never_activated", f"card-{i}|never", "a", "email",
                      "marketing", 1, (), T0)  # fmt: skip
        track_goals(s, [c], T0 + i, PARAMS)
    kept = goals.pending(s)
    assert len(kept) == goals.MAX_PENDING_GOALS
    assert min(p["a"] for p in kept) == T0 + 3  # the three oldest went
    assert goals.dropped(s) == 3
    # A repeated decision is tracked once.
    c = Candidate("cust-1", "never_activated", "card-5|never", "a", "email", "marketing", 1, (),
                  T0)  # fmt: skip
    track_goals(s, [c], T0 + 5, PARAMS)
    assert len(goals.pending(s)) == goals.MAX_PENDING_GOALS


def test_pending_goals_survive_the_record_and_drive_its_due_time() -> None:
    s = customer()
    s.floor_ms = T0 - LATE
    decide(s, "never_activated", "card-1|never")
    expiry = T0 + 30 * DAY + LATE
    assert next_due_ms(s) == expiry
    back = CustomerState.from_bytes(s.to_bytes())
    assert goals.pending(back) == goals.pending(s)
    # A goal event through the engine's step converts it; the due time goes with it.
    new = step(back, txn(3, "card-1", "debit", 1_200), T0 + 3 * DAY, PARAMS).state
    assert goals.pending(new) == [] and next_due_ms(new) != expiry  # the card's own due times
    (out,) = goals.take_outcomes(new)
    assert out.converted and out.converting_event_id is not None
    # Without a goal event, advance at the expiry resolves it as not converted.
    again = CustomerState.from_bytes(s.to_bytes())
    assert goals.take_outcomes(advance(again, expiry - 1, PARAMS).state) == []
    done = advance(again, expiry, PARAMS).state
    (out,) = goals.take_outcomes(done)
    assert not out.converted and out.window_end_ms == T0 + 30 * DAY
    assert goals.pending(done) == []


def test_a_plugin_trigger_declares_its_goal_or_none() -> None:
    from streams.core.triggers.api import spec, with_goal

    plain = spec("my_trigger", "mine", "act", "email", "marketing", 10)
    assert plain.goal is None and goals.goal_of(plain.name, plain.goal) is None
    declared = goals.GoalSpec(goals.PURCHASE, 14, lambda state, instance: {"category": "x"})
    mine = with_goal(plain, declared)
    assert goals.goal_of(mine.name, mine.goal) is declared
    assert goals.default_goal_config(declared) == {"enabled": True, "window_days": 14}
    with pytest.raises(ValueError, match="goal kind"):
        goals.GoalSpec("clicks", 14, lambda state, instance: None)


@pytest.mark.parametrize("arm", ["contact", "holdout", "suppressed"])
def test_outcome_record_is_valid_against_the_schema(arm: str) -> None:
    from streams.core.decisions import Decision
    from tests.unit.test_schemas import VALIDATORS

    validate = VALIDATORS["decision_outcome"]
    s = customer()
    did = decide(s, "never_activated", "card-1|never")
    c = Candidate("cust-1", "never_activated", "card-1|never", "a", "email", "marketing", 1, (),
                  T0)  # fmt: skip
    details = {"global_control": True} if arm == "holdout" else {}
    decision = Decision(c, arm, (), T0, details=details)
    (hit,) = [outcome_after(s, txn(2, "card-1", "debit", 1_250))]
    record = goals.outcome_record(hit, decision)
    assert list(validate.iter_errors(record)) == []
    assert record["decision_id"] == did and record["arm"] == arm and record["value"] == 12.5
    assert record.get("global_control", False) is (arm == "holdout")
    assert goals.outcome_record(hit, decision) == record  # a pure function: replays equal
    s = customer()
    decide(s, "never_activated", "card-1|never")
    miss = outcome_after(s, expire_at=T0 + 30 * DAY + LATE)
    record = goals.outcome_record(miss, decision)
    assert list(validate.iter_errors(record)) == []
    assert record["converted"] is False and "converted_at" not in record and "value" not in record
    other = Decision(Candidate("cust-1", "never_activated", "card-2|never", "a", "email",
                               "marketing", 1, (), T0), arm, (), T0)  # fmt: skip
    with pytest.raises(ValueError, match="given decision"):
        goals.outcome_record(miss, other)
