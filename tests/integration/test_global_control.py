"""The global control group through the contact ledger on a real redis-server, and through a
live worker and broker.

Given ``policy.global_control_rate`` 0.3 (no per-trigger holdout, a capacity of 1 a day for one
action), a customer in the control group gets ``holdout`` marked ``global_control`` for every
marketing trigger of the catalogue and a contact for the service ones; those holdouts take
nothing from the caps or the day's capacity, they count towards each trigger's cooldown as the
per-trigger holdout does; a customer outside the group is decided as before; and the same
decision ids give the same published records again, also after the rate was set back to 0.
Through a worker, the control customer's marketing decision is published as a marked holdout
and counted in lifecycle_decisions_global_control_total, the service one as a contact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from streams.config import build_config, default_policy
from streams.core.catalogue import builtin_registry
from streams.core.decisions import Candidate, Decision
from streams.core.events import ACCOUNT_EVENT_TYPES
from streams.core.policy import MARKETING, Policy
from streams.core.timeutil import parse_rfc3339_ms
from streams.kafka.topics import TopicNames
from streams.ledger import ContactLedger
from streams.ledger.cli import format_summary
from streams.tools.devstack import DevStack
from streams.tools.scenarios import build
from tests.integration.test_ledger import DAY, T0, new_id
from tests.support import WorkerProcess, consume, run, unique_topics, write_config

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
START = parse_rfc3339_ms("2023-08-01T11:00:00Z") or 0
ACTION = "activation_nudge"  # never_activated's action: the one with a capacity here


def decision_validator() -> Draft7Validator:
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in SCHEMAS.glob("*.json")]
    registry: Registry = Registry().with_resources(
        (doc["$id"], DRAFT7.create_resource(doc)) for doc in docs
    )
    (schema,) = [d for d in docs if d["$id"].endswith("/contact_decision.json")]
    return Draft7Validator(schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


def every_trigger(customer: str, instance: str, at: int) -> list[Candidate]:
    return [
        Candidate(customer, t, instance, spec.action, spec.channel, spec.category, 50, ("e",), at)
        for t, spec in builtin_registry().specs.items()
    ]


def published(decisions: list[Decision]) -> list[dict[str, Any]]:
    return [orjson.loads(orjson.dumps(d.to_record())) for d in decisions]


def test_control_customers_get_holdouts_that_take_nothing_and_stay_on_replay(
    dev_stack: DevStack,
) -> None:
    policy = dataclasses.replace(
        default_policy(),
        holdout_rate=0.0,
        global_control_rate=0.3,
        capacity=MappingProxyType({ACTION: 1}),
    )
    inside = next(c for c in iter(new_id, None) if policy.in_global_control(c))
    a, b = islice((c for c in iter(new_id, None) if not policy.in_global_control(c)), 2)
    validator = decision_validator()
    namespace = new_id("ns")

    async def main() -> None:
        async with ContactLedger(dev_stack.redis_url, policy, namespace) as ledger:
            first = await ledger.decide(every_trigger(inside, "1", T0), T0)
            records = published(first)
            for d, record in zip(first, records, strict=True):
                assert list(validator.iter_errors(record)) == [], record
                if d.candidate.category == MARKETING:
                    assert (record["outcome"], record["reasons"]) == ("holdout", [])
                    assert record["global_control"] is True
                    assert record["policy"]["global_control"] is True
                else:
                    assert record["outcome"] == "contact"
                    assert "global_control" not in record
            marketing = [d for d in first if d.candidate.category == MARKETING]
            assert len(marketing) == sum(
                s.category == MARKETING for s in builtin_registry().specs.values()
            )

            # Nothing counted against the caps: no marketing contact in the history.
            shown = await ledger.show(inside, T0 + 1)
            marked = {h["id"] for h in shown["history"] if h.get("global_control")}
            assert marked == {d.decision_id for d in marketing}
            text = format_summary(inside, shown)
            assert text.count("[global control]") == len(marketing)
            assert shown["caps"]["global_7d"]["count"] == 0
            assert shown["caps"]["global_30d"]["count"] == 0

            # Nor against the day's capacity of never_activated's action (1): the first
            # customer outside the group still gets it, the second does not.
            (na_a,) = await ledger.decide(
                [c for c in every_trigger(a, "1", T0) if c.action == ACTION], T0 + 2
            )
            (na_b,) = await ledger.decide(
                [c for c in every_trigger(b, "1", T0) if c.action == ACTION], T0 + 3
            )
            assert (na_a.outcome, na_a.global_control) == ("contact", False)
            assert (na_b.outcome, na_b.reasons) == ("suppressed", ("capacity",))

            # Like the per-trigger holdout, each counts towards its trigger's cooldown
            # (14 days): a new occurrence within it is suppressed, one after it held out again.
            again = await ledger.decide(every_trigger(inside, "2", T0 + DAY), T0 + DAY)
            for d in again:
                if d.candidate.category == MARKETING:
                    assert (d.outcome, d.reasons) == ("suppressed", ("trigger_cooldown",))
                    assert not d.global_control and "global_control" not in d.to_record()
            later = await ledger.decide(every_trigger(inside, "3", T0 + 15 * DAY), T0 + 15 * DAY)
            assert {
                (d.outcome, d.global_control) for d in later if d.candidate.category == MARKETING
            } == {("holdout", True)}

            # Replay: the same decision ids give the same records, with their first decided_at.
            replayed = await ledger.decide(every_trigger(inside, "1", T0), T0 + 20 * DAY)
            assert published(replayed) == records

        # After the rate was set back to 0, the stored first results still carry the mark.
        off = dataclasses.replace(policy, global_control_rate=0.0)
        async with ContactLedger(dev_stack.redis_url, off, namespace) as ledger:
            replayed = await ledger.decide(every_trigger(inside, "1", T0), T0 + 21 * DAY)
            assert published(replayed) == records
            # ... while new occurrences are decided without the control group.
            fresh = await ledger.decide(every_trigger(inside, "4", T0 + 40 * DAY), T0 + 40 * DAY)
            assert not any(d.global_control for d in fresh)
            assert any(d.outcome == "contact" and d.candidate.category == MARKETING for d in fresh)

    asyncio.run(main())


def test_a_live_worker_publishes_the_control_groups_holdouts_and_counts_them(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    # Through a real worker and broker: a customer in the control group and one outside it,
    # each with a completed savings drop to a wire (marketing) and an auto-renew charge
    # (service), on one partition.
    config_policy = {"policy": {"holdout_rate": 0, "global_control_rate": 0.5}}
    policy = Policy.from_config(build_config(config_policy)["policy"])
    tag = uuid.uuid4().hex[:8]
    ids = (f"{tag}-{i}" for i in range(1000))
    inside = next(c for c in ids if policy.in_global_control(c))
    outside = next(c for c in ids if not policy.in_global_control(c))
    events = []
    for customer in (inside, outside):
        events += build("savings_drop_to_wire", customer, START).events
        events += build("auto_renew_confirmation", customer, START).events
    topics = unique_topics("gc")
    config = write_config(
        tmp_path / "gc.yaml", topics, {**config_policy, "stream": {"repartition": "off"}}
    )
    worker = WorkerProcess(dev_stack, config, f"gc-{tag}", tmp_path / "state", partitions=1)
    worker.start()
    try:
        worker.wait_ready()
        run(produce_in_order(dev_stack.bootstrap_servers, topics, events))
        records = run(
            consume(
                dev_stack.bootstrap_servers,
                topics.contact_decisions,
                until=4,
                timeout=60,
                settle=3,
            )
        )
        counted = {
            (trigger, outcome): worker.metric(
                "lifecycle_decisions_total", trigger=trigger, outcome=outcome
            )
            for trigger in ("savings_drop_to_wire", "auto_renew_confirmation")
            for outcome in ("contact", "holdout")
        }
        control = {
            trigger: worker.metric("lifecycle_decisions_global_control_total", trigger=trigger)
            for trigger in ("savings_drop_to_wire", "auto_renew_confirmation")
        }
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    validator = decision_validator()
    got = {}
    for r in records:
        d = orjson.loads(r.value)
        assert list(validator.iter_errors(d)) == [], d
        got[(d["customer_id"], d["trigger"])] = (d["outcome"], d.get("global_control"))
    assert got == {
        (inside, "savings_drop_to_wire"): ("holdout", True),
        (inside, "auto_renew_confirmation"): ("contact", None),
        (outside, "savings_drop_to_wire"): ("contact", None),
        (outside, "auto_renew_confirmation"): ("contact", None),
    }
    assert counted == {
        ("savings_drop_to_wire", "contact"): 1,
        ("savings_drop_to_wire", "holdout"): 1,
        ("auto_renew_confirmation", "contact"): 2,
        ("auto_renew_confirmation", "holdout"): 0,
    }
    assert control == {"savings_drop_to_wire": 1, "auto_renew_confirmation": 0}


async def produce_in_order(
    bootstrap: str, topics: TopicNames, events: list[dict[str, Any]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for e in sorted(events, key=lambda e: parse_rfc3339_ms(e["occurred_at"]) or 0):
            kind = "account" if e["type"] in ACCOUNT_EVENT_TYPES else "usage"
            topic = topics.account_events if kind == "account" else topics.usage_events
            # One partition: both customers move the same stream time.
            await producer.send_and_wait(
                topic, orjson.dumps(e), key=e["customer_id"].encode(), partition=0
            )
    finally:
        await producer.stop()
