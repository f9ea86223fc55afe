"""The contact policy as data: built from the configuration, holdout hash, priority order."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.config import build_config, default_policy
from streams.core.decisions import REASON_CODES, Candidate
from streams.core.errors import ConfigError
from streams.core.policy import ChannelCap, Policy, holdout_score, sort_reasons
from streams.core.timeutil import MS_PER_DAY


def candidate(
    trigger: str, priority: int, instance: str = "i", channel: str = "email"
) -> Candidate:
    return Candidate("c-1", trigger, instance, "act", channel, "marketing", priority, (), 0)


def test_defaults_are_the_contracts() -> None:
    p = default_policy()
    assert p.holdout_rate == 0.05
    assert (p.global_cap_7d, p.global_cap_30d) == (2, 6)
    assert dict(p.channel_caps) == {
        "email": ChannelCap(2, 7),
        "sms": ChannelCap(1, 7),
        "push": ChannelCap(3, 7),
        "phone": ChannelCap(1, 30),
        "direct_mail": ChannelCap(1, 30),
    }
    assert p.trigger_cooldown_days == 14
    assert (p.non_responder_after, p.non_responder_max_contacts) == (5, 1)
    assert p.non_responder_window_days == 30
    assert p.complaint_quiet_days == 14
    assert p.priorities["savings_drop_to_wire"] == 90
    assert p.priorities["service"] == 100
    assert p.priorities["replacement_due"] == 20
    assert dict(p.channel_fallbacks) == {}


def test_from_config_reads_overrides() -> None:
    config = build_config(
        {
            "policy": {
                "holdout_rate": 0,
                "global_caps": {"per_7_days": 3},
                "channel_caps": {"sms": {"max": 4}},
                "segment_cap_multipliers": {"vip": 3},
                "non_responder": {"after_unanswered": 2},
            }
        }
    )
    p = Policy.from_config(config["policy"])
    assert p.holdout_rate == 0
    assert (p.global_cap_7d, p.global_cap_30d) == (3, 6)
    assert p.channel_caps["sms"] == ChannelCap(4, 7)
    assert p.multiplier("vip") == 3 and p.multiplier("high_affinity") == 2
    assert p.non_responder_after == 2


def test_policy_is_frozen() -> None:
    p = default_policy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.holdout_rate = 0.5  # type: ignore[misc]


def test_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"policy\.holdout_rate"):
        dataclasses.replace(default_policy(), holdout_rate=1.5)
    with pytest.raises(ConfigError, match=r"policy\.channel_fallbacks\.never_activated"):
        dataclasses.replace(default_policy(), channel_fallbacks={"never_activated": ("fax",)})


def test_segment_doubles_global_and_channel_caps_only_for_its_segment() -> None:
    p = default_policy()
    high = p.caps_for("high_affinity")
    assert (high.global_7d, high.global_30d) == (4, 12)
    assert high.channels["email"] == ChannelCap(4, 7)
    assert high.channels["phone"] == ChannelCap(2, 30)
    for segment in (None, "standard", ""):
        normal = p.caps_for(segment)
        assert (normal.global_7d, normal.global_30d) == (2, 6)
        assert normal.channels["sms"] == ChannelCap(1, 7)


def test_retention_covers_the_longest_window_plus_margin() -> None:
    p = default_policy()
    assert p.retention_ms == 37 * MS_PER_DAY
    longer = dataclasses.replace(p, trigger_cooldown_days=60)
    assert longer.retention_ms == 67 * MS_PER_DAY


def test_channels_for_adds_fallbacks_once_in_order() -> None:
    p = dataclasses.replace(
        default_policy(), channel_fallbacks={"never_activated": ("push", "email", "sms")}
    )
    assert p.channels_for(candidate("never_activated", 30)) == ("email", "push", "sms")
    assert p.channels_for(candidate("replacement_due", 20)) == ("email",)


def test_order_is_priority_then_trigger_name() -> None:
    given_order = [
        candidate("replacement_due", 20),
        candidate("renewal_reminder", 50),
        candidate("lapsed_transactor", 40),
        candidate("auto_renew_confirmation", 100),
        candidate("lapsed_revolver", 40),
    ]
    got = [c.trigger for c in Policy.order(given_order)]
    # lapsed_revolver before lapsed_transactor: equal priority, name decides.
    assert got == [
        "auto_renew_confirmation",
        "renewal_reminder",
        "lapsed_revolver",
        "lapsed_transactor",
        "replacement_due",
    ]


@given(st.permutations([candidate(f"t{i % 3}", i % 2, str(i)) for i in range(6)]))
def test_order_does_not_depend_on_input_order(cands: list[Candidate]) -> None:
    assert Policy.order(cands) == Policy.order(sorted(cands, key=lambda c: c.instance))


def test_reasons_come_in_contract_order_without_duplicates() -> None:
    assert sort_reasons(["opted_out", "global_cap_7d", "opted_out", "channel_cap"]) == (
        "global_cap_7d",
        "channel_cap",
        "opted_out",
    )
    assert sort_reasons(reversed(REASON_CODES)) == REASON_CODES


@given(st.text(min_size=1, max_size=20), st.sampled_from(["never_activated", "replacement_due"]))
def test_holdout_is_stable_and_uniform_range(customer_id: str, trigger: str) -> None:
    score = holdout_score(customer_id, trigger)
    assert 0 <= score < 1
    assert holdout_score(customer_id, trigger) == score
    p = default_policy()
    assert p.is_holdout(customer_id, trigger) == (score < 0.05)


def test_holdout_rate_is_about_five_percent_per_trigger() -> None:
    p = default_policy()
    for trigger in ("never_activated", "renewal_reminder"):
        held = sum(p.is_holdout(f"customer-{i}", trigger) for i in range(10_000))
        # 5 % of 10,000 = 500; binomial sd ~ 22, so +-100 is > 4 sd.
        assert 400 <= held <= 600, held


def test_holdout_differs_between_triggers_and_respects_zero_and_one() -> None:
    p = default_policy()
    a = {i for i in range(10_000) if p.is_holdout(f"c{i}", "never_activated")}
    b = {i for i in range(10_000) if p.is_holdout(f"c{i}", "replacement_due")}
    assert a != b and len(a & b) < 100  # independent draws: ~25 expected in both
    never = dataclasses.replace(p, holdout_rate=0.0)
    always = dataclasses.replace(p, holdout_rate=1.0)
    assert not any(never.is_holdout(f"c{i}", "never_activated") for i in range(1000))
    assert all(always.is_holdout(f"c{i}", "never_activated") for i in range(1000))


# -- sunset ---------------------------------------------------------------------------------


def test_sunset_is_on_after_twelve_by_default_and_can_be_turned_off() -> None:
    assert default_policy().sunset_after_unanswered == 12
    config = build_config({"policy": {"sunset": {"after_unanswered": 3}}})
    assert Policy.from_config(config["policy"]).sunset_after_unanswered == 3
    config = build_config({"policy": {"sunset": {"enabled": False}}})
    assert Policy.from_config(config["policy"]).sunset_after_unanswered is None


@pytest.mark.parametrize(
    ("after", "accepted"), [(1, True), (0, False), (-1, False), (True, False), (2.5, False)]
)
def test_sunset_threshold_on_both_sides_of_one(after: object, accepted: bool) -> None:
    override = {"policy": {"sunset": {"after_unanswered": after}}}
    if accepted:
        assert Policy.from_config(build_config(override)["policy"]).sunset_after_unanswered == 1
        assert dataclasses.replace(default_policy(), sunset_after_unanswered=after)
        return
    with pytest.raises(ConfigError, match=r"policy\.sunset\.after_unanswered"):
        build_config(override)
    with pytest.raises(ConfigError, match=r"policy\.sunset\.after_unanswered"):
        dataclasses.replace(default_policy(), sunset_after_unanswered=after)  # type: ignore[arg-type]


# -- bounces --------------------------------------------------------------------------------


def test_the_bounce_rule_is_on_by_default_and_can_be_turned_off() -> None:
    assert default_policy().undeliverable is True
    config = build_config({"policy": {"undeliverable": {"enabled": False}}})
    assert Policy.from_config(config["policy"]).undeliverable is False
    with pytest.raises(ConfigError, match=r"policy\.undeliverable\.enabled: must be true or false"):
        build_config({"policy": {"undeliverable": {"enabled": "yes"}}})


# -- capacity -------------------------------------------------------------------------------


def test_capacity_is_empty_by_default_and_read_per_marketing_action() -> None:
    assert dict(default_policy().capacity) == {}
    assert default_policy().capacity_timezone == "UTC"
    config = build_config(
        {
            "policy": {
                "capacity": {"investment_advisor_call": {"per_day": 40}},
                "capacity_timezone": "Europe/Berlin",
            }
        }
    )
    p = Policy.from_config(config["policy"])
    assert dict(p.capacity) == {"investment_advisor_call": 40}
    assert p.capacity_timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    ("capacity", "message"),
    [
        ({"loan_offer": {"per_day": 0}}, r"policy\.capacity\.loan_offer\.per_day: must be greater"),
        (
            {"loan_offer": {"per_day": 1.5}},
            r"loan_offer\.per_day: must be a whole",
        ),
        ({"loan_offer": {}}, r"policy\.capacity\.loan_offer: give per_day"),
        ({"loan_offer": {"per_week": 3}}, r"policy\.capacity\.loan_offer\.per_week: unknown key"),
        (
            {"payment_confirmation": {"per_day": 3}},
            r"capacity\.payment_confirmation: unknown",
        ),
    ],
)
def test_bad_capacity_is_refused_naming_the_key(capacity: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"policy": {"capacity": capacity}})


def test_capacity_per_day_on_both_sides_of_one() -> None:
    config = build_config({"policy": {"capacity": {"loan_offer": {"per_day": 1}}}})
    assert dict(Policy.from_config(config["policy"]).capacity) == {"loan_offer": 1}
    with pytest.raises(ConfigError, match=r"policy\.capacity\.act\.per_day"):
        dataclasses.replace(default_policy(), capacity={"act": 0})
    with pytest.raises(ConfigError, match=r"policy\.capacity: 'a:b' is not an action name"):
        dataclasses.replace(default_policy(), capacity={"a:b": 1})
    with pytest.raises(ConfigError, match=r"policy\.capacity_timezone: 'Mars/Olympus_Mons'"):
        build_config({"policy": {"capacity_timezone": "Mars/Olympus_Mons"}})
    with pytest.raises(ConfigError, match=r"policy\.capacity_timezone"):
        dataclasses.replace(default_policy(), capacity_timezone="Mars/Olympus_Mons")


def test_the_capacity_day_on_both_sides_of_local_midnight() -> None:
    p = dataclasses.replace(default_policy(), capacity_timezone="America/New_York")
    midnight = 1_772_427_600_000  # 2026-03-02T05:00:00Z, midnight in New York (EST)
    assert p.capacity_day(midnight - 1) == "2026-03-01"
    assert p.capacity_day(midnight) == "2026-03-02"
    assert default_policy().capacity_day(midnight - 1) == "2026-03-02"  # UTC
