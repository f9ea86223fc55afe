"""The global control group (``policy.global_control_rate``): who is in it, what the ledger is
asked for them, what is published, and that a rate of 0 changes nothing.

What the script does with the arguments is tested on a real redis-server in
tests/integration/test_global_control.py; here the ledger's script call is captured instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import pytest
import redis.asyncio as aioredis

from streams.config import build_config, default_policy
from streams.core.catalogue import builtin_registry
from streams.core.decisions import Candidate, Decision
from streams.core.errors import ConfigError
from streams.core.policy import (
    MARKETING,
    SERVICE,
    Policy,
    global_control_score,
    holdout_score,
)
from streams.ledger import ContactLedger

T0 = 1_772_357_400_000  # 2026-03-01T09:30:00Z
IDS = [f"customer-{i}" for i in range(20_000)]


def within_binomial(count: int, n: int, p: float) -> bool:
    """Whether ``count`` of ``n`` draws lies within 5 standard deviations of a binomial(n, p)
    mean: a correct draw fails this less than once in a million runs."""
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


# -- membership ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2, 0.5])
def test_the_share_is_close_to_the_rate(rate: float) -> None:
    policy = dataclasses.replace(default_policy(), global_control_rate=rate)
    members = sum(policy.in_global_control(c) for c in IDS)
    assert within_binomial(members, len(IDS), rate), (members, len(IDS) * rate)


def test_membership_is_stable_and_nested() -> None:
    low = dataclasses.replace(default_policy(), global_control_rate=0.05)
    high = dataclasses.replace(default_policy(), global_control_rate=0.1)
    a = {c for c in IDS if low.in_global_control(c)}
    assert a == {c for c in IDS if low.in_global_control(c)}
    # Raising the rate only adds customers: nobody leaves the control group.
    assert a < {c for c in IDS if high.in_global_control(c)}
    for c in IDS[:100]:
        assert low.in_global_control(c) == (global_control_score(c) < 0.05)


def test_membership_is_the_same_in_another_process_and_release() -> None:
    # Another interpreter with another hash seed: the score must not depend on hash().
    code = (
        "from streams.core.policy import global_control_score as s;"
        "print(repr([s('customer-%d' % i) for i in range(50)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout
    assert out.strip() == repr([global_control_score(f"customer-{i}") for i in range(50)])
    # Pinned: a release that changed the hash input would move customers in or out of the
    # control group, and the programme's lift would compare different groups over time.
    digest = hashlib.sha256(b"lifecycle-triggers/global-control\x1fc-1").digest()
    assert global_control_score("c-1") == int.from_bytes(digest[:8], "big") / 2**64
    assert global_control_score("c-1") == 0.5148281697551294
    assert global_control_score("customer-7") == 0.9128079632279313


def test_membership_is_independent_of_the_per_trigger_holdout() -> None:
    policy = dataclasses.replace(default_policy(), holdout_rate=0.5, global_control_rate=0.5)
    control = {c for c in IDS if policy.in_global_control(c)}
    for trigger in ("never_activated", "renewal_reminder"):
        held = {c for c in IDS if policy.is_holdout(c, trigger)}
        # Independent draws: a quarter of the customers in both.
        assert within_binomial(len(control & held), len(IDS), 0.25), len(control & held)
    # And not the same number either, for any customer (different hash inputs).
    assert all(global_control_score(c) != holdout_score(c, "never_activated") for c in IDS[:1000])


# -- configuration -------------------------------------------------------------------------------


def test_off_by_default() -> None:
    policy = default_policy()
    assert policy.global_control_rate == 0
    assert not any(policy.in_global_control(c) for c in IDS)


def test_read_from_the_configuration() -> None:
    config = build_config({"policy": {"global_control_rate": 0.02}})
    assert Policy.from_config(config["policy"]).global_control_rate == 0.02


@pytest.mark.parametrize("rate", [1, 1.0, 1.5, -0.01, float("nan"), float("inf")])
def test_a_rate_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ConfigError, match=r"policy\.global_control_rate: must be at least 0"):
        build_config({"policy": {"global_control_rate": rate}})
    with pytest.raises(ConfigError, match=r"policy\.global_control_rate: must be at least 0"):
        dataclasses.replace(default_policy(), global_control_rate=rate)


@pytest.mark.parametrize("rate", [True, "0.1", None, [0.1]])
def test_a_rate_that_is_not_a_number_is_refused(rate: Any) -> None:
    with pytest.raises(ConfigError, match=r"policy\.global_control_rate: must be a number"):
        build_config({"policy": {"global_control_rate": rate}})
    with pytest.raises(ConfigError, match=r"policy\.global_control_rate: must be a number"):
        dataclasses.replace(default_policy(), global_control_rate=rate)


# -- what the ledger is asked, what is published ---------------------------------------------------


class CapturingLedger(ContactLedger):
    """The ledger's Python side with the script call captured: the script answers as the
    real one does for a customer with no history (holdout for '1' and '2' on marketing, with
    the mark for '2'; contact otherwise)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(aioredis.Redis(), policy, "lt")
        self.calls: list[list[Any]] = []

    async def _run(
        self,
        customer_id: str,
        args: Sequence[str | int],
        business_unit: str | None = None,
        extra_keys: Sequence[str] = (),
    ) -> Any:
        keys = [*self.keys(customer_id, business_unit), *extra_keys]
        self.calls.append([keys, [str(a) for a in args]])
        held = args[6] in ("1", "2") and args[4] == MARKETING
        details: dict[str, Any] = {}
        if held:
            details["holdout"] = True
            if args[6] == "2":
                details["global_control"] = True
        return json.dumps(
            {"o": "holdout" if held else "contact", "r": "", "c": "email", "t": args[1]}
            | {"d": details}
        )


def decide_all(
    policy: Policy, candidates: Sequence[Candidate]
) -> tuple[CapturingLedger, list[Decision]]:
    ledger = CapturingLedger(policy)

    async def main() -> list[Decision]:
        return [await ledger.decide_one(c, T0 + 5) for c in candidates]

    return ledger, asyncio.run(main())


def every_trigger(customer: str) -> list[Candidate]:
    return [
        Candidate(customer, t, "1", spec.action, spec.channel, spec.category, 50, ("e",), T0)
        for t, spec in builtin_registry().specs.items()
    ]


def test_a_control_customer_is_held_out_of_every_marketing_trigger_never_service() -> None:
    policy = dataclasses.replace(default_policy(), holdout_rate=0.0, global_control_rate=0.3)
    inside = [c for c in IDS[:200] if policy.in_global_control(c)][:5]
    outside = [c for c in IDS[:200] if not policy.in_global_control(c)][:5]
    assert len(inside) == len(outside) == 5
    categories = {spec.category for spec in builtin_registry().specs.values()}
    assert categories == {MARKETING, SERVICE}
    for customer in inside:
        ledger, decided = decide_all(policy, every_trigger(customer))
        for (_, args), d in zip(ledger.calls, decided, strict=True):
            if d.candidate.category == MARKETING:
                assert args[6] == "2", d.candidate.trigger
                assert (d.outcome, d.global_control) == ("holdout", True)
                record = d.to_record()
                assert record["global_control"] is True and record["outcome"] == "holdout"
            else:
                assert args[6] == "0", d.candidate.trigger
                assert (d.outcome, d.global_control) == ("contact", False)
                assert "global_control" not in d.to_record()
    for customer in outside:
        ledger, decided = decide_all(policy, every_trigger(customer))
        assert {args[6] for _, args in ledger.calls} == {"0"}
        assert all(d.outcome == "contact" and not d.global_control for d in decided)


def test_the_published_mark_comes_from_the_ledger_not_the_current_rate() -> None:
    # A decision replayed after the rate was changed keeps the mark its first result stored.
    candidate = every_trigger("c-x")[0]
    stored = Decision(
        candidate, "holdout", (), T0, details={"holdout": True, "global_control": True}
    )
    assert stored.to_record()["global_control"] is True
    plain = Decision(candidate, "holdout", (), T0, details={"holdout": True})
    assert "global_control" not in plain.to_record()
    # Never on anything but a holdout.
    odd = Decision(candidate, "contact", (), T0, details={"global_control": True})
    assert not odd.global_control and "global_control" not in odd.to_record()


# Before the global control group existed (commit 5c3d0ba), this sample's script arguments
# (keys and ARGV of every call) and published records hashed to these digests: the default
# policy, and the default with a capacity rule (which adds keys and arguments).
DIGESTS_BEFORE = (
    "53e8eb7ebd9f19bd140e84878098856d2017991edb889f379eec32e7ba6062ae",
    "c50ea6ade717d0018f2d1abfad0069877c531f016efe22e8d46b341c98733152",
)


def test_rate_zero_asks_the_ledger_and_publishes_exactly_as_before() -> None:
    triggers = [
        ("never_activated", MARKETING, "email"),
        ("renewal_reminder", MARKETING, "email"),
        ("auto_renew_confirmation", SERVICE, "email"),
        ("savings_drop_to_wire", MARKETING, "phone"),
    ]
    sample = []
    for i in range(200):
        trigger, category, channel = triggers[i % 4]
        sample.append(
            Candidate(f"c-{i}", trigger, f"i{i}", "act", channel, category, 50, ("e1",), T0 + i)
        )
    base = default_policy()
    with_capacity = dataclasses.replace(base, capacity=MappingProxyType({"act": 5}))
    digests = []
    for policy in (base, with_capacity):
        assert policy.global_control_rate == 0
        ledger = CapturingLedger(policy)

        async def main(ledger: CapturingLedger = ledger) -> list[dict[str, Any]]:
            records = []
            for c in sample:
                segment = "high_affinity" if c.customer_id.endswith("3") else None
                records.append((await ledger.decide_one(c, T0 + 5, segment=segment)).to_record())
            return records

        records = asyncio.run(main())
        # The sample has holdouts (of the 5 % per-trigger holdout), so that path is covered.
        assert sum(r["outcome"] == "holdout" for r in records) > 0
        blob = json.dumps([ledger.calls, records], sort_keys=True).encode()
        digests.append(hashlib.sha256(blob).hexdigest())
    assert tuple(digests) == DIGESTS_BEFORE
