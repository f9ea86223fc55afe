"""Savings drop triggers (docs/contract.md: catalogue rows 1-3 and "Savings drop").

Every test reads Given / When / Then; the comment on each expectation says why it holds.
Customers are fed like the shell feeds them: ``step`` at the stream time, then ``advance``
whenever the clock reaches ``next_due_ms``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streams.config import build_config
from streams.core import events as ev
from streams.core.decisions import Candidate
from streams.core.triggers import TriggerParams
from tests.unit.story import DAY, PARAMS, Story, at

# --- scenario helpers -----------------------------------------------------------------------


def saver(balance_cents: int = 2_000_000, *, params: TriggerParams = PARAMS) -> Story:
    """A savings account observed weekly at one balance for the 12 weeks before day 90."""
    story = Story(params)
    for day in range(6, 90, 7):
        story.send(
            ev.Balance, day, account_id="sav", account_type="savings", balance_cents=balance_cents
        )
    return story


def debit(story: Story, day: float, cents: int, *, rail: str = "internal", **kw: Any) -> None:
    story.send(
        ev.Transaction,
        day,
        account_id="sav",
        account_type="savings",
        direction="debit",
        amount_cents=cents,
        rail=rail,
        **kw,
    )


def checking_credit(story: Story, day: float, cents: int, **kw: Any) -> list[Candidate]:
    return story.send(
        ev.Transaction,
        day,
        account_id="chk",
        account_type="checking",
        direction="credit",
        amount_cents=cents,
        rail="internal",
        **kw,
    )


def wire_out(story: Story, day: float, cents: int) -> list[Candidate]:
    return story.send(
        ev.Transaction,
        day,
        account_id="chk",
        account_type="checking",
        direction="debit",
        amount_cents=cents,
        rail="wire",
    )


# --- the baseline ---------------------------------------------------------------------------


def test_baseline_of_10000_qualifies_and_9999_does_not() -> None:
    for balance, expected in ((999_900, []), (1_000_000, ["savings_drop_to_wire"])):
        # Given a 90-day average of exactly 9,999.00 or 10,000.00
        story = saver(balance)
        # When half of it leaves by wire from the savings account itself
        debit(story, 90, balance // 2, rail="wire")
        # Then only the 10,000 baseline qualifies (the minimum is inclusive, compared in cents);
        # the wire is its own follow-up
        assert story.names() == expected, balance


def test_drop_of_50_percent_fires_and_49_does_not() -> None:
    for cents, expected in ((980_000, []), (1_000_000, ["savings_drop_to_wire"])):
        # Given a baseline of 20,000
        story = saver(2_000_000)
        # When 9,800 (49 %) or 10,000 (50 %) leaves, and a wire of the same amount follows
        debit(story, 90, cents)
        wire_out(story, 91, cents)
        # Then only the 50 % drop is a drop (the fraction is inclusive)
        assert story.names() == expected, cents


def test_contract_example_two_debits_make_one_drop_on_day_2() -> None:
    # Given a baseline of 20,000
    story = saver(2_000_000)
    # When 6,000 leaves on day 0 and 5,000 on day 2 of the window
    debit(story, 90, 600_000, event_id="d0")
    debit(story, 92, 500_000, event_id="d2")
    fired = wire_out(story, 92.5, 1_100_000)
    # Then the drop is 11,000 on day 2: a wire of 100 % of it matches; the instance is the
    # account and the first debit; evidence names both debits and the wire
    (c,) = fired
    assert (c.trigger, c.instance) == ("savings_drop_to_wire", "sav|d0")
    assert c.evidence[:2] == ("d0", "d2") and len(c.evidence) == 3
    # triggered_at is the later of drop and follow-up (the occurrence completes then)
    assert c.triggered_at_ms == at(92.5)
    assert (c.action, c.channel, c.category, c.priority) == (
        "investment_advisor_call",
        "phone",
        "marketing",
        90,
    )


def test_window_lasts_three_days_inclusive() -> None:
    for gap_ms, expected in ((3 * DAY, ["savings_drop_to_wire"]), (3 * DAY + 1, [])):
        # Given a baseline of 20,000 and two debits of 6,000 and 5,000
        story = saver(2_000_000)
        debit(story, 90, 600_000)
        debit(story, 90 + gap_ms / DAY, 500_000)
        # When a large wire follows
        wire_out(story, 94, 1_100_000)
        # Then they form one drop only when the second is at most 3 days after the first
        # (neither alone is 50 %, so the wire matches nothing otherwise)
        assert story.names() == expected, gap_ms


def test_baseline_excludes_the_debits_own_balance_and_anything_older_than_90_days() -> None:
    # Given one observation of 20,000 91 days before the debit and one of 20,000 at day 80
    story = Story()
    for day in (-1, 80):
        story.send(
            ev.Balance, day, account_id="sav", account_type="savings", balance_cents=2_000_000
        )
    # ... a very low balance seen 91 days back (outside the window: ignored)
    story.send(ev.Balance, -1.5, account_id="sav", account_type="savings", balance_cents=0)
    # When 10,000 leaves with a balance_after of 10,000 (observed at the debit, not before it)
    debit(story, 90, 1_000_000, balance_after_cents=1_000_000)
    wire_out(story, 90.5, 1_000_000)
    # Then the baseline is 20,000 (day 80 only) and 10,000 is a 50 % drop
    assert story.names() == ["savings_drop_to_wire"]


# --- follow-ups -----------------------------------------------------------------------------


def test_credit_of_80_percent_matches_and_79_does_not() -> None:
    for cents, expected in (
        (790_000, ["savings_drop_unexplained"]),
        (800_000, ["savings_drop_to_checking"]),
    ):
        # Given a drop of 10,000 on a 20,000 baseline
        story = saver(2_000_000)
        debit(story, 90, 1_000_000)
        # When 7,900 (79 %) or 8,000 (80 %) arrives on checking by internal transfer
        checking_credit(story, 91, cents)
        story.run_until(200)
        # Then 80 % matches (inclusive); 79 % leaves the drop unexplained after 7 + 7 days
        assert story.names() == expected, cents


def test_follow_up_matches_7_days_before_or_after_the_drop_but_not_later() -> None:
    for offset, expected in (
        (-7 * DAY, "savings_drop_to_checking"),
        (7 * DAY, "savings_drop_to_checking"),
        (7 * DAY + 1, "savings_drop_unexplained"),
        (-7 * DAY - 1, "savings_drop_unexplained"),
    ):
        # Given a baseline of 20,000 and a drop of 12,000 on day 100
        story = saver(2_000_000)
        # When the checking credit is `offset` from it (sent in time order)
        events = [(100.0, "drop"), (100 + offset / DAY, "credit")]
        for day, kind in sorted(events):
            if kind == "drop":
                debit(story, day, 1_200_000)
            else:
                checking_credit(story, day, 1_000_000)
        story.run_until(200)
        # Then the 7-day window is inclusive on both sides (events arrive out of order)
        assert story.names() == [expected], offset


def test_credit_arriving_before_the_drop_it_follows_still_matches() -> None:
    # Given a baseline of 20,000
    story = saver(2_000_000)
    # When the checking credit arrives first, stamped after the drop (arrival order reversed)
    assert checking_credit(story, 92, 1_000_000, event_id="credit") == []
    # ... and the 2-day-late debit that makes the drop
    (c,) = story.send(
        ev.Transaction,
        90,
        account_id="sav",
        account_type="savings",
        direction="debit",
        amount_cents=1_100_000,
        rail="internal",
        event_id="late-debit",
    )
    # Then it fires on the debit: drop and baseline are computed from event times
    assert (c.trigger, c.instance, c.evidence) == (
        "savings_drop_to_checking",
        "sav|late-debit",
        ("late-debit", "credit"),
    )
    assert (c.action, c.channel, c.priority) == ("loan_offer", "email", 85)


def test_both_follow_ups_can_fire_for_one_drop_and_unexplained_then_never_does() -> None:
    # Given a drop of 10,000
    story = saver(2_000_000)
    debit(story, 90, 1_000_000)
    # When both an internal credit and a wire follow
    checking_credit(story, 91, 900_000)
    wire_out(story, 95, 850_000)
    story.run_until(400)
    # Then both fire for the same drop instance; unexplained does not (it was explained)
    assert sorted((c.trigger, c.instance) for c in story.fired) == [
        ("savings_drop_to_checking", "sav|e13"),
        ("savings_drop_to_wire", "sav|e13"),
    ]


# --- unexplained: absence with lateness -------------------------------------------------------


def test_unexplained_waits_7_days_plus_the_allowed_lateness() -> None:
    # Given a drop of 10,000 on day 90 and no follow-up
    story = saver(2_000_000)
    debit(story, 90, 1_000_000, event_id="big")
    # When the clock reaches 1 ms before day 104 (drop + 7 days + 7 days lateness)
    assert story.run_until(104 - 1 / DAY) == []
    # Then nothing yet; at day 104 it fires, stamped with its due time
    (c,) = story.run_until(104)
    assert (c.trigger, c.instance, c.evidence, c.triggered_at_ms) == (
        "savings_drop_unexplained",
        "sav|big",
        ("big",),
        at(104),
    )
    assert (c.action, c.channel, c.priority) == ("retention_check_in", "email", 60)


def test_late_follow_up_within_lateness_explains_the_drop() -> None:
    # Given a drop on day 90 and the clock at day 103 (stream time moved on)
    story = saver(2_000_000)
    debit(story, 90, 1_000_000)
    story.run_until(103)
    # When a credit stamped day 96 (within 7 days of the drop) arrives 7 days late
    fired = checking_credit(story, 96, 1_000_000)
    story.run_until(300)
    # Then it matches (late events take part) and unexplained never fires
    assert [c.trigger for c in fired] == ["savings_drop_to_checking"]
    assert story.names() == ["savings_drop_to_checking"]


def test_follow_up_after_unexplained_fired_does_not_contradict_it() -> None:
    # Given a drop whose unexplained decision fired at day 104
    story = saver(2_000_000)
    debit(story, 90, 1_000_000)
    story.run_until(104)
    # When a matching credit stamped day 97 arrives even later (beyond the lateness)
    checking_credit(story, 97, 1_000_000)
    # Then nothing contradicts the published decision
    assert story.names() == ["savings_drop_unexplained"]


def test_late_debit_does_not_regroup_a_drop_already_published() -> None:
    # Given a drop of 11,000 (5,000 + 6,000 on days 91-92) matched by a wire on day 92
    story = saver(2_000_000)
    debit(story, 91, 500_000, event_id="b")
    debit(story, 92, 600_000, event_id="c")
    wire_out(story, 92.5, 1_100_000)
    # When a debit of 4,000 stamped day 90 arrives late (in time order it would start the window)
    debit(story, 90, 400_000, event_id="a")
    story.run_until(300)
    # Then the published drop (instance b) stands and no second drop is made of the same money
    assert [(c.trigger, c.instance) for c in story.fired] == [("savings_drop_to_wire", "sav|b")]


def test_disabled_trigger_fires_nothing_and_still_explains_the_drop() -> None:
    # Given savings_drop_to_wire disabled in the configuration
    config = build_config({"triggers": {"savings_drop_to_wire": {"enabled": False}}})
    params = TriggerParams.from_config(config)
    story = saver(2_000_000, params=params)
    # When a drop is followed by a matching wire
    debit(story, 90, 1_000_000)
    wire_out(story, 91, 1_000_000)
    story.run_until(300)
    # Then nothing is published: the wire still explains it, so unexplained stays silent
    assert story.names() == []


def test_parameters_come_from_the_configuration() -> None:
    # Given a minimum average of 5,000 and a drop fraction of 0.3
    shared = {"min_average_balance": 5_000, "drop_fraction": 0.3}
    config = build_config(
        {
            "triggers": {
                name: shared
                for name in (
                    "savings_drop_to_checking",
                    "savings_drop_to_wire",
                    "savings_drop_unexplained",
                )
            }
        }
    )
    story = saver(500_000, params=TriggerParams.from_config(config))
    # When 30 % of 5,000 leaves by wire
    debit(story, 90, 150_000, rail="wire")
    # Then it is a drop under these parameters
    assert story.names() == ["savings_drop_to_wire"]


def test_candidates_are_plain_values_the_shell_can_copy() -> None:
    # Given any fired candidate
    story = saver(2_000_000)
    debit(story, 90, 1_000_000, rail="wire")
    (c,) = story.fired
    # Then it is a frozen value whose decision id depends only on customer, trigger, instance
    assert replace(c, evidence=()).decision_id == c.decision_id


def test_a_decided_drop_absorbs_its_debits_while_they_can_still_be_admitted() -> None:
    # Found by test_replaying_a_prefix_changes_nothing: a drop decided on (pinned) left the
    # record at drop + 7 days behind the floor, while its debits are admitted until
    # drop + 10 days behind it; a debit seen again after its id had left ``seen`` then formed
    # the drop anew, with a due time the record did not have before.
    from streams.core.state import CustomerState, PinnedDrop, SavingsAccount
    from streams.core.triggers import savings

    s = PARAMS.savings
    drop_ms = 1_000 * DAY
    state = CustomerState("c", drop_ms + s.max_follow_ms + s.window_ms // 2)
    pinned = PinnedDrop("d1", drop_ms - DAY, drop_ms, 500_000, ("d1", "d2"))
    state.savings["sav"] = SavingsAccount(drops=[pinned], last_ms=drop_ms)
    savings.prune(state, PARAMS)
    assert state.savings["sav"].drops == [pinned]  # kept: its debits are still admissible
    savings._add_debit(state.savings["sav"], (drop_ms, 250_000, "d2"), state, PARAMS)
    assert state.savings["sav"].debits == []  # absorbed, not a new drop's start
