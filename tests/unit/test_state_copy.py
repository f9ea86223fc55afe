"""``CustomerState.copy``: a structural copy that the core may change without changing the record
it was copied from (the core's ``step``/``advance`` of a record they do not own use it).

Given / When / Then, with a comment on why each expectation holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import msgspec

from streams.core import engine, goals
from streams.core import events as ev
from streams.core.decisions import Candidate
from streams.core.state import CustomerState
from streams.core.triggers.api import TriggerFamily
from streams.testing import params_for
from tests.unit.plugin_fixture import BigSpender
from tests.unit.test_state import DAY, T0, _every_field, realistic_history

# Every trigger of every family: the built-in ones, the example plugin (installed by the test
# setup, it ships disabled) and the registry tests' plugin, each with a slice of its own.
PARAMS = params_for(
    config={
        "triggers": {
            "complaint_streak": {"enabled": True},
            "complaint_check_in": {"enabled": True},
        }
    },
    families=[BigSpender()],
)
FAR = 10 * 365 * DAY


def _event(cls: type[ev.Event], event_id: str, day: float, **fields: Any) -> ev.Event:
    return cls(
        event_id=event_id, customer_id="cust-42", occurred_at_ms=T0 + int(day * DAY), **fields
    )  # type: ignore[arg-type]


def _every_family_history() -> list[ev.Event]:
    """Two years of a realistic customer, plus what the rest of the families need to hold data
    and fire: savings drops with each kind of follow-up and one left unexplained, price rises
    after complaints, complaint streaks, a usage lapse, an unused auto-renewal, cards idle and
    lapsed, big purchases, positive visits, and the events that meet goals."""
    out = realistic_history(2, seed=11)
    add = out.append
    for n, day in enumerate((100, 300, 500)):
        add(_event(ev.Transaction, f"drop-{n}", day + 0.5, account_id="sav-1",
                   account_type="savings", direction="debit", amount_cents=2_500_000,
                   rail="internal"))  # fmt: skip
        if n != 1:
            add(_event(ev.Transaction, f"wire-{n}", day + 1.5, account_id="chk-1",
                       account_type="checking", direction="debit", amount_cents=2_400_000,
                       rail="wire"))  # fmt: skip
        add(_event(ev.Transaction, f"back-{n}", day + 20, account_id="sav-1",
                   account_type="savings", direction="credit", amount_cents=2_500_000,
                   rail="ach"))  # fmt: skip
    for n, day in enumerate((60, 62, 64, 250, 400)):
        add(_event(ev.Complaint, f"cp-{n}", day + 0.3, category="billing"))
    for n, day in enumerate((70, 260, 410)):
        add(_event(ev.Contract, f"price-{n}", day, contract_id="ct-gym", product="gym",
                   status="active", expires_at_ms=T0 + 800 * DAY, auto_renew=True,
                   price_cents=1_000 * (n + 1)))  # fmt: skip
    for day in range(71, 200, 5):  # then a lapse of the gym's usage
        add(_event(ev.ProductUsage, f"gym-{day}", day, product="gym", activity="workout",
                   contract_id="ct-gym"))  # fmt: skip
    for n, day in enumerate((120, 420)):
        add(_event(ev.Purchase, f"big-{n}", day, product_category="tv", amount_cents=250_000))
    for day, kind in ((600, "checking"), (630, "investment"), (660, "loan")):
        add(_event(ev.Transaction, f"drop-to-{kind}", day + 0.5, account_id="sav-1",
                   account_type="savings", direction="debit", amount_cents=4_000_000,
                   rail="internal"))  # fmt: skip
        add(_event(ev.Transaction, f"to-{kind}", day + 1, account_id=f"{kind}-1",
                   account_type=kind, direction="credit", amount_cents=3_500_000,
                   rail="internal"))  # fmt: skip
    add(_event(ev.Contract, "ins", 400, contract_id="ct-ins", product="insurance",
               status="active", expires_at_ms=T0 + 700 * DAY, auto_renew=True))  # fmt: skip
    add(_event(ev.Visit, "happy", 680, venue="branch", sentiment="positive", contract_id="ct-ins"))
    # A second follow-up of a drop already pinned by the first (its flags change in place).
    add(_event(ev.Transaction, "to-checking-0", 102, account_id="checking-1",
               account_type="checking", direction="credit", amount_cents=2_400_000,
               rail="internal"))  # fmt: skip
    add(_event(ev.Visit, "glad", 690, venue="branch", sentiment="positive"))
    add(_event(ev.AutoRenewCharged, "charged", 450, contract_id="ct-gym", amount_cents=5_000,
               expires_at_ms=T0 + 1_200 * DAY))  # fmt: skip
    add(_event(ev.AccountOpened, "open-idle", 300, account_id="cc-idle",
               account_type="credit_card"))  # fmt: skip
    add(_event(ev.AccountOpened, "open-lapse", 100, account_id="cc-lapse",
               account_type="credit_card"))  # fmt: skip
    for day in range(101, 160, 4):
        add(_event(ev.Transaction, f"lapse-{day}", day, account_id="cc-lapse",
                   account_type="credit_card", direction="debit", amount_cents=1_000,
                   rail="card"))  # fmt: skip
    for day in (120, 150):
        add(_event(ev.Statement, f"stmt-{day}", day, account_id="cc-lapse",
                   statement_balance_cents=10_000, amount_paid_cents=10_000,
                   minimum_due_cents=500))  # fmt: skip
    for n, day in enumerate((20, 385)):
        add(_event(ev.Purchase, f"ski-{n}", day, product_category="ski", amount_cents=90_000))
    add(_event(ev.AccountOpened, "open-loan", 105, account_id="loan-1", account_type="loan"))
    add(_event(ev.Profile, "profile-2", 365, segment="mass", timezone="America/New_York"))
    out.sort(key=lambda e: (e.occurred_at_ms, e.event_id))
    # A kept positive visit that a late contract event completes (its offers change in place).
    late = _event(ev.Contract, "late", 689, contract_id="ct-late", product="pass",
                  status="active", expires_at_ms=T0 + 720 * DAY, auto_renew=False)  # fmt: skip
    out.insert(next(i for i, e in enumerate(out) if e.event_id == "glad") + 1, late)
    return out


def _shell_like(events: list[ev.Event]) -> Iterator[tuple[CustomerState, ev.Event, int]]:
    """The states the worker's shell holds, with the next event and its stream time: it owns
    its record (it updates it in place), advances at every due time before an event and at it,
    keeps the decisions' goals and holds some candidates for the end of quiet hours."""
    state: CustomerState | None = None
    now = T0
    for n, event in enumerate(events):
        if state is not None:
            yield state, event, max(now, event.occurred_at_ms)
        while state is not None and (due := engine.next_due_ms(state)) is not None:
            if due >= event.occurred_at_ms:
                break
            _decided(state, engine.advance(state, due, PARAMS, owned=True).candidates, due, n)
            engine.take_deferred(state, due)
        now = max(now, event.occurred_at_ms)
        state, candidates, _ = engine.step_parts(state, event, now, PARAMS, owned=True)
        state.applied_offsets[event.topic_kind] = n
        _decided(state, candidates, now, n)
        engine.take_deferred(state, now)
        goals.take_outcomes(state)


def _decided(state: CustomerState, candidates: list[Candidate], now: int, n: int) -> None:
    engine.track_goals(state, candidates, now, PARAMS)
    for c in candidates[:1] if n % 3 == 0 else []:
        engine.defer(state, c, now + DAY, now)


def _mutable_parts(root: Any) -> dict[int, Any]:
    """Every mutable object reachable from ``root`` (by id; the objects are kept, so no id is
    reused), the trigger families and the goals slice's keeper (shared by design: they are the
    code, not the data) left out."""
    found: dict[int, Any] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if isinstance(obj, TriggerFamily | goals.GoalsSlice | str | bytes | int | float | None):
            continue
        if isinstance(obj, tuple | frozenset):
            stack.extend(obj)
            continue
        if id(obj) in found:
            continue
        frozen = isinstance(obj, Candidate)
        if not frozen:
            found[id(obj)] = obj
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | set):
            stack.extend(obj)
        elif isinstance(obj, msgspec.Struct):
            stack.extend(getattr(obj, f) for f in obj.__struct_fields__)
        elif dataclasses.is_dataclass(obj):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        else:
            raise AssertionError(f"unexpected part of a record: {type(obj)}")
    return found


def test_a_copy_is_equal_and_shares_no_mutable_part() -> None:
    # Given records with every field set: one built by hand (with stored slices of families
    # installed and not), one the core changed (its slices decoded), and that one read back
    every = _every_field()
    every.ext = {
        "big_spender": [2, {"n": 3}],
        "gone_family": [1, {"a": [1, [2, 3]], "b": {"c": "d"}}, T0],
    }
    live = CustomerState("x", 0)
    for state, _, _ in _shell_like(_every_family_history()):
        live = state
    assert live.slices and live.savings and live.contracts and live.cards and live.categories
    for state in (every, live, CustomerState.from_bytes(live.to_bytes())):
        # When it is copied
        copy = state.copy()
        # Then the copy is the same record (the same bytes, too) ...
        assert copy == state
        assert copy.to_bytes() == state.to_bytes()
        # ... in objects of its own wherever the core could change one in place
        shared = _mutable_parts(copy).keys() & _mutable_parts(state).keys()
        assert not shared, [type(_mutable_parts(state)[i]) for i in shared]


def test_changing_a_copy_through_the_core_never_changes_the_original() -> None:
    # Given the record before every event of a history that has every family hold data and
    # fire (slices of built-in and plugin families, the goals slice, deferred decisions), as
    # the shell holds it and as read from its bytes
    checked = 0
    for live, event, now in _shell_like(_every_family_history()):
        for state in (live, CustomerState.from_bytes(live.to_bytes())):
            before = state.to_bytes()
            # When a copy goes through what the shell does with a record it owns: the event,
            # the shell's offset, goals and deferred decisions, then every due time far ahead
            # (everything fires, expires and is pruned)
            copy = state.copy()
            assert copy.to_bytes() == before
            new, candidates, _ = engine.step_parts(copy, event, now, PARAMS, owned=True)
            new.applied_offsets[event.topic_kind] = 10**9
            _decided(new, candidates, now, 0)
            later = engine.advance(new, now + FAR, PARAMS, owned=True).state
            _decided(later, candidates, now + FAR, 0)
            engine.take_deferred(later, now + FAR)
            goals.take_outcomes(later)
            # and the core's own copying step and advance run on the record itself
            engine.step(state, event, now, PARAMS)
            engine.advance(state, now + FAR, PARAMS)
            # Then the record is byte for byte what it was
            assert state.to_bytes() == before, event
            checked += 1
    assert checked > 1_000
