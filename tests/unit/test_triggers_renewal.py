"""Contract triggers (docs/contract.md: catalogue rows 4-7 and "Contracts").

Every test reads Given / When / Then; the comment on each expectation says why it holds.
Customers are fed like the shell feeds them: ``step`` at the stream time, then ``advance``
whenever the clock reaches ``next_due_ms``.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.core import events as ev
from streams.core.decisions import Candidate
from streams.core.engine import step
from streams.core.errors import ConfigError
from streams.testing import params_for
from tests.unit.story import DAY, PARAMS, Story, at

WITHOUT_LAPSE = params_for(config={"triggers": {"usage_lapsed": {"enabled": False}}})

# --- scenario helpers -----------------------------------------------------------------------


# --- scenario helpers -----------------------------------------------------------------------


def contract(
    story: Story,
    day: float,
    expires_day: float,
    *,
    contract_id: str = "ct-1",
    status: str = "active",
    auto_renew: bool = False,
    product: str = "annual_pass",
    event_id: str | None = None,
) -> list[Candidate]:
    return story.send(
        ev.Contract,
        day,
        contract_id=contract_id,
        product=product,
        status=status,
        expires_at_ms=at(expires_day),
        auto_renew=auto_renew,
        event_id=event_id,
    )


def visit(story: Story, day: float, sentiment: str = "positive", **kw: Any) -> list[Candidate]:
    return story.send(ev.Visit, day, venue=kw.pop("venue", "zoo"), sentiment=sentiment, **kw)


# --- renewal_after_positive_visit -------------------------------------------------------------


def test_offer_when_the_contract_expires_within_60_days_inclusive() -> None:
    for expires, expected in ((160, ["renewal_after_positive_visit"]), (160 + 1 / DAY, [])):
        # Given an active contract expiring 60 days (or 60 days + 1 ms) after the visit
        story = Story()
        contract(story, 0, expires, event_id="ct-v1")
        # When the customer has a positive visit on day 100
        fired = visit(story, 100, event_id="v1")
        # Then only "within the next 60 days" (inclusive) fires, at the visit
        assert [c.trigger for c in fired] == expected, expires
        if fired:
            (c,) = fired
            assert (c.instance, c.evidence, c.triggered_at_ms) == (
                "v1|ct-1",
                ("v1", "ct-v1"),
                at(100),
            )
            assert (c.action, c.channel, c.category, c.priority) == (
                "renewal_offer",
                "email",
                "marketing",
                80,
            )


def test_neutral_and_negative_visits_offer_nothing() -> None:
    for sentiment in ("neutral", "negative"):
        # Given a contract expiring in 40 days
        story = Story()
        contract(story, 0, 140)
        # When the visit is not positive
        # Then nothing: the trigger is about a positive visit
        assert visit(story, 100, sentiment) == [], sentiment


def test_complaint_29_days_before_the_visit_excludes_it_and_31_days_does_not() -> None:
    for complaint_day, expected in ((71, []), (69, ["renewal_after_positive_visit"])):
        # Given a contract expiring in 40 days and a complaint 29 or 31 days before the visit
        story = Story()
        contract(story, 0, 140)
        story.send(ev.Complaint, complaint_day, category="billing")
        # When the positive visit happens on day 100
        fired = visit(story, 100)
        # Then a complaint in the last 30 days excludes it (an exclusion publishes nothing)
        assert [c.trigger for c in fired] == expected, complaint_day


def test_renewed_contract_gets_no_offer() -> None:
    for renewal in ("contract", "charged"):
        # Given a contract expiring on day 140, renewed on day 90 to day 495
        story = Story()
        contract(story, 0, 140, auto_renew=renewal == "charged")
        if renewal == "contract":
            contract(story, 90, 495, status="renewed")
        else:
            story.send(
                ev.AutoRenewCharged,
                90,
                contract_id="ct-1",
                amount_cents=9900,
                expires_at_ms=at(495),
            )
        # When a positive visit follows
        # Then no offer: the expiry in force is a year away (renewal moved it)
        assert [c.trigger for c in visit(story, 100)] == [], renewal


def test_cancelled_and_expired_contracts_get_nothing() -> None:
    for status in ("cancelled", "expired"):
        # Given a contract that was active, then cancelled/expired before its expiry date
        story = Story()
        contract(story, 0, 140)
        contract(story, 50, 140, status=status)
        # When a positive visit comes and the clock runs past the expiry
        visit(story, 100)
        story.run_until(200)
        # Then nothing at all: no offer, no reminders
        assert story.names() == [], status


def test_contract_arriving_after_the_visit_still_completes_the_offer() -> None:
    # Given a positive visit on day 100 with no contract known yet
    story = Story()
    assert visit(story, 100, event_id="v1") == []
    story.run_until(103)
    # When the contract event stamped day 99 arrives 4 days late
    fired = contract(story, 99, 140, event_id="late-ct")
    # Then the visit's offer fires now: late events take part; instance and time are the visit's
    (c,) = fired
    assert (c.trigger, c.instance, c.triggered_at_ms) == (
        "renewal_after_positive_visit",
        "v1|ct-1",
        at(100),
    )


def test_late_complaint_does_not_withdraw_an_offer_already_made() -> None:
    # Given an offer made at a positive visit on day 100
    story = Story()
    contract(story, 0, 140)
    visit(story, 100)
    # When a complaint stamped day 95 arrives late
    story.send(ev.Complaint, 95, category="staff")
    contract(story, 101, 130, contract_id="ct-2")
    # Then the published offer stands and nothing else happens (no retraction exists); the
    # new contract does not reuse the excluded visit either
    assert story.names() == ["renewal_after_positive_visit"]


def test_visit_naming_a_contract_concerns_that_contract_only() -> None:
    # Given two contracts expiring soon
    story = Story()
    contract(story, 0, 135, contract_id="a")
    contract(story, 0, 140, contract_id="b")
    # When a visit names contract b, and another names none
    named = visit(story, 100, contract_id="b", event_id="v1")
    both = visit(story, 101, event_id="v2")
    # Then the first offers b only; the second offers each contract once
    assert [c.instance for c in named] == ["v1|b"]
    assert sorted(c.instance for c in both) == ["v2|a", "v2|b"]


# --- renewal_reminder -----------------------------------------------------------------------


def test_reminders_30_and_7_days_before_expiry() -> None:
    # Given a contract without auto-renew expiring on day 200
    story = Story()
    contract(story, 0, 200, event_id="ct-v1")
    # When the clock reaches 1 ms before day 170, then day 170, then day 193
    assert story.run_until(170 - 1 / DAY) == []
    (t30,) = story.run_until(170)
    (t7,) = story.run_until(193)
    # Then one reminder at each due time, each its own instance (contract + expiry + T-n)
    assert (t30.trigger, t30.instance, t30.triggered_at_ms, t30.evidence) == (
        "renewal_reminder",
        "ct-1|2026-07-24T00:00:00.000Z|T-30",
        at(170),
        ("ct-v1",),
    )
    assert t7.instance.endswith("|T-7") and t7.triggered_at_ms == at(193)
    assert story.run_until(400) == []


def test_renewal_cancels_reminders_of_the_old_expiry() -> None:
    for renew_day, expected in ((150, []), (180, ["T-30"]), (170, [])):
        # Given a contract expiring on day 200, renewed to day 565 on `renew_day`
        story = Story()
        contract(story, 0, 200)
        contract(story, renew_day, 565, status="renewed")
        story.run_until(300)
        # Then reminders of the old expiry stop from the renewal on; one stamped exactly at a
        # due time is applied first (day 170 cancels T-30 too)
        got = [c.instance.rsplit("|", 1)[1] for c in story.fired]
        assert got == expected, renew_day


def test_no_reminder_for_auto_renew_or_closed_contracts() -> None:
    for kwargs in ({"auto_renew": True}, {"status": "cancelled"}, {"status": "expired"}):
        # Given a contract that auto-renews, or is cancelled/expired
        story = Story()
        contract(story, 0, 200, **kwargs)
        # When the clock passes both reminder due times (usage keeps auto_renew_unused quiet)
        story.send(ev.ProductUsage, 160, product="annual_pass", activity="login")
        story.run_until(300)
        # Then no reminder: reminders are for open contracts without auto-renew
        assert "renewal_reminder" not in story.names(), kwargs


# --- auto_renew_confirmation ------------------------------------------------------------------


def test_auto_renew_charged_confirms_once_as_a_service_message() -> None:
    # Given an auto-renewing contract
    story = Story()
    contract(story, 0, 200, auto_renew=True)
    story.send(ev.ProductUsage, 150, product="annual_pass", activity="login")
    # When it is charged, and the same event is delivered again
    fired = story.send(
        ev.AutoRenewCharged,
        199,
        contract_id="ct-1",
        amount_cents=9900,
        expires_at_ms=at(565),
        event_id="chg",
    )
    result = step(
        story.state,
        ev.AutoRenewCharged(
            event_id="chg",
            customer_id="cust-1",
            occurred_at_ms=at(199),
            contract_id="ct-1",
            amount_cents=9900,
            expires_at_ms=at(565),
        ),
        story.now,
        PARAMS,
    )
    # Then one confirmation, service category with the service priority; the repeat is ignored
    (c,) = fired
    assert (c.trigger, c.instance, c.evidence, c.category, c.priority, c.action) == (
        "auto_renew_confirmation",
        "chg",
        ("chg",),
        "service",
        100,
        "payment_confirmation",
    )
    assert result.duplicate and result.candidates == [] and result.state is story.state


# --- auto_renew_unused -------------------------------------------------------------------------


def test_unused_fires_when_no_usage_in_90_days_before_the_check() -> None:
    for usage_day, expected in ((170 - 89, []), (170 - 91, ["auto_renew_unused"])):
        # Given an auto-renewing contract expiring on day 200 (check due on day 170), and
        # usage_lapsed off (the single usage lapses 60 days later: another trigger's business)
        story = Story(WITHOUT_LAPSE)
        contract(story, 0, 200, auto_renew=True, event_id="ct-v1")
        # When the product was last used 89 or 91 days before the check
        story.send(ev.ProductUsage, usage_day, product="annual_pass", activity="login")
        story.run_until(300)
        # Then only the 91-day silence fires, at the due time, as a service message
        assert story.names() == expected, usage_day
        if expected:
            (c,) = story.fired
            assert (c.instance, c.triggered_at_ms, c.category, c.priority, c.action) == (
                "ct-1|2026-07-24T00:00:00.000Z|unused",
                at(170),
                "service",
                100,
                "usage_check_in",
            )


def test_usage_matches_by_contract_id_else_by_product_name() -> None:
    cases = [
        ({"product": "other", "contract_id": "ct-1"}, []),  # names the contract: counts
        ({"product": "annual_pass"}, []),  # same product name: counts
        ({"product": "annual_pass", "contract_id": "ct-9"}, ["auto_renew_unused"]),  # other one
        ({"product": "software_license"}, ["auto_renew_unused"]),  # another product
    ]
    for usage, expected in cases:
        # Given an auto-renewing annual pass expiring on day 200
        story = Story()
        contract(story, 0, 200, auto_renew=True)
        # When some product usage happens on day 150
        story.send(ev.ProductUsage, 150, activity="login", **usage)
        story.run_until(300)
        # Then only usage of this contract (by id, else by product name) keeps it quiet
        assert story.names() == expected, usage


def test_a_visit_counts_as_usage() -> None:
    # Given an auto-renewing annual pass and a neutral visit at the venue named like it
    story = Story()
    contract(story, 0, 200, auto_renew=True)
    visit(story, 150, "neutral", venue="annual_pass")
    story.run_until(300)
    # Then the product saw a visit in the last 90 days: no check-in
    assert story.names() == []


def test_unused_not_for_contracts_without_auto_renew_or_closed() -> None:
    # Given a cancelled auto-renewing contract with no usage at all
    story = Story()
    contract(story, 0, 200, auto_renew=True)
    contract(story, 100, 200, auto_renew=True, status="cancelled")
    story.run_until(300)
    # Then nothing: cancelled contracts get nothing
    assert story.names() == []


def test_a_contract_event_seen_again_after_its_id_was_pruned_adds_no_version() -> None:
    # Found by test_replaying_a_prefix_changes_nothing: versions before the floor keep no event
    # id; the same contract event again (its id gone from ``seen``) added a second version.
    from streams.core.state import ContractState
    from streams.core.triggers import renewal

    record = ContractState("annual_pass", [(100, "active", 900, 0, "")])
    renewal._add_version(record, (100, "active", 900, 0, "e4"))
    assert record.versions == [(100, "active", 900, 0, "")]


def test_reminder_days_per_product_with_the_global_default() -> None:
    params = params_for(
        config={"triggers": {"renewal_reminder": {"days_before_by_product": {"gym": [14]}}}}
    )
    for product, expected in (
        ("gym", [(100 - 14, "renewal_reminder")]),  # its own: 14 days before only
        ("annual_pass", [(100 - 30, "renewal_reminder"), (100 - 7, "renewal_reminder")]),
    ):
        # Given a contract of the product, without auto-renew, expiring on day 100
        story = Story(params)
        contract(story, 0, 100, product=product)
        story.run_until(120)
        # Then its reminders come on its product's days, else on the global days_before
        assert story.fired_at() == expected, product
    # A product's days are checked like the global ones
    with pytest.raises(ConfigError, match="days_before_by_product.gym: must be a non-empty list"):
        params_for(
            config={"triggers": {"renewal_reminder": {"days_before_by_product": {"gym": []}}}}
        )
