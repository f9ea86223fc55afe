"""The simulator plants the truth, and the report finds it.

Given a simulation with a fixed seed, many planted scenarios and half the decisions held out,
when its records go through the worker's pure path (the processor with the real core, dict
stores, the event clock, a gate that holds out by ``Policy.is_holdout`` and contacts the rest,
and an outcome publisher), then every planted decision gets one outcome record with the arm and
the conversion the simulator planted, every trigger with a goal has an informative interval,
and the planted lift lies inside the 95 % interval for most triggers.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streams.config import build_config
from streams.core.adapter import build_core
from streams.core.clock import Clock
from streams.core.decisions import NOBODY, Arm, Candidate, Decision, Recipient
from streams.core.events import Event
from streams.core.goals import BUILTIN_GOALS
from streams.core.ingest import Decoder
from streams.core.policy import Policy
from streams.kafka.processor import Processor, Stores
from streams.ops.metrics import Metrics
from streams.tools import scenarios
from streams.tools.lift import Interval
from streams.tools.planted import compare, coverage_line, format_comparison, planted_report
from streams.tools.report import Report
from streams.tools.simulator import SimConfig, Simulation, generate

HOLDOUT_RATE = 0.5
# 2,125 planted scenarios over the 16 triggers: about 130 decisions per trigger, half held out,
# so that every interval says something (at 1,500 customers a trigger now and then, over seeds,
# has too few conversions for that).
CONFIG = SimConfig(
    customers=2_500,
    days=760,
    seed=2026,
    partitions=4,
    planted_rate=0.85,
    near_miss_rate=0.02,
    holdout_rate=HOLDOUT_RATE,
)
GOAL_TRIGGERS = sorted(set(BUILTIN_GOALS) & set(scenarios.BUILDERS))
# auto_renew_unused is a service check-in: never held out, so it has no lift to measure.
LIFT_TRIGGERS = [t for t in GOAL_TRIGGERS if t != "auto_renew_unused"]
# With this seed the planted lift (0.30 - 0.10) lies inside 9 of the 10 intervals (the
# marketing triggers with a goal). At 95 % coverage, 10 triggers give 9 or more with
# probability 0.91 and 8 or more with 0.99: the bound is what an unbiased measurement meets
# for most seeds, not a number fitted to this one.
EXPECTED_INSIDE = 9


class HashGate:
    """The ledger's arms without its caps: a marketing candidate of the trigger's holdout group
    (``Policy.is_holdout``) is held out, everything else contacted; like the ledger, it
    remembers each decision and answers ``recall`` from that."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.decided: dict[str, Decision] = {}

    async def record(self, event: Event) -> None:
        return None

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, recipient: Recipient = NOBODY
    ) -> list[Decision]:
        out = []
        for c in sorted(candidates, key=lambda c: (-c.priority, c.trigger, c.instance)):
            if c.decision_id not in self.decided:
                held = c.category == "marketing" and self.policy.is_holdout(
                    c.customer_id, c.trigger
                )
                self.decided[c.decision_id] = Decision(
                    c, "holdout" if held else "contact", (), now_ms
                )
            out.append(self.decided[c.decision_id])
        return out

    async def recall(self, customer_id: str, decision_ids: Sequence[str]) -> dict[str, Arm]:
        return {
            i: Arm(
                self.decided[i].outcome,
                self.decided[i].channel or self.decided[i].candidate.channel,
            )
            for i in decision_ids
            if i in self.decided
        }


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def pure_path_outcomes(sim: Simulation) -> list[dict[str, Any]]:
    """Every outcome record the worker's pure path publishes over the simulation's records."""
    config = build_config({"policy": {"holdout_rate": HOLDOUT_RATE}})
    outcomes: list[dict[str, Any]] = []

    async def publish(decision: Decision) -> Any:
        return _done()

    async def publish_outcome(key: bytes, value: bytes) -> Any:
        outcomes.append(orjson.loads(value))
        return _done()

    processor = Processor(
        build_core(config),
        Stores({}, {}, {}),  # type: ignore[arg-type]
        Clock("event"),
        HashGate(Policy.from_config(config["policy"])),
        publish,
        Metrics(),
        publish_outcome=publish_outcome,
    )
    decoder = Decoder()
    offsets: dict[tuple[str, int], int] = collections.defaultdict(int)

    async def feed() -> None:
        for r in sim.records:
            offset = offsets[(r.kind, r.partition)]
            offsets[(r.kind, r.partition)] = offset + 1
            if r.valid:
                event = decoder.decode(r.kind, r.key, r.value, r.at_ms)
                await processor.on_event(r.kind, r.partition, offset, event)

    asyncio.run(feed())
    return outcomes


@pytest.fixture(scope="module")
def run() -> tuple[Simulation, list[dict[str, Any]]]:
    sim = generate(CONFIG)
    assert sim.disagreements == []
    return sim, pure_path_outcomes(sim)


def test_every_planted_decision_has_the_outcome_that_was_planted(
    run: tuple[Simulation, list[dict[str, Any]]],
) -> None:
    sim, outcomes = run
    by_id = {o["decision_id"]: o for o in outcomes}
    assert len(by_id) == len(outcomes)  # one record per decision
    assert {c.trigger for c in sim.conversions} == set(GOAL_TRIGGERS)
    for c in sim.conversions:
        assert (c.category == "service") is (c.trigger == "auto_renew_unused")
        outcome = by_id[c.decision_id]  # the trail closed every planted window
        assert outcome["arm"] == c.arm, c
        assert outcome["converted"] is c.converted, c
        if c.converted:
            assert outcome["converting_event_id"] == c.goal_event_id


def test_the_planted_lift_lies_inside_the_95_percent_interval_for_most_triggers(
    run: tuple[Simulation, list[dict[str, Any]]],
) -> None:
    sim, outcomes = run
    report = planted_report(outcomes, (c.decision_id for c in sim.conversions))
    assert report.records == len(sim.conversions)
    comparisons = compare(report, sim.planted_lift)
    assert [c.trigger for c in comparisons] == LIFT_TRIGGERS
    # Large enough that no trigger is left with "not enough holdouts".
    assert all(c.informative for c in comparisons), [c.trigger for c in comparisons]
    inside = sum(1 for c in comparisons if c.inside)
    assert inside >= EXPECTED_INSIDE, format_comparison(report, sim.planted_lift)
    assert coverage_line(comparisons) == (
        f"planted lift inside the 95 % interval for {inside} of {len(LIFT_TRIGGERS)} triggers"
    )


def test_compare_counts_only_informative_intervals() -> None:
    report = Report()
    for n in range(40):  # contacted 12/20 converted, held out 2/20: lift 0.5
        arm = "contact" if n % 2 else "holdout"
        converted = n % 2 == 1 and n < 24 or n in (0, 2)
        report.add(
            {"decision_id": f"d{n}", "trigger": "a", "arm": arm, "converted": converted}, "t"
        )
    report.add({"decision_id": "x", "trigger": "b", "arm": "contact", "converted": True}, "t")
    report.add({"decision_id": "y", "trigger": "b", "arm": "holdout", "converted": False}, "t")
    a, b, c = compare(report, {"a": 0.5, "b": 0.2, "c": 0.2})
    assert a.informative and a.inside and a.measured == pytest.approx(0.5)
    assert not b.informative and not b.inside  # one decision per arm says nothing
    assert not c.informative  # no outcomes at all
    far = compare(report, {"a": -0.3})[0]
    assert far.informative and not far.inside
    assert isinstance(a.interval, Interval)
    assert coverage_line([a, b, c]) == (
        "planted lift inside the 95 % interval for 1 of 1 triggers (2 more with not enough "
        "holdouts)"
    )
