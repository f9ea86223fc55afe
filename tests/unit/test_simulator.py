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

from streams.core.errors import InvalidEvent
from streams.core.ingest import Decoder, validate_payload
from streams.core.timeutil import MS_PER_DAY, parse_rfc3339_ms
from streams.tools import scenarios
from streams.tools.simulator import SimConfig, Simulation, generate, load_truth, partition_for

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
        if r.valid and not r.key.startswith(b"clock-p"):  # type: ignore[union-attr]
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
            assert e.expected == scenarios.build(e.trigger, "x", 0).expected[e.trigger]
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
