"""Where the savings went (docs/contract.md: catalogue, "Savings drop"): a drop followed by an
internal credit to the customer's own investment account is ``savings_drop_to_own_investment``,
to their loan account ``savings_drop_to_loan_payoff`` (>= 80 % of the drop, within 7 days);
``savings_drop_unexplained`` only when no follow-up of any kind matched."""

from __future__ import annotations

from streams.core import events as ev
from streams.core.decisions import Candidate
from streams.testing import params_for
from tests.unit.story import DAY, Story, at
from tests.unit.test_triggers_savings import debit, saver

DROP = 1_000_000  # half of the saver's 20,000 baseline: a drop on day 90


def internal_credit(story: Story, day: float, cents: int, account_type: str) -> list[Candidate]:
    return story.send(
        ev.Transaction,
        day,
        account_id=f"{account_type[:3]}-1",
        account_type=account_type,
        direction="credit",
        amount_cents=cents,
        rail="internal",
    )


def test_a_credit_to_the_own_investment_account_of_80_percent_fires_at_the_credit() -> None:
    for cents, expected in ((800_000, ["savings_drop_to_own_investment"]), (799_999, [])):
        # Given a drop of 10,000 on day 90
        story = saver()
        debit(story, 90, DROP, event_id="d1")
        # When 80 % (or a cent less) of it is credited to the customer's investment account
        fired = internal_credit(story, 92, cents, "investment")
        # Then only 80 % or more explains it, at the credit
        assert [c.trigger for c in fired] == expected, cents
        if fired:
            (c,) = fired
            assert (c.action, c.channel, c.category, c.priority) == (
                "investment_welcome",
                "email",
                "marketing",
                75,
            )
            assert c.instance == "sav|d1" and c.triggered_at_ms == at(92)


def test_a_credit_to_the_own_loan_account_within_7_days_fires_a_credit_review() -> None:
    for day, expected in ((97, ["savings_drop_to_loan_payoff"]), (97 + 1 / DAY, [])):
        # Given a drop on day 90
        story = saver()
        debit(story, 90, DROP)
        # When the loan account gets the money 7 days later (or 1 ms after that)
        fired = internal_credit(story, day, DROP, "loan")
        # Then only within the 7 days (inclusive) is it a payoff
        assert [c.trigger for c in fired] == expected, day
        if fired:
            assert (fired[0].action, fired[0].channel) == ("credit_review", "email")


def test_an_external_or_wrong_account_credit_is_no_follow_up() -> None:
    # Given a drop, then an ACH credit to the investment account and an internal credit to
    # a credit card: neither is "an internal credit to the own investment or loan account"
    story = saver()
    debit(story, 90, DROP)
    story.send(
        ev.Transaction,
        91,
        account_id="inv-1",
        account_type="investment",
        direction="credit",
        amount_cents=DROP,
        rail="ach",
    )
    internal_credit(story, 91, DROP, "credit_card")
    # Then the drop stays unexplained
    story.run_until(90 + 7 + 7)
    assert story.names() == ["savings_drop_unexplained"]


def test_unexplained_only_when_no_follow_up_of_any_kind_matched() -> None:
    for account_type, trigger in (
        ("investment", "savings_drop_to_own_investment"),
        ("loan", "savings_drop_to_loan_payoff"),
    ):
        for cents, expected in ((800_000, [trigger]), (799_999, ["savings_drop_unexplained"])):
            # Given a drop, and a credit to the investment or loan account
            story = saver()
            debit(story, 90, DROP)
            internal_credit(story, 93, cents, account_type)
            # When the unexplained due time passes (drop + 7 days + 7 days' lateness)
            story.run_until(90 + 7 + 7)
            # Then a matching credit explains the drop; one just too small does not
            assert story.names() == expected, (account_type, cents)


def test_an_explained_drop_stays_explained_when_the_trigger_is_disabled() -> None:
    # Given only savings_drop_unexplained enabled
    story = Story(params_for(triggers=["savings_drop_unexplained"]))
    for day in range(6, 90, 7):
        story.send(ev.Balance, day, account_id="sav", account_type="savings",
                   balance_cents=2_000_000)  # fmt: skip
    debit(story, 90, DROP)
    # When the money went to the loan account
    internal_credit(story, 91, DROP, "loan")
    story.run_until(90 + 7 + 7)
    # Then the drop is not unexplained (a follow-up matched), and nothing fires
    assert story.names() == []
