"""Card triggers (docs/contract.md: catalogue rows 8-10 and "Cards").

Every test reads Given / When / Then; the comment on each expectation says why it holds.
Customers are fed like the shell feeds them: ``step`` at the stream time, then ``advance``
whenever the clock reaches ``next_due_ms``.
"""

from __future__ import annotations

from typing import Any

from streams.core import events as ev
from streams.core.decisions import Candidate
from tests.unit.story import Story, at

# --- scenario helpers -----------------------------------------------------------------------


# --- scenario helpers -----------------------------------------------------------------------


def card_debit(story: Story, day: float, card: str = "cc-1", **kw: Any) -> list[Candidate]:
    return story.send(
        ev.Transaction,
        day,
        account_id=card,
        account_type="credit_card",
        direction="debit",
        amount_cents=5_000,
        rail="card",
        **kw,
    )


def statements(
    story: Story, first_day: float, paid_in_full: list[bool], card: str = "cc-1"
) -> None:
    for i, full in enumerate(paid_in_full):
        story.send(
            ev.Statement,
            first_day + 30 * i,
            account_id=card,
            statement_balance_cents=10_000,
            amount_paid_cents=10_000 if full else 2_500,
            minimum_due_cents=2_500,
        )


def active_card(story: Story, paid_in_full: list[bool]) -> None:
    """A card opened on day 0, last used on day 10, with monthly statements from day 5."""
    story.send(ev.AccountOpened, 0, account_id="cc-1", account_type="credit_card")
    card_debit(story, 3)
    card_debit(story, 10, event_id="last-use")
    statements(story, 5, paid_in_full)


# --- lapses ---------------------------------------------------------------------------------


def test_lapse_fires_at_180_days_and_not_at_179() -> None:
    # Given a card last used on day 10 with mostly paid-in-full statements
    story = Story()
    active_card(story, [True, True, False])
    # When the clock reaches day 189 (179 days) and then day 190 (180 days)
    assert story.run_until(189) == []
    (c,) = story.run_until(190)
    # Then the lapse fires at exactly 180 days, stamped with its due time
    assert (c.trigger, c.instance, c.evidence, c.triggered_at_ms) == (
        "lapsed_transactor",
        "cc-1|2026-01-15T00:00:00.000Z|lapse",
        ("last-use",),
        at(190),
    )
    assert (c.action, c.channel, c.category, c.priority) == (
        "reactivation_cashback",
        "email",
        "marketing",
        40,
    )
    assert story.run_until(900) == []  # once per lapse


def test_debit_at_179_days_or_exactly_at_the_due_time_prevents_the_lapse() -> None:
    for day in (189, 190):
        # Given a card last used on day 10
        story = Story()
        active_card(story, [True, True])
        # When it is used again 179 days later, or stamped exactly at the due time
        card_debit(story, day)
        # Then no lapse then (an event stamped at the due time is applied first); the next
        # lapse is counted from the new use
        assert story.run_until(day + 179) == [], day
        assert [c.trigger for c in story.run_until(day + 180)] == ["lapsed_transactor"]


def test_transactor_versus_revolver_by_statement_history() -> None:
    cases = [
        ([True, True, False], "lapsed_transactor"),  # 2 of 3 paid in full: more than half
        ([True, False], "lapsed_revolver"),  # exactly half is not more than half
        ([False, False, True], "lapsed_revolver"),
        # only the last 6 count: 3 old revolving statements drop out of the window
        ([False, False, False, True, True, True, True, False, True], "lapsed_transactor"),
    ]
    for history, expected in cases:
        # Given a card whose statements were paid like `history`
        story = Story()
        active_card(story, history)
        # When it lapses (the clock is well past every due time)
        story.run_until(600)
        # Then the statement history picks the offer
        assert story.names() == [expected], history
        (c,) = story.fired
        assert c.action == (
            "reactivation_cashback"
            if expected == "lapsed_transactor"
            else "reactivation_balance_transfer"
        )


def test_lapse_needs_two_statements() -> None:
    # Given a lapsed card with one statement
    story = Story()
    active_card(story, [True])
    story.run_until(600)
    # Then it cannot be classified: nothing fires
    assert story.names() == []


def test_closed_cards_are_excluded() -> None:
    # Given a card that would lapse on day 190, closed on day 100
    story = Story()
    active_card(story, [True, True])
    story.send(ev.AccountClosed, 100, account_id="cc-1", account_type="credit_card")
    story.run_until(600)
    # Then nothing: closed cards are excluded
    assert story.names() == []


def test_payments_are_not_activity() -> None:
    # Given a card last used on day 10 and paid off (a credit) on day 100
    story = Story()
    active_card(story, [True, True])
    story.send(
        ev.Transaction,
        100,
        account_id="cc-1",
        account_type="credit_card",
        direction="credit",
        amount_cents=10_000,
        rail="ach",
    )
    # Then the lapse still counts from the last debit: activity is a debit on the card
    assert [c.triggered_at_ms for c in story.run_until(600)] == [at(190)]


def test_statement_arriving_late_still_classifies_the_lapse() -> None:
    # Given a card with one statement, lapsing on day 190
    story = Story()
    active_card(story, [True])
    story.run_until(192)
    assert story.names() == []
    # When the second statement (stamped day 188) arrives 4 days late
    statements(story, 188, [True])
    story.run_until(193)
    # Then the lapse fires now, still stamped with its due time (late events take part)
    assert [(c.trigger, c.triggered_at_ms) for c in story.fired] == [("lapsed_transactor", at(190))]


# --- never_activated ------------------------------------------------------------------------


def test_never_activated_at_90_days_and_not_at_89() -> None:
    # Given a card opened on day 0 and never used
    story = Story()
    story.send(ev.AccountOpened, 0, account_id="cc-1", account_type="credit_card", event_id="open")
    # When the clock reaches day 89 and then day 90
    assert story.run_until(89) == []
    (c,) = story.run_until(90)
    # Then it fires at 90 days, once
    assert (c.trigger, c.instance, c.evidence, c.triggered_at_ms) == (
        "never_activated",
        "cc-1|never",
        ("open",),
        at(90),
    )
    assert (c.action, c.priority) == ("activation_nudge", 30)
    assert story.run_until(900) == []


def test_a_use_before_90_days_or_closing_prevents_never_activated() -> None:
    for then in ("debit", "closed"):
        # Given a card opened on day 0
        story = Story()
        story.send(ev.AccountOpened, 0, account_id="cc-1", account_type="credit_card")
        # When it is used, or closed, on day 89
        if then == "debit":
            card_debit(story, 89)
        else:
            story.send(ev.AccountClosed, 89, account_id="cc-1", account_type="credit_card")
        story.run_until(120)
        # Then no activation nudge: it was activated (or is closed)
        assert "never_activated" not in story.names(), then


def test_a_card_never_used_does_not_lapse() -> None:
    # Given a card opened and never used, with statements
    story = Story()
    story.send(ev.AccountOpened, 0, account_id="cc-1", account_type="credit_card")
    statements(story, 30, [True, True, True])
    story.run_until(900)
    # Then only never_activated: a lapse needs activity first
    assert story.names() == ["never_activated"]
