"""Purchase-habit triggers (docs/contract.md: catalogue rows 11-12 and "Yearly habit").

Every test reads Given / When / Then; the comment on each expectation says why it holds.
Customers are fed like the shell feeds them: ``step`` at the stream time, then ``advance``
whenever the clock reaches ``next_due_ms``.
"""

from __future__ import annotations

from typing import Any

from streams.core import events as ev
from streams.core.decisions import Candidate
from tests.unit.story import DAY, Story, at

# --- scenario helpers -----------------------------------------------------------------------


# --- scenario helpers -----------------------------------------------------------------------


def buy(story: Story, day: float, category: str = "air_filter", **kw: Any) -> list[Candidate]:
    return story.send(ev.Purchase, day, product_category=category, amount_cents=2_500, **kw)


# --- replacement_due ------------------------------------------------------------------------


def test_configured_cycle_fires_at_90_days_and_not_at_89() -> None:
    # Given one air filter bought on day 0 (configured cycle: 90 days)
    story = Story()
    buy(story, 0, event_id="p1")
    # When the clock reaches day 89, then day 90
    assert story.run_until(89) == []
    (c,) = story.run_until(90)
    # Then the reminder fires when the cycle has elapsed, once
    assert (c.trigger, c.instance, c.evidence, c.triggered_at_ms) == (
        "replacement_due",
        "air_filter|2026-01-05T00:00:00.000Z",
        ("p1",),
        at(90),
    )
    assert (c.action, c.channel, c.category, c.priority) == (
        "replacement_reminder",
        "email",
        "marketing",
        20,
    )
    assert story.run_until(900) == []


def test_buying_again_within_the_cycle_moves_the_reminder() -> None:
    # Given air filters bought on day 0 and again on day 90 (exactly at the due time)
    story = Story()
    buy(story, 0)
    buy(story, 90)
    # Then no reminder for the first (applied first), one 90 days after the second
    assert story.run_until(179) == []
    assert [c.triggered_at_ms for c in story.run_until(180)] == [at(180)]


def test_own_median_after_three_purchases_replaces_the_configured_cycle() -> None:
    # Given air filters bought on days 0, 30 and 70 (intervals 30 and 40: median 35)
    story = Story()
    for day in (0, 30, 70):
        buy(story, day)
    # Then the third purchase is due after 35 days, not the configured 90
    assert story.run_until(104) == []
    assert [c.triggered_at_ms for c in story.run_until(105)] == [at(105)]


def test_two_purchases_still_use_the_configured_cycle() -> None:
    # Given phones bought on days 0 and 100 (configured cycle 730 days)
    story = Story()
    buy(story, 0, "phone")
    buy(story, 100, "phone")
    # Then the cycle is the configured one: 2 purchases are not enough for the own median
    assert story.run_until(829) == []
    assert [c.triggered_at_ms for c in story.run_until(830)] == [at(830)]


def test_category_without_configured_cycle_waits_for_the_customers_own() -> None:
    # Given coffee (no configured cycle) bought on days 0 and 10
    story = Story()
    buy(story, 0, "coffee")
    buy(story, 10, "coffee")
    assert story.run_until(300) == []  # no cycle yet
    # When a third purchase on day 300 makes the own median (10 and 290: 150 days)
    buy(story, 300, "coffee")
    # Then it is due 150 days after it
    assert [c.triggered_at_ms for c in story.run_until(460)] == [at(450)]


# --- usual_booking_missed -------------------------------------------------------------------


def test_yearly_habit_missed_fires_at_anniversary_plus_14_days() -> None:
    # Given holidays booked on day 0 and day 365 (a yearly habit)
    story = Story()
    buy(story, 0, "holiday", event_id="h1")
    buy(story, 365, "holiday", event_id="h2")
    # When nothing is booked by day 365 + 365 + 14
    assert story.run_until(365 + 379 - 1 / DAY) == []
    (c,) = story.run_until(365 + 379)
    # Then the rebooking offer fires, evidence the two bookings
    assert (c.trigger, c.instance, c.evidence, c.triggered_at_ms) == (
        "usual_booking_missed",
        "holiday|2027-01-05T00:00:00.000Z",
        ("h1", "h2"),
        at(744),
    )
    assert (c.action, c.priority) == ("rebooking_offer", 25)


def test_yearly_habit_gap_bounds_335_to_395_days() -> None:
    for gap, expected in (
        (334, []),
        (335, ["usual_booking_missed"]),
        (395, ["usual_booking_missed"]),
        (396, []),
    ):
        # Given two holidays `gap` days apart
        story = Story()
        buy(story, 0, "holiday")
        buy(story, gap, "holiday")
        story.run_until(gap + 400)
        # Then only gaps of 335-395 days (inclusive) are a yearly habit
        assert story.names() == expected, gap


def test_booking_again_by_the_due_time_prevents_the_offer() -> None:
    # Given a yearly habit (days 0 and 365), booked again at the due time exactly
    story = Story()
    buy(story, 0, "holiday")
    buy(story, 365, "holiday")
    buy(story, 744, "holiday")
    story.run_until(744)
    # Then no offer: the booking stamped at the due time is applied first
    assert story.names() == []
