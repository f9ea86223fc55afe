"""The simulator: deterministic from its seed, contract-valid, with a truthful ground truth.

Given a small simulation, when it is built twice from the same seed, then the records are the
same byte for byte; every valid record passes the decoder and the JSON schemas, every
malformed one fails the decoder; and the ground truth lists every planted scenario and
near-miss with the catalogue's expectation, which the in-process core agrees with.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from streams.config import build_config
from streams.core.errors import InvalidEvent
from streams.core.goals import BUILTIN_GOALS
from streams.core.ingest import Decoder, validate_payload
from streams.core.policy import Policy
from streams.core.timeutil import MS_PER_DAY, parse_rfc3339_ms
from streams.tools import scenarios
from streams.tools.simulator import (
    TRAIL_DAYS,
    SimConfig,
    Simulation,
    generate,
    load_conversions,
    load_truth,
    partition_for,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
DOCS = {p.stem: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")}
REGISTRY: Registry = Registry().with_resources(
    (doc["$id"], DRAFT7.create_resource(doc)) for doc in DOCS.values()
)
SCHEMAS = {
    kind: Draft7Validator(
        DOCS[f"{kind}_event"], registry=REGISTRY, format_checker=Draft7Validator.FORMAT_CHECKER
    )
    for kind in ("account", "usage")
}
# Small, but long enough for every scenario (the yearly habit needs 747 days).
CONFIG = SimConfig(customers=80, days=760, seed=11, partitions=4, malformed_rate=0.01)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return generate(CONFIG, verify=True)


def _dump(sim: Simulation) -> list[tuple[Any, ...]]:
    return [(r.at_ms, r.kind, r.partition, r.key, r.value, r.valid) for r in sim.records]


def test_same_seed_same_records_and_truth(sim: Simulation) -> None:
    again = generate(CONFIG)
    assert _dump(again) == _dump(sim)
    assert list(again.truth_lines()) == list(sim.truth_lines())
    other = generate(SimConfig(customers=80, days=760, seed=12, partitions=4))
    assert _dump(other) != _dump(sim)


def test_records_are_in_event_time_order_and_keyed_by_customer(sim: Simulation) -> None:
    times = [r.at_ms for r in sim.records]
    assert times == sorted(times)
    assert all(
        r.at_ms < CONFIG.end_ms or r.key.startswith(b"clock-p") for r in sim.records if r.key
    )
    for r in sim.records:
        if r.valid:  # the clock customers' keys too: the worker forwards a misrouted record
            assert r.partition == partition_for(r.key, CONFIG.partitions)  # type: ignore[arg-type]


def test_every_valid_record_is_contract_valid_and_every_malformed_one_is_not(
    sim: Simulation,
) -> None:
    decoder = Decoder()
    types: collections.Counter[str] = collections.Counter()
    for r in sim.records:
        if r.valid:
            payload = orjson.loads(r.value)
            event = validate_payload(r.kind, payload)
            assert r.key == event.customer_id.encode()
            errors = list(SCHEMAS[r.kind].iter_errors(payload))
            assert not errors, (payload, errors[0].message)
            types[payload["type"]] += 1
        else:
            with pytest.raises(InvalidEvent):
                decoder.decode(r.kind, r.key, r.value, CONFIG.end_ms)
    # Realistic variety: every event type of the contract occurs.
    assert set(types) >= {
        "account_opened",
        "balance",
        "transaction",
        "statement",
        "contract",
        "auto_renew_charged",
        "visit",
        "complaint",
        "product_usage",
        "purchase",
        "engagement",
        "profile",
    }
    assert sim.malformed_records == round((len(sim.records) - sim.malformed_records) * 0.01)


def test_ground_truth_file(sim: Simulation, tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    sim.write_truth(path)
    run, expectations = load_truth(path)
    converted = {c.customer_id for c in load_conversions(path) if c.converted}
    assert run["seed"] == 11 and run["customers"] == 80 and run["skipped_triggers"] == []
    assert run["expected_decisions"] == sum(e.expected for e in expectations)
    assert run["disagreements"] == []  # the core agrees with the catalogue, twice
    planted = {(e.customer_id, e.trigger) for e in expectations if e.role == "planted"}
    near = {e.scenario for e in expectations if e.role == "near_miss"}
    # Every trigger is planted and has a near-miss, each on a customer of its own.
    assert {t for _, t in planted} == set(scenarios.BUILDERS)
    assert near == {f"near_miss_{t}" for t in scenarios.BUILDERS}
    for e in expectations:
        assert e.model == e.expected == len(e.instances), e
        if e.scenario == f"near_miss_{e.trigger}":
            assert e.expected == 0  # the near-missed trigger itself must not fire
        if e.role == "planted":
            # The catalogue's decisions, and those a planted conversion caused (a renewed
            # contract's next reminders), which only customers with a converted goal have.
            catalogue = scenarios.build(e.scenario or "", "x", 0).expected.get(e.trigger, 0)
            assert e.expected == catalogue + e.caused
            if e.caused:
                assert e.customer_id in converted
        else:
            assert e.caused == 0
    roles = collections.Counter(run["roles"])
    assert roles["planted"] == roles["near_miss"] == len(scenarios.BUILDERS)
    assert roles["background"] == 80 - 2 * len(scenarios.BUILDERS)


def test_scenarios_fit_their_span_and_too_short_runs_skip_them() -> None:
    # A scenario's events all lie within its span, so a placed scenario is whole.
    for trigger in scenarios.BUILDERS:
        for near in (False, True):
            s = scenarios.build(trigger, "c", 0, near_miss=near)
            last = max(parse_rfc3339_ms(e["occurred_at"]) or 0 for e in s.events)
            assert last <= scenarios.SPAN_DAYS[trigger] * MS_PER_DAY, (trigger, near)
    short = generate(SimConfig(customers=40, days=400, seed=1, partitions=2, engagement=False))
    assert short.skipped == ["usual_booking_missed"]
    assert not short.disagreements


def test_planted_conversions_are_drawn_by_arm_and_their_goal_events_are_in_the_stream(
    sim: Simulation, tmp_path: Path
) -> None:
    path = tmp_path / "truth.jsonl"
    sim.write_truth(path)
    run, _ = load_truth(path)
    conversions = load_conversions(path)
    assert conversions == sim.conversions
    # Every planted trigger with a goal has its planted lift in the run record, nothing else.
    goal_triggers = set(BUILTIN_GOALS) & set(scenarios.BUILDERS)
    assert {c.trigger for c in conversions} == goal_triggers
    # A service check-in is never held out: converted at the contacted rate, no lift.
    service = {c.trigger for c in conversions if c.category == "service"}
    assert service == {"auto_renew_unused"}
    assert set(run["planted_lift"]) == goal_triggers - service
    for lift in run["planted_lift"].values():
        assert lift == {"contact": 0.3, "holdout": 0.1, "lift": 0.2}
    policy = Policy.from_config(build_config({"policy": {"holdout_rate": 0.05}})["policy"])
    events = {}
    for r in sim.records:
        if r.valid:
            doc = orjson.loads(r.value)
            events[doc["event_id"]] = (r.at_ms, doc)
    for c in conversions:
        held = c.category == "marketing" and policy.is_holdout(c.customer_id, c.trigger)
        assert c.arm == ("holdout" if held else "contact")
        assert c.probability == (0.1 if c.arm == "holdout" else 0.3)
        if not c.converted:
            assert c.goal_event_id is None
            continue
        at, doc = events[c.goal_event_id]
        assert doc["customer_id"] == c.customer_id and at == c.goal_at_ms
        # Inside the run, so the window closes before the clock stops (the trail).
        assert at < CONFIG.end_ms - (BUILTIN_GOALS[c.trigger].window_days - 60) * MS_PER_DAY
    # An answer "converted" would convert a decision whatever was planted; a held-out decision
    # sent nothing to answer.
    planted_ids = {c.decision_id for c in conversions}
    held_out = {c.decision_id for c in conversions if c.arm == "holdout"}
    for _, doc in events.values():
        if doc["type"] == "engagement" and doc["decision_id"] in planted_ids:
            assert doc["action"] != "converted"
            assert doc["decision_id"] not in held_out


def test_without_conversion_rates_no_goal_event_is_planted() -> None:
    config = SimConfig(
        customers=40, days=400, seed=2, partitions=2, conversion_contact=0, conversion_holdout=0
    )
    sim = generate(config)
    assert sim.conversions and not any(c.converted for c in sim.conversions)
    assert not any(b"-goal" in r.value for r in sim.records)
    assert not any(e.caused for e in sim.expectations)
    # The run goes on after --days for the goal windows to close: background and clock only.
    assert config.end_ms == config.start_ms + (400 + TRAIL_DAYS) * MS_PER_DAY
    assert max(r.at_ms for r in sim.records) == config.end_ms


def test_the_global_control_group_is_planted_as_held_out() -> None:
    # The worker holds out every marketing decision of a customer in the global control
    # group: planted with the holdout probability, whatever the trigger's holdout says.
    config = SimConfig(
        customers=60, days=400, seed=3, partitions=2, holdout_rate=0.0, global_control_rate=0.5
    )
    sim = generate(config)
    section = {"holdout_rate": 0.0, "global_control_rate": 0.5}
    policy = Policy.from_config(build_config({"policy": section})["policy"])
    marketing = [c for c in sim.conversions if c.category == "marketing"]
    held = [c for c in marketing if policy.in_global_control(c.customer_id)]
    assert held and len(held) < len(marketing)
    for c in sim.conversions:
        control = c.category == "marketing" and policy.in_global_control(c.customer_id)
        assert c.arm == ("holdout" if control else "contact")
        assert c.probability == (0.1 if control else 0.3)
    with pytest.raises(ValueError, match="global_control_rate"):
        SimConfig(global_control_rate=1.0)
