"""Savings drop: ``savings_drop_to_checking``, ``..._to_wire``, ``..._to_own_investment``,
``..._to_loan_payoff`` and ``..._unexplained``.

Contract (docs/contract.md, "Savings drop"): the baseline is the mean of the savings account's
balance observations in the 90 days before the drop's first debit; the drop is the account's debits
summed over a 3-day window that starts at a debit, happening when the sum reaches 50 % of a baseline
of at least 10,000, once per window. Follow-ups (an internal credit to checking, an outbound wire
from any account, the savings account's own wire included; an internal credit to the customer's
investment account, or to their loan account) of >= 80 % of the dropped amount match within 7
days before or after the drop. ``unexplained`` fires when no follow-up of any kind matched by the
drop + 7 days + the allowed lateness.

How this module reads it:

- Windows are found greedily in event-time order over the account's debits: a window starts at
  the earliest debit not yet used, covers [start, start + 3 days] (inclusive), and the drop is at
  the debit whose running sum first reaches the threshold; the next window starts after it. If a
  window never reaches it, the next debit starts one. Everything is computed from event times,
  so arrival order does not matter until something is decided.
- Once a decision is taken on a drop (a follow-up fired, or the unexplained due time passed) the
  drop is pinned: its debits leave the pool, and a late debit inside its span is absorbed. Late
  data can then no longer regroup a drop that was published on.
- The instance is ``<account id>|<first debit event id>``; the event-driven pair fire at the
  later of drop and follow-up, ``unexplained`` at its due time.
- Balance observations older than the lateness horizon are merged into one bucket per UTC day,
  so the baseline's far edge (90 days back) is resolved to whole days (the day the window starts
  in counts whole); everything near the drop is exact.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from streams.core.events import Balance, Event, Transaction
from streams.core.state import (
    CHECKING_FIRED,
    DAY_MS,
    INVESTMENT_FIRED,
    LOAN_FIRED,
    MAX_DEBITS,
    MAX_DROPS,
    MAX_FOLLOW_UPS,
    MAX_OBSERVATIONS,
    MAX_SAVINGS_ACCOUNTS,
    UNEXPLAINED_DECIDED,
    UNEXPLAINED_FIRED,
    WIRE_FIRED,
    CustomerState,
    Debit,
    FollowUp,
    PinnedDrop,
    SavingsAccount,
)
from streams.core.triggers import DueItem, Emitter, TriggerParams
from streams.core.triggers.api import MARKETING, TriggerFamily, spec

TRIGGERS = (
    "savings_drop_to_checking",
    "savings_drop_to_wire",
    "savings_drop_unexplained",
    "savings_drop_to_own_investment",
    "savings_drop_to_loan_payoff",
)
# Internal credits that say where the money went: account type -> follow-up kind.
_INTERNAL_CREDIT_KINDS = {"checking": "c", "investment": "i", "loan": "l"}
FOLLOW_UP_KINDS = ("c", "w", "i", "l")
# The event types ``apply`` folds in: for any other, it returns False and changes nothing.
EVENTS = (Balance, Transaction)


@dataclass(frozen=True, slots=True)
class Drop:
    """A drop found in the unpinned debits (or a pinned one, seen through the same lens)."""

    first_id: str
    start_ms: int
    drop_ms: int
    amount_cents: int
    debit_ids: tuple[str, ...]
    pinned: PinnedDrop | None = None

    @property
    def flags(self) -> int:
        return self.pinned.flags if self.pinned else 0


def _active(params: TriggerParams) -> bool:
    return not params.enabled.isdisjoint(TRIGGERS)


def holds_data(state: CustomerState) -> bool:
    """False when there is nothing here: ``due_items`` is empty and ``prune`` changes nothing."""
    return bool(state.savings or state.follow_ups)


# --- horizons (relative to state.floor_ms) --------------------------------------------------


def _debit_horizon(state: CustomerState, params: TriggerParams) -> int:
    # A drop still able to fire anything has drop_ms >= floor - follow-up window.
    s = params.savings
    return state.floor_ms - s.max_follow_ms - s.window_ms


def _exact_horizon(state: CustomerState, params: TriggerParams) -> int:
    return _debit_horizon(state, params) - DAY_MS


def _obs_horizon(state: CustomerState, params: TriggerParams) -> int:
    return _debit_horizon(state, params) - params.savings.baseline_ms - DAY_MS


def _follow_up_horizon(state: CustomerState, params: TriggerParams) -> int:
    return state.floor_ms - 2 * params.savings.max_follow_ms


# --- apply --------------------------------------------------------------------------------


def _account(state: CustomerState, account_id: str, at_ms: int) -> SavingsAccount:
    account = state.savings.get(account_id)
    if account is None:
        account = state.savings[account_id] = SavingsAccount()
        if len(state.savings) > MAX_SAVINGS_ACCOUNTS:
            oldest = min(state.savings, key=lambda k: (state.savings[k].last_ms, k))
            del state.savings[oldest]
    account.last_ms = max(account.last_ms, at_ms)
    return account


def _observe(account: SavingsAccount, at_ms: int, cents: int, exact_from: int) -> None:
    if at_ms < exact_from:
        return  # beyond the lateness horizon: it could only be merged twice on a replay
    entry = (at_ms, cents)
    i = bisect.bisect_left(account.obs, entry)
    if i < len(account.obs) and account.obs[i] == entry:
        return  # the same observation again (a replay, or balance and balance_after agreeing)
    account.obs.insert(i, entry)
    del account.obs[:-MAX_OBSERVATIONS]


def apply(state: CustomerState, event: Event, params: TriggerParams) -> bool:
    """Fold a balance or transaction into the savings data; True if it may matter here."""
    if not _active(params) or not isinstance(event, EVENTS):
        return False
    t = event.occurred_at_ms
    if event.account_type == "savings":
        account = _account(state, event.account_id, t)
        if isinstance(event, Balance):
            _observe(account, t, event.balance_cents, _exact_horizon(state, params))
        else:
            if event.balance_after_cents is not None:
                _observe(account, t, event.balance_after_cents, _exact_horizon(state, params))
            if event.direction == "debit":
                _add_debit(account, (t, event.amount_cents, event.event_id), state, params)
    if isinstance(event, Transaction):
        kind = None
        if event.direction == "debit" and event.rail == "wire":
            kind = "w"
        elif event.direction == "credit" and event.rail == "internal":
            kind = _INTERNAL_CREDIT_KINDS.get(event.account_type)
        if kind is not None and t >= _follow_up_horizon(state, params):
            entry: FollowUp = (t, event.amount_cents, kind, event.event_id)
            if all(f[3] != event.event_id for f in state.follow_ups):
                bisect.insort(state.follow_ups, entry)
                if len(state.follow_ups) > MAX_FOLLOW_UPS:
                    del state.follow_ups[0]
    return True


def _add_debit(
    account: SavingsAccount, debit: Debit, state: CustomerState, params: TriggerParams
) -> None:
    t, _, event_id = debit
    if t < _debit_horizon(state, params):
        return
    if any(d[2] == event_id for d in account.debits):
        return
    for pinned in account.drops:
        if event_id in pinned.debit_ids or pinned.start_ms <= t <= pinned.drop_ms:
            return  # part of (or late inside) a drop already decided on: absorbed
    bisect.insort(account.debits, debit, key=lambda d: (d[0], d[2]))
    if len(account.debits) > MAX_DEBITS:
        del account.debits[0]


# --- the drop -----------------------------------------------------------------------------


def baseline(account: SavingsAccount, start_ms: int, params: TriggerParams) -> tuple[int, int]:
    """(sum of cents, count) of the balance observations in [start - 90 days, start).

    Older observations are day buckets: a bucket counts whole when the window starts that day.
    """
    lo = start_ms - params.savings.baseline_ms
    total = count = 0
    lo_day = lo // DAY_MS
    for day, cents, n in account.days:
        if day >= lo_day and day * DAY_MS < start_ms:
            total += cents
            count += n
    for t, cents in account.obs:
        if lo <= t < start_ms:
            total += cents
            count += 1
    return total, count


def detect(account: SavingsAccount, params: TriggerParams) -> list[Drop]:
    """The drops among the account's unpinned debits, in event-time order."""
    s = params.savings
    debits = account.debits
    drops: list[Drop] = []
    i = 0
    while i < len(debits):
        start = debits[i][0]
        total, count = baseline(account, start, params)
        # mean >= minimum  <=>  total >= minimum * count (exact, in cents)
        if count == 0 or total < s.min_average_cents * count:
            i += 1
            continue
        # sum >= fraction * mean  <=>  sum * count * den >= num * total
        num, den = s.drop_fraction.numerator, s.drop_fraction.denominator
        running = 0
        j = i
        found = False
        while j < len(debits) and debits[j][0] <= start + s.window_ms:
            running += debits[j][1]
            if running * count * den >= num * total:
                found = True
                break
            j += 1
        if not found:
            i += 1
            continue
        group = debits[i : j + 1]
        drops.append(Drop(group[0][2], start, group[-1][0], running, tuple(d[2] for d in group)))
        i = j + 1
    return drops


def _all_drops(account: SavingsAccount, params: TriggerParams) -> list[Drop]:
    pinned = [
        Drop(p.first_id, p.start_ms, p.drop_ms, p.amount_cents, p.debit_ids, p)
        for p in account.drops
    ]
    return pinned + detect(account, params)


def match(
    state: CustomerState, drop: Drop, kind: str, rule: tuple[int, Fraction]
) -> FollowUp | None:
    """The earliest follow-up of ``kind`` within the window of the drop, large enough."""
    window, fraction = rule
    for f in state.follow_ups:  # sorted by time
        t, cents, k, _ = f
        if (
            k == kind
            and drop.drop_ms - window <= t <= drop.drop_ms + window
            and cents * fraction.denominator >= fraction.numerator * drop.amount_cents
        ):
            return f
    return None


def _pin(account: SavingsAccount, drop: Drop) -> PinnedDrop:
    if drop.pinned is not None:
        return drop.pinned
    ids = set(drop.debit_ids)
    account.debits = [d for d in account.debits if d[2] not in ids]
    pinned = PinnedDrop(
        drop.first_id, drop.start_ms, drop.drop_ms, drop.amount_cents, drop.debit_ids
    )
    account.drops.append(pinned)
    account.drops.sort(key=lambda p: p.drop_ms)
    if len(account.drops) > MAX_DROPS:
        del account.drops[0]
    return pinned


def _unexplained(state: CustomerState, drop: Drop, params: TriggerParams) -> bool:
    """No follow-up of any kind matched the drop (by the unexplained trigger's own rule)."""
    rule = params.savings.unexplained
    return all(match(state, drop, kind, rule) is None for kind in FOLLOW_UP_KINDS)


# --- event-driven: the follow-up pair -------------------------------------------------------


def on_event(state: CustomerState, event: Event, emitter: Emitter) -> None:
    """Fire ``to_checking``/``to_wire`` for every drop the event completes (either side)."""
    params = emitter.params
    if not _active(params) or not isinstance(event, Balance | Transaction):
        return
    s = params.savings
    for account_id, account in list(state.savings.items()):
        for drop in _all_drops(account, params):
            if drop.flags & UNEXPLAINED_FIRED:
                continue  # published as unexplained: a late follow-up must not contradict it
            for trigger, kind, rule, flag in (
                ("savings_drop_to_wire", "w", s.wire, WIRE_FIRED),
                ("savings_drop_to_checking", "c", s.checking, CHECKING_FIRED),
                ("savings_drop_to_own_investment", "i", s.investment, INVESTMENT_FIRED),
                ("savings_drop_to_loan_payoff", "l", s.loan, LOAN_FIRED),
            ):
                if drop.flags & flag:
                    continue
                found = match(state, drop, kind, rule)
                if found is None:
                    continue
                # Decided on (even with this trigger disabled): freeze the drop.
                pinned = _pin(account, drop)
                drop = Drop(
                    drop.first_id,
                    drop.start_ms,
                    drop.drop_ms,
                    drop.amount_cents,
                    drop.debit_ids,
                    pinned,
                )
                fired = emitter.emit(
                    trigger,
                    f"{account_id}|{drop.first_id}",
                    (*drop.debit_ids, found[3]),
                    max(drop.drop_ms, found[0]),
                )
                if fired:
                    pinned.flags |= flag
            if drop.pinned is None and not _unexplained(state, drop, params):
                # Explained by the unexplained trigger's own rule although neither of the pair
                # matched (stricter rules there): decided, so freeze it too.
                _pin(account, drop).flags |= UNEXPLAINED_DECIDED


# --- time-based: unexplained ----------------------------------------------------------------


def due_items(state: CustomerState, params: TriggerParams, *, named: bool = True) -> list[DueItem]:
    if "savings_drop_unexplained" not in params.enabled:
        return []
    follow_ms = params.savings.unexplained[0]
    items: list[DueItem] = []
    for account_id, account in state.savings.items():
        for drop in _all_drops(account, params):
            if drop.flags & (
                CHECKING_FIRED | WIRE_FIRED | INVESTMENT_FIRED | LOAN_FIRED | UNEXPLAINED_DECIDED
            ):
                continue  # a follow-up was published, or this was decided already
            if not _unexplained(state, drop, params):
                continue
            due = drop.drop_ms + follow_ms + params.lateness_ms
            if due < state.floor_ms:
                continue

            def mark(account: SavingsAccount = account, drop: Drop = drop) -> None:
                _pin(account, drop).flags |= UNEXPLAINED_FIRED | UNEXPLAINED_DECIDED

            items.append(
                DueItem(
                    due,
                    "savings_drop_unexplained",
                    f"{account_id}|{drop.first_id}" if named else "",
                    drop.debit_ids,
                    mark,
                )
            )
    return items


# --- pruning --------------------------------------------------------------------------------


def prune(state: CustomerState, params: TriggerParams) -> None:
    debit_from = _debit_horizon(state, params)
    exact_from = _exact_horizon(state, params)
    obs_from = _obs_horizon(state, params)
    follow_from = _follow_up_horizon(state, params)
    # The lists below are sorted by time: when their first item is kept, all of them are.
    if state.follow_ups and state.follow_ups[0][0] < follow_from:
        state.follow_ups = [f for f in state.follow_ups if f[0] >= follow_from]
    max_follow = params.savings.max_follow_ms
    for account_id in list(state.savings):
        account = state.savings[account_id]
        # A drop is no earlier than its first debit: with the earliest debit still matchable,
        # every drop is (and finding them, which weighs each debit's baseline, is skipped).
        if account.debits and account.debits[0][0] + max_follow < state.floor_ms:
            for drop in detect(account, params):
                if drop.drop_ms + max_follow < state.floor_ms:
                    # Nothing can match it any more; consume its debits together, so dropping
                    # the older of them cannot regroup the rest into a different drop.
                    _pin(account, drop).flags |= UNEXPLAINED_DECIDED
        if account.debits and account.debits[0][0] < debit_from:
            account.debits = [d for d in account.debits if d[0] >= debit_from]
        # A pinned drop can still match follow-ups until drop + window (which arrive by floor),
        # and it absorbs its own debits while they can still be admitted (``_add_debit``): a
        # debit seen again after its id left ``seen`` would otherwise form the drop anew.
        if account.drops:
            account.drops = [
                p
                for p in account.drops
                if p.drop_ms + max_follow >= state.floor_ms or p.drop_ms >= debit_from
            ]
        _merge_old(account, exact_from, obs_from)
        if not (account.debits or account.drops or account.obs or account.days):
            del state.savings[account_id]


def _merge_old(account: SavingsAccount, exact_from: int, keep_from: int) -> None:
    """Exact observations before ``exact_from`` become day buckets; too old ones go."""
    obs, buckets = account.obs, account.days
    if (not obs or obs[0][0] >= exact_from) and (
        not buckets or (buckets[0][0] + 1) * DAY_MS > keep_from
    ):
        # Nothing to merge and nothing too old (both lists are sorted, the buckets by day, one
        # per day and at most MAX_OBSERVATIONS of them, as written below): all stays as it is.
        return
    days = {d: (c, n) for d, c, n in account.days if (d + 1) * DAY_MS > keep_from}
    exact = []
    for t, cents in account.obs:
        if t >= exact_from:
            exact.append((t, cents))
        elif t >= keep_from:
            total, count = days.get(t // DAY_MS, (0, 0))
            days[t // DAY_MS] = (total + cents, count + 1)
    account.obs = exact
    account.days = [(d, c, n) for d, (c, n) in sorted(days.items())][-MAX_OBSERVATIONS:]


_DROP = {
    "baseline_days": 90,
    "min_average_balance": 10_000,
    "drop_fraction": 0.5,
    "drop_window_days": 3,
    "follow_up_days": 7,
    "match_fraction": 0.8,
}
# Where the money went: the drop is the one the three above define (their shared parameters);
# these two only say which follow-up explains it.
_FOLLOW = {"follow_up_days": 7, "match_fraction": 0.8}


class SavingsFamily(TriggerFamily):
    """The savings drop and where the money went (one drop computation for all five)."""

    name = "savings"
    triggers = (
        spec("savings_drop_to_checking", "savings", "loan_offer", "email", MARKETING, 85,
             **_DROP),
        spec("savings_drop_to_wire", "savings", "investment_advisor_call", "phone", MARKETING, 90,
             **_DROP),
        spec("savings_drop_unexplained", "savings", "retention_check_in", "email", MARKETING, 60,
             **_DROP),
        spec("savings_drop_to_own_investment", "savings", "investment_welcome", "email",
             MARKETING, 75, **_FOLLOW),
        spec("savings_drop_to_loan_payoff", "savings", "credit_review", "email", MARKETING, 70,
             **_FOLLOW),
    )  # fmt: skip
    events = EVENTS
    uses_slice = False
    # One drop means one thing for every trigger built on it.
    shared_parameters = ("baseline_days", "min_average_balance", "drop_fraction",
                         "drop_window_days")  # fmt: skip
    apply = staticmethod(apply)
    on_event = staticmethod(on_event)
    due_items = staticmethod(due_items)
    holds_data = staticmethod(holds_data)
    prune = staticmethod(prune)

    def configure(self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int) -> None:
        return None  # TriggerParams.savings


FAMILY = SavingsFamily()
