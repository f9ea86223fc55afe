"""Company-caused risk (docs/contract.md: catalogue, "Price rise"): a contract event raising the
price by at least 10 %, for a customer with a complaint in the last 180 days or a usage lapse,
gives ``price_increase_at_risk`` at the event."""

from __future__ import annotations

from typing import Any

import pytest

from streams.core import events as ev
from streams.core.errors import ConfigError
from streams.testing import params_for
from tests.unit.story import DAY, Story, at


def priced(story: Story, day: float, price_cents: int | None, **kw: Any) -> list[str]:
    fired = story.send(
        ev.Contract,
        day,
        contract_id="ct-1",
        product=kw.pop("product", "gym"),
        status=kw.pop("status", "active"),
        expires_at_ms=at(1000),
        auto_renew=True,
        price_cents=price_cents,
        **kw,
    )
    return [c.trigger for c in fired if c.trigger == "price_increase_at_risk"]


def complained(day: float) -> Story:
    story = Story()
    story.send(ev.Complaint, day, category="billing")
    return story


def test_a_rise_of_10_percent_for_a_customer_who_complained() -> None:
    for new, expected in ((11_000, ["price_increase_at_risk"]), (10_999, [])):
        # Given a contract at 100.00 and a complaint on day 10
        story = complained(10)
        priced(story, 0, 10_000, event_id="k1")
        # When the price goes to 110.00 (or 109.99) on day 50
        fired = priced(story, 50, new, event_id="k2")
        # Then only a rise of 10 % or more fires, at the event
        assert fired == expected, new
        if fired:
            c = story.fired[-1]
            assert (c.action, c.channel, c.category, c.priority) == (
                "retention_call",
                "phone",
                "marketing",
                95,
            )
            assert (c.instance, c.evidence, c.triggered_at_ms) == ("ct-1|k2", ("k1", "k2"), at(50))


def test_the_complaint_must_be_within_180_days() -> None:
    for complaint_day, expected in ((20, ["price_increase_at_risk"]), (20 - 1 / DAY, [])):
        # Given a complaint 180 days (or 1 ms more) before the rise on day 200
        story = complained(complaint_day)
        priced(story, 30, 10_000)
        # Then only a complaint within the 180 days counts
        assert priced(story, 200, 12_000) == expected, complaint_day


def test_no_complaint_and_no_lapse_is_no_risk() -> None:
    story = Story()
    priced(story, 0, 10_000)
    assert priced(story, 50, 20_000) == []


def test_a_usage_lapse_makes_the_customer_at_risk() -> None:
    for last_use, expected in ((40, ["price_increase_at_risk"]), (40 + 1 / DAY, [])):
        # Given an open contract last used on day 40 (or 1 ms later)
        story = Story()
        priced(story, 0, 10_000)
        story.send(ev.ProductUsage, last_use, product="gym", activity="x", contract_id="ct-1")
        # When the price rises on day 100: 60 days after the usage (or 1 ms less)
        # Then only a customer whose usage has lapsed (60 days) is at risk
        assert priced(story, 100, 11_000) == expected, last_use


def test_a_price_cut_or_the_first_price_is_no_rise() -> None:
    story = complained(1)
    assert priced(story, 2, 10_000) == []  # the first price: nothing to compare
    assert priced(story, 3, 9_000) == []  # a cut
    assert priced(story, 4, None) == []  # no price given: nothing said about it
    assert priced(story, 5, 9_900) == ["price_increase_at_risk"]  # +10 % over 90.00


def test_a_closed_contract_gets_nothing() -> None:
    story = complained(1)
    priced(story, 2, 10_000)
    assert priced(story, 3, 20_000, status="cancelled") == []


def test_the_share_is_a_parameter_and_validated() -> None:
    params = params_for(config={"triggers": {"price_increase_at_risk": {"min_increase": 0.25}}})
    story = Story(params)
    story.send(ev.Complaint, 1, category="billing")
    priced(story, 2, 10_000)
    assert priced(story, 3, 12_499) == []
    assert priced(story, 4, 15_700) == ["price_increase_at_risk"]  # +25.6 % over 124.99
    with pytest.raises(ConfigError, match="price_increase_at_risk.min_increase"):
        params_for(config={"triggers": {"price_increase_at_risk": {"min_increase": 0}}})
