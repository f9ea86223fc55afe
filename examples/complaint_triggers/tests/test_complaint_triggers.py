"""The example plugin's triggers, tested with the kit (streams.testing): both sides of every
threshold, in event time, without a broker."""

from __future__ import annotations

import pytest
from streams.core.errors import ConfigError
from streams.core.state import CustomerState
from streams.testing import Story

from complaint_triggers import FAMILY

BOTH = ["complaint_streak", "complaint_check_in"]


def story(*triggers: str, **streak: int) -> Story:
    config = {"triggers": {"complaint_streak": streak}} if streak else None
    return Story(triggers=triggers or BOTH, config=config, families=[FAMILY])


def complain(s: Story, day: float) -> list[str]:
    return [c.trigger for c in s.send("complaint", day, category="billing")]


def test_the_third_complaint_within_30_days_fires_a_streak_at_it() -> None:
    for last_day, expected in ((30, ["complaint_streak"]), (30.001, [])):
        # Given two complaints on days 0 and 10
        s = story("complaint_streak")
        complain(s, 0)
        complain(s, 10)
        # When the third comes 30 days (inclusive) or a little more after the first
        fired = complain(s, last_day)
        # Then only the one within the window fires, at the third complaint
        assert fired == expected, last_day
        if fired:
            (c,) = s.fired
            assert (c.instance, c.evidence, c.triggered_at_ms) == (
                "e3",
                ("e1", "e2", "e3"),
                s.at(30),
            )
            assert (c.action, c.channel, c.category) == (
                "service_recovery_call",
                "phone",
                "service",
            )


def test_a_streak_fires_once_and_its_complaints_do_not_count_again() -> None:
    # Given a streak of three that fired
    s = story("complaint_streak")
    for day in (0, 1, 2):
        complain(s, day)
    # When a fourth and fifth follow
    complain(s, 3)
    complain(s, 4)
    # Then nothing more (two fresh complaints are not a streak); a sixth makes the next one
    assert s.names() == ["complaint_streak"]
    assert complain(s, 5) == ["complaint_streak"]


def test_the_count_is_a_parameter() -> None:
    # Given count: 2
    s = story("complaint_streak", count=2)
    complain(s, 0)
    # Then the second complaint is a streak
    assert complain(s, 20) == ["complaint_streak"]


def test_a_check_in_14_days_after_a_complaint_unless_another_came() -> None:
    # Given a complaint on day 0
    s = story("complaint_check_in")
    complain(s, 0)
    # Then a check-in is due on day 14, and fires there
    assert s.due() == [(s.at(14), "complaint_check_in")]
    assert s.run_until(13.999) == []
    assert [c.trigger for c in s.run_until(14)] == ["complaint_check_in"]
    assert s.fired[0].triggered_at_ms == s.at(14)


def test_a_complaint_stamped_at_the_due_time_cancels_the_check_in_and_starts_its_own() -> None:
    # Given a complaint on day 0
    s = story("complaint_check_in")
    complain(s, 0)
    # When another comes exactly 14 days later
    assert complain(s, 14) == []
    # Then only the second one's check-in is due
    assert s.due() == [(s.at(28), "complaint_check_in")]


def test_disabled_by_default_and_keeps_nothing_then() -> None:
    # Given the defaults (the plugin ships disabled)
    s = Story(families=[FAMILY])
    for day in (0, 1, 2):
        complain(s, day)
    # Then nothing fires and the record holds no slice of it
    assert s.fired == [] and s.due() == []
    assert s.state is not None
    assert "complaints" not in CustomerState.from_bytes(s.state.to_bytes()).ext


def test_the_slice_is_bounded_and_pruned() -> None:
    # Given many complaints, far apart
    s = story()
    for day in range(0, 400, 5):
        complain(s, day)
    # Then the record stays small: old complaints are pruned as the clock moves
    assert s.record_size() < 1_500


def test_a_bad_count_is_refused_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="triggers.complaint_streak.count"):
        story(count=1)
