"""Purchase habits: ``replacement_due`` and ``usual_booking_missed``.

Contract (docs/contract.md, catalogue and "Yearly habit"): ``replacement_due`` fires when the cycle
of a category has elapsed since the last purchase: the customer's own median interval after 3 or
more purchases, else the configured cycle of the category (none configured: no cycle until the
customer's own). ``usual_booking_missed``: the last two purchases of a category are 335-395 days
apart (inclusive) and there is no purchase by the last one + 365 + 14 days.

How this module reads it:

- Each purchase ``p`` opens one occurrence of each trigger, due at ``p + cycle`` (the cycle as of
  ``p``: the median of the intervals up to ``p``, integer milliseconds, the mean of the middle
  two for an even count) and at ``p + 365 + 14 days``; it fires unless the next purchase of the
  category is at or before the due time (stamped exactly at it: applied first). Instance
  ``<category>|<p>``. Both triggers can fire for one category (a yearly habit with its own
  median of ~365 days is also a replacement cycle); the contact policy's cooldowns see both.
- The newest 8 purchases per category are kept (their count since the first is kept too, for
  the "3 or more" rule); purchases at the same millisecond count once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.core.events import Event, Purchase
from streams.core.state import (
    MAX_CATEGORIES,
    MAX_PURCHASES,
    PURCHASE_IDS_KEPT,
    CategoryState,
    CustomerState,
)
from streams.core.timeutil import format_ms
from streams.core.triggers import DueItem, Emitter, TriggerParams
from streams.core.triggers.api import MARKETING, TriggerFamily, spec

TRIGGERS = ("replacement_due", "usual_booking_missed")
# The event types ``apply`` folds in: for any other, it returns False and changes nothing.
EVENTS = (Purchase,)
REPLACEMENT = 0
BOOKING = 1


def holds_data(state: CustomerState) -> bool:
    """False when there is nothing here: ``due_items`` is empty and ``prune`` changes nothing."""
    return bool(state.categories)


def apply(state: CustomerState, event: Event, params: TriggerParams) -> bool:
    if not isinstance(event, EVENTS) or params.enabled.isdisjoint(TRIGGERS):
        return False
    t = event.occurred_at_ms
    record = state.categories.get(event.product_category)
    if record is None:
        record = state.categories[event.product_category] = CategoryState()
        if len(state.categories) > MAX_CATEGORIES:
            stale = min(
                (k for k in state.categories if k != event.product_category),
                key=lambda k: (state.categories[k].purchases[-1][0], k),
            )
            del state.categories[stale]
    times = [p[0] for p in record.purchases]
    if t in times:
        return True  # the same purchase again (or two at one millisecond): counts once
    if len(times) >= MAX_PURCHASES and t < times[0]:
        return True  # older than everything kept: it can no longer change a due time
    record.purchases.append((t, event.event_id))
    record.purchases.sort()
    record.count += 1
    del record.purchases[:-MAX_PURCHASES]
    _strip_ids(record, params)
    return True


def _strip_ids(record: CategoryState, params: TriggerParams) -> None:
    """Event ids (evidence) on the last purchase, and on the one before if they may be a habit."""
    r = params.recurrence
    purchases = record.purchases
    n = len(purchases)
    for i, (pt, pid) in enumerate(purchases):
        if not pid or i == n - 1:
            continue
        habit = (
            n - i <= PURCHASE_IDS_KEPT and r.min_gap_ms <= purchases[i + 1][0] - pt <= r.max_gap_ms
        )
        if not habit:
            purchases[i] = (pt, "")


def on_event(state: CustomerState, event: Event, emitter: Emitter) -> None:
    """No event-driven purchase triggers: both are absences, fired by ``advance``."""


def cycle_ms(record: CategoryState, category: str, i: int, params: TriggerParams) -> int | None:
    """The replacement cycle as of the i-th kept purchase."""
    r = params.recurrence
    ever = record.count - (len(record.purchases) - 1 - i)  # purchases up to and including i
    intervals = [record.purchases[k][0] - record.purchases[k - 1][0] for k in range(1, i + 1)]
    if ever >= r.min_purchases and intervals:
        ordered = sorted(intervals)
        n = len(ordered)
        if n % 2:
            return ordered[n // 2]
        return (ordered[n // 2 - 1] + ordered[n // 2]) // 2
    return r.cycle_ms.get(category)


def due_items(state: CustomerState, params: TriggerParams, *, named: bool = True) -> list[DueItem]:
    r = params.recurrence
    items: list[DueItem] = []
    for category, record in state.categories.items():
        marks = set(record.marks)
        purchases = record.purchases
        for i, (p, pid) in enumerate(purchases):
            nxt = purchases[i + 1][0] if i + 1 < len(purchases) else None
            checks: list[tuple[str, int, int, tuple[str, ...]]] = []
            if "replacement_due" in params.enabled:
                cycle = cycle_ms(record, category, i, params)
                if cycle is not None:
                    checks.append(("replacement_due", REPLACEMENT, p + cycle, (pid,)))
            if "usual_booking_missed" in params.enabled and i >= 1:
                gap = p - purchases[i - 1][0]
                if r.min_gap_ms <= gap <= r.max_gap_ms:
                    usual_due = p + r.usual_gap_ms + r.grace_ms
                    checks.append(
                        ("usual_booking_missed", BOOKING, usual_due, (purchases[i - 1][1], pid))
                    )
            for trigger, code, due, evidence in checks:
                if due < state.floor_ms or (code, p) in marks:
                    continue
                if nxt is not None and nxt <= due:
                    continue  # bought again in time

                def mark(record: CategoryState = record, code: int = code, p: int = p) -> None:
                    record.marks.append((code, p))

                items.append(
                    DueItem(
                        due,
                        trigger,
                        f"{category}|{format_ms(p)}" if named else "",
                        tuple(e for e in evidence if e),
                        mark,
                    )
                )
    return items


def prune(state: CustomerState, params: TriggerParams) -> None:
    r = params.recurrence
    for category, record in state.categories.items():
        index = {p: i for i, (p, _) in enumerate(record.purchases)}
        kept = []
        for code, p in record.marks:
            if p not in index:
                continue
            if code == BOOKING:
                due: int | None = p + r.usual_gap_ms + r.grace_ms
            else:
                cycle = cycle_ms(record, category, index[p], params)
                due = None if cycle is None else p + cycle
            if due is not None and due >= state.floor_ms:
                kept.append((code, p))  # still within reach of a re-evaluation
        record.marks = kept


class RecurrenceFamily(TriggerFamily):
    """Purchase habits: the replacement cycle and the yearly booking."""

    name = "recurrence"
    triggers = (
        spec("replacement_due", "recurrence", "replacement_reminder", "email", MARKETING, 20,
             min_purchases=3, cycle_days={"air_filter": 90, "car_service": 180, "phone": 730}),
        spec("usual_booking_missed", "recurrence", "rebooking_offer", "email", MARKETING, 25,
             min_gap_days=335, max_gap_days=395, usual_gap_days=365, grace_days=14),
    )  # fmt: skip
    events = EVENTS
    uses_slice = False
    apply = staticmethod(apply)
    on_event = staticmethod(on_event)
    due_items = staticmethod(due_items)
    holds_data = staticmethod(holds_data)
    prune = staticmethod(prune)

    def validate(self, sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
        usual = sections["usual_booking_missed"]
        if not usual["min_gap_days"] <= usual["usual_gap_days"] <= usual["max_gap_days"]:
            return [
                "triggers.usual_booking_missed: need min_gap_days <= usual_gap_days <= max_gap_days"
            ]
        return []

    def configure(self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int) -> None:
        return None  # TriggerParams.recurrence


FAMILY = RecurrenceFamily()
