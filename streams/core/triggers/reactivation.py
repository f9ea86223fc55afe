"""Credit cards: ``lapsed_transactor``, ``lapsed_revolver``, ``never_activated``.

Contract (docs/contract.md, "Cards"): activity is a debit transaction on the card. A lapse is 180
days with no activity after some activity; it needs at least 2 of the card's last (up to 6)
statements to classify: more than half paid in full (``amount_paid >= statement_balance``) is a
transactor, otherwise a revolver. ``never_activated``: a card opened 90 days ago with no activity
since. Closed cards are excluded.

How this module reads it:

- A lapse is an occurrence per stretch of inactivity: the last activity ``u`` before a gap longer
  than 180 days; it is due at ``u + 180 days`` (a debit stamped exactly then is applied first and
  cancels it). Instance ``<card id>|<u>|lapse``, shared by the two lapse triggers so a late
  statement can never make the other one fire for the same lapse.
- Statements and closure are read as of the due time (the last statements at or before it; a card
  closed at or before it is excluded). Credits (payments) are not activity. A statement older
  than the floor (beyond the lateness) is ignored: older ones are kept as bits only.
- ``never_activated``: no activity in [opened, opened + 90 days]; instance ``<card id>|never``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.core.events import AccountClosed, AccountOpened, Event, Statement, Transaction
from streams.core.state import (
    MAX_CARDS,
    MAX_POINTS,
    MAX_STATEMENTS,
    CardState,
    CustomerState,
    Point,
    insert_thinned,
    keep_since,
)
from streams.core.timeutil import format_ms
from streams.core.triggers import DueItem, Emitter, TriggerParams
from streams.core.triggers.api import MARKETING, TriggerFamily, spec

TRIGGERS = ("lapsed_transactor", "lapsed_revolver", "never_activated")
# The event types ``apply`` folds in: for any other, it returns False and changes nothing.
EVENTS = (AccountOpened, AccountClosed, Transaction, Statement)


def holds_data(state: CustomerState) -> bool:
    """False when there is nothing here: ``due_items`` is empty and ``prune`` changes nothing."""
    return bool(state.cards)


def _t(p: Point) -> int:
    return p[0]


def _card(state: CustomerState, card_id: str, at_ms: int) -> CardState:
    card = state.cards.get(card_id)
    if card is None:
        card = state.cards[card_id] = CardState()
        if len(state.cards) > MAX_CARDS:
            # Closed cards go first, then the least recently active.
            def weight(k: str) -> tuple[int, int]:
                c = state.cards[k]
                return (0 if c.closed_ms is not None else 1, c.last_ms)

            del state.cards[min((k for k in state.cards if k != card_id), key=weight)]
    card.last_ms = max(card.last_ms, at_ms)
    return card


def apply(state: CustomerState, event: Event, params: TriggerParams) -> bool:
    if params.enabled.isdisjoint(TRIGGERS):
        return False
    t = event.occurred_at_ms
    if isinstance(event, AccountOpened | AccountClosed) and event.account_type == "credit_card":
        card = _card(state, event.account_id, t)
        if isinstance(event, AccountOpened):
            if card.opened is None or (t, event.event_id) < card.opened:
                card.opened = (t, event.event_id)
        else:
            card.closed_ms = t if card.closed_ms is None else min(card.closed_ms, t)
        return True
    if (
        isinstance(event, Transaction)
        and event.account_type == "credit_card"
        and event.direction == "debit"
    ):
        c = params.cards
        if t < state.floor_ms - c.inactive_ms:
            return False  # too old to open or close any gap that can still fire
        card = _card(state, event.account_id, t)
        if _closed_by(card, state.floor_ms):
            return False  # a closed card's activity no longer matters
        card.activity = insert_thinned(
            card.activity, (t, event.event_id), _t, c.activity_window_ms
        )[-MAX_POINTS:]
        _strip_ids(card, params)
        return True
    if isinstance(event, Statement):
        if t < state.floor_ms:
            return False  # beyond the lateness: only bits are kept there, a replay would add twice
        card = _card(state, event.account_id, t)
        if _closed_by(card, state.floor_ms):
            return False
        if all(s[0] != t for s in card.statements):
            card.statements.append((t, int(event.paid_in_full)))
            card.statements.sort()
            del card.statements[:-MAX_STATEMENTS]
        return True
    return False


def _strip_ids(card: CardState, params: TriggerParams) -> None:
    """Keep event ids (lapse evidence) only on points that can start a lapse."""
    points = card.activity
    for i, (u, event_id) in enumerate(points):
        if event_id and i + 1 < len(points) and points[i + 1][0] - u <= params.cards.inactive_ms:
            points[i] = (u, "")


def on_event(state: CustomerState, event: Event, emitter: Emitter) -> None:
    """No event-driven card triggers: lapses and activation are absences, fired by ``advance``."""


def _closed_by(card: CardState, at_ms: int) -> bool:
    return card.closed_ms is not None and card.closed_ms <= at_ms


def classify(card: CardState, at_ms: int, params: TriggerParams) -> str | None:
    """The lapse trigger for the statements known at ``at_ms``, or None with too few of them."""
    c = params.cards
    bits = [int(b) for b in card.earlier] + [pif for t, pif in card.statements if t <= at_ms]
    recent = bits[-c.statements :]
    if len(recent) < c.min_statements:
        return None
    share = c.paid_in_full_share
    in_full = sum(recent)
    # "more than half paid in full": in_full > share * n, exactly
    if in_full * share.denominator > share.numerator * len(recent):
        return "lapsed_transactor"
    return "lapsed_revolver"


def due_items(state: CustomerState, params: TriggerParams, *, named: bool = True) -> list[DueItem]:
    c = params.cards
    items: list[DueItem] = []
    for card_id, card in state.cards.items():
        if "never_activated" in params.enabled and card.opened and not card.never_done:
            opened_at, opened_id = card.opened
            due = opened_at + c.never_ms
            if (
                due >= state.floor_ms
                and not _closed_by(card, due)
                and not any(opened_at <= t <= due for t, _ in card.activity)
            ):

                def mark_never(card: CardState = card) -> None:
                    card.never_done = True

                items.append(
                    DueItem(due, "never_activated", f"{card_id}|never", (opened_id,), mark_never)
                )
        for i, (u, activity_id) in enumerate(card.activity):
            nxt = card.activity[i + 1][0] if i + 1 < len(card.activity) else None
            due = u + c.inactive_ms
            if nxt is not None and nxt <= due:
                continue  # active again within 180 days (at the due time itself included)
            if due < state.floor_ms or u in card.lapse_marks or _closed_by(card, due):
                continue
            trigger = classify(card, due, params)
            if trigger is None or trigger not in params.enabled:
                continue

            def mark_lapse(card: CardState = card, u: int = u) -> None:
                card.lapse_marks.append(u)

            items.append(
                DueItem(
                    due,
                    trigger,
                    f"{card_id}|{format_ms(u)}|lapse" if named else "",
                    (activity_id,),
                    mark_lapse,
                )
            )
    return items


def prune(state: CustomerState, params: TriggerParams) -> None:
    floor = state.floor_ms
    c = params.cards
    for card_id in list(state.cards):
        card = state.cards[card_id]
        if card.closed_ms is not None and card.closed_ms < floor:
            # Closed before anything can be due: excluded for good. A tombstone (the closing
            # time) stays, so later events on the card cannot bring it back to life.
            state.cards[card_id] = CardState(closed_ms=card.closed_ms, last_ms=card.last_ms)
            continue
        card.activity = keep_since(card.activity, _t, floor - c.inactive_ms)
        if card.lapse_marks:
            card.lapse_marks = [u for u in card.lapse_marks if u + c.inactive_ms >= floor]
        # Statements as of any time >= floor: those since it plus the last few before it.
        # (Sorted by time: when the first is at or after the floor, all of them are.)
        statements = card.statements
        if statements and statements[0][0] < floor:
            earlier = card.earlier + "".join(str(p) for t, p in statements if t < floor)
            card.statements = [s for s in statements if s[0] >= floor]
        else:
            earlier = card.earlier
        card.earlier = earlier[-c.statements :]
        _strip_ids(card, params)
        if (
            card.opened
            and card.opened[1]
            and (card.never_done or card.opened[0] + c.never_ms < floor)
        ):
            card.opened = (card.opened[0], "")  # its only use, never_activated's evidence, is past


_LAPSE = {
    "inactive_days": 180,
    "statements": 6,
    "min_statements": 2,
    "paid_in_full_share": 0.5,
}


class ReactivationFamily(TriggerFamily):
    """Credit cards: the two lapses (one lapse computation) and the card never used."""

    name = "reactivation"
    triggers = (
        spec("lapsed_transactor", "reactivation", "reactivation_cashback", "email", MARKETING,
             40, **_LAPSE),
        spec("lapsed_revolver", "reactivation", "reactivation_balance_transfer", "email",
             MARKETING, 40, **_LAPSE),
        spec("never_activated", "reactivation", "activation_nudge", "email", MARKETING, 30,
             days=90),
    )  # fmt: skip
    events = EVENTS
    uses_slice = False
    shared_parameters = tuple(_LAPSE)
    apply = staticmethod(apply)
    on_event = staticmethod(on_event)
    due_items = staticmethod(due_items)
    holds_data = staticmethod(holds_data)
    prune = staticmethod(prune)

    def configure(self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int) -> None:
        return None  # TriggerParams.cards


FAMILY = ReactivationFamily()
