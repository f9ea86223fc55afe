"""Usage lapse for subscriptions (docs/contract.md: catalogue, "Usage lapse"): an open contract
used at least once and then not for 60 days (per product overrides) gives ``usage_lapsed``,
once per lapse; never-used and closed contracts nothing; the auto-renew service check-in of the
same contract and day wins."""

from __future__ import annotations

from typing import Any

from streams.core import events as ev
from streams.testing import params_for
from tests.unit.story import DAY, Story, at


def lapse_story(**config: Any) -> Story:
    return Story(params_for(config={"triggers": {"usage_lapsed": config}} if config else None))


def contract(story: Story, day: float, expires_day: float, **kw: Any) -> None:
    story.send(
        ev.Contract,
        day,
        contract_id=kw.pop("contract_id", "ct-1"),
        product=kw.pop("product", "gym"),
        status=kw.pop("status", "active"),
        expires_at_ms=at(expires_day),
        auto_renew=kw.pop("auto_renew", False),
        **kw,
    )


def use(story: Story, day: float, **kw: Any) -> None:
    kw.setdefault("contract_id", "ct-1")
    story.send(ev.ProductUsage, day, product=kw.pop("product", "gym"), activity="workout", **kw)


def test_a_lapse_60_days_after_the_last_usage() -> None:
    for next_use, expected in ((70, []), (70 + 1 / DAY, ["usage_lapsed"])):
        # Given an open contract used on day 10
        story = lapse_story()
        contract(story, 0, 400, event_id="k1")
        use(story, 10)
        # When the next usage comes exactly 60 days later (or 1 ms after)
        use(story, next_use)
        story.run_until(200)
        # Then a usage stamped at the due time cancels the lapse; after it, the lapse fired
        # at day 70 (and the next lapse, 60 days after the second usage, too)
        lapses = [c for c in story.fired if c.triggered_at_ms <= at(100)]
        assert [c.trigger for c in lapses] == expected, next_use
        if lapses:
            (c,) = lapses
            assert c.triggered_at_ms == at(70)
            assert c.instance == "ct-1|2026-01-15T00:00:00.000Z|lapsed"
            assert (c.action, c.channel, c.category, c.priority) == (
                "usage_win_back",
                "email",
                "marketing",
                45,
            )
            assert c.evidence == ("k1",)


def test_once_per_lapse_and_again_after_new_usage() -> None:
    # Given usage on day 10, a lapse on day 70, usage again on day 100
    story = lapse_story()
    contract(story, 0, 400)
    use(story, 10)
    story.run_until(90)
    use(story, 100)
    story.run_until(250)
    # Then one lapse each: day 70 and day 160
    assert story.fired_at() == [(70, "usage_lapsed"), (160, "usage_lapsed")]


def test_never_used_contracts_get_nothing() -> None:
    story = lapse_story()
    contract(story, 0, 400)
    story.run_until(300)
    assert story.names() == []


def test_a_contract_closed_by_the_due_time_gets_nothing() -> None:
    for status_day, expected in ((69, []), (71, ["usage_lapsed"])):
        # Given usage on day 10, the contract cancelled on day 69 (or 71)
        story = lapse_story()
        contract(story, 0, 400)
        use(story, 10)
        contract(story, status_day, 400, status="cancelled")
        story.run_until(200)
        # Then only a contract still open on day 70 lapses
        assert story.names() == expected, status_day


def test_a_contract_expired_by_the_due_time_gets_nothing() -> None:
    for expires, expected in ((70, []), (70 + 1 / DAY, ["usage_lapsed"])):
        story = lapse_story()
        contract(story, 0, expires)
        use(story, 10)
        story.run_until(200)
        assert [n for n in story.names() if n == "usage_lapsed"] == expected, expires


def test_usage_by_product_counts_when_the_event_names_no_contract() -> None:
    # Given usage of the contract's product without a contract id, and a visit to its venue
    story = lapse_story()
    contract(story, 0, 400)
    story.send(ev.ProductUsage, 10, product="gym", activity="workout")
    story.send(ev.Visit, 50, venue="gym", sentiment="neutral")
    story.run_until(200)
    # Then the lapse is counted from the visit (day 50 + 60)
    assert story.fired_at() == [(110, "usage_lapsed")]
    # and usage of another product does not count
    other = lapse_story()
    contract(other, 0, 400)
    other.send(ev.ProductUsage, 10, product="pool", activity="swim")
    other.run_until(200)
    assert other.names() == []


def test_the_window_is_per_product() -> None:
    for product, expected in (("gym", [(40, "usage_lapsed")]), ("pool", [(70, "usage_lapsed")])):
        # Given gym lapses after 30 days, everything else after the default 60
        story = lapse_story(inactive_days_by_product={"gym": 30})
        contract(story, 0, 400, product=product)
        use(story, 10, product=product)
        story.run_until(100)
        assert story.fired_at() == expected, product


def test_the_auto_renew_check_in_of_the_same_day_wins() -> None:
    # (With the defaults they cannot meet: a lapse 60 days after a usage is within the check-in's
    # 90-day usage lookback. A 120-day lapse window can.)
    for expires, expected in (
        (160, [(130, "auto_renew_unused")]),  # check-in due day 130 = the lapse's day
        (161, [(130, "usage_lapsed"), (131, "auto_renew_unused")]),  # check-in on day 131
    ):
        # Given an auto-renewing contract used on day 10 only, lapsing after 120 days
        story = lapse_story(inactive_days=120)
        contract(story, 0, expires, auto_renew=True)
        use(story, 10)
        # When the lapse (day 130) and the unused check-in (expiry - 30) fall on one day or not
        story.run_until(expires - 1)
        # Then on one day only the service check-in fires
        assert story.fired_at() == expected, expires


def test_disabled_keeps_nothing() -> None:
    story = Story(params_for(config={"triggers": {"usage_lapsed": {"enabled": False}}}))
    contract(story, 0, 400)
    use(story, 10)
    story.run_until(200)
    assert story.names() == []
    assert story.state is not None and story.state.ext == {} and story.state.slices == {}
