"""The global control group through the contact ledger on a real redis-server.

Given ``policy.global_control_rate`` 0.3 (no per-trigger holdout, a capacity of 1 a day for one
action), a customer in the control group gets ``holdout`` marked ``global_control`` for every
marketing trigger of the catalogue and a contact for the service ones; those holdouts take
nothing from the caps or the day's capacity, they count towards each trigger's cooldown as the
per-trigger holdout does; a customer outside the group is decided as before; and the same
decision ids give the same published records again, also after the rate was set back to 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from streams.config import default_policy
from streams.core.catalogue import CATALOGUE
from streams.core.decisions import Candidate, Decision
from streams.core.policy import MARKETING
from streams.ledger import ContactLedger
from streams.tools.devstack import DevStack
from tests.integration.test_ledger import DAY, T0, new_id

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
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
        for t, spec in CATALOGUE.items()
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
            assert len(marketing) == sum(s.category == MARKETING for s in CATALOGUE.values())

            # Nothing counted against the caps: no marketing contact in the history.
            shown = await ledger.show(inside, T0 + 1)
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
