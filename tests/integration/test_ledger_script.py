"""The ledger script against the script of the release before it, on a real redis-server.

``ledger_released.lua`` is that release's script, kept as the reference: the current one was
rewritten to cost less Redis time per decision (one read of each set, the state hash read
once, pruning only what has passed the retention, expiry only on the keys written), and must
decide exactly as it did. Random programs of decisions, engagements, consents, complaints and
outside contacts run three ways: on the released script, on the current one, and on a ledger
where each call picks one of the two (a rolling deploy: old and new workers share a ledger, and
an upgraded worker reads what the release before wrote). Every outcome, reason, channel,
decided_at and detail (numbers compared with their JSON types), every outside contact's
"new or known", and what ``ledger show`` prints at the end must be the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import exceptions as rex

from streams.core.decisions import Decision
from streams.core.policy import Policy
from streams.ledger import SCRIPT_SHA, ContactLedger
from streams.tools.devstack import DevStack
from tests.integration.test_ledger import (
    DAY,
    HOUR,
    MODEL_POLICY,
    T0,
    cand,
    new_id,
    run,
    steps,
)

RELEASED = (Path(__file__).parent / "ledger_released.lua").read_text(encoding="utf-8")
RELEASED_SHA = hashlib.sha1(RELEASED.encode(), usedforsecurity=False).hexdigest()
# The default policy's shape (no business-unit caps: the script skips reading the unit's
# contacts) with the model's fallbacks, holdouts and back-off, and the model's own policy
# (business-unit caps on both units).
NO_UNIT_CAPS = dataclasses.replace(MODEL_POLICY, business_unit_caps={})


class ReleasedLedger(ContactLedger):
    """A ledger that runs the released script (same keys, same arguments)."""

    async def _evalsha(self, keys: list[str], args: Sequence[str | int]) -> Any:
        try:
            return await self.client.evalsha(RELEASED_SHA, len(keys), *keys, *args)
        except rex.NoScriptError:
            await self.client.script_load(RELEASED)
            return await self.client.evalsha(RELEASED_SHA, len(keys), *keys, *args)


class RollingLedger(ReleasedLedger):
    """Each call runs the released or the current script, as a seeded coin says."""

    coin: random.Random

    async def _evalsha(self, keys: list[str], args: Sequence[str | int]) -> Any:
        if self.coin.random() < 0.5:
            return await super()._evalsha(keys, args)
        return await ContactLedger._evalsha(self, keys, args)


def _decision(d: Decision) -> tuple[Any, ...]:
    # sort_keys, and JSON keeps 14 and 14.0 apart (dict equality would not).
    return (d.outcome, d.reasons, d.channel, d.decided_at_ms, json.dumps(d.details, sort_keys=True))


def _shown(shown: dict[str, Any]) -> str:
    for entry in shown["history"]:
        entry["reasons"] = sorted(entry["reasons"])  # stored in the order Lua iterated them
    return json.dumps(shown, sort_keys=True)


async def _play(
    ledger: ContactLedger, customers: Sequence[str], program: list[tuple[Any, ...]]
) -> list[Any]:
    """Run the program; every answer and, at the end, what `show` prints of each customer."""
    seen: list[Any] = []
    now = T0
    for step, late, who in program:
        customer = customers[who]
        at = now - late  # engagements, consents, complaints and outside contacts come late
        kind = step[0]
        if kind == "advance":
            now += step[1]
        elif kind == "decide":
            cands = [
                cand(customer, trig, f"i{inst}", channel=ch, category=cat, priority=len(trig))
                for trig, inst, ch, cat in step[1]
            ]
            got = await ledger.decide(cands, now, step[2], step[3])
            seen.append([_decision(d) for d in got])
        elif kind == "engage":
            seen.append(await ledger.record_engagement(customer, step[2], step[1], at))
        elif kind == "complaint":
            seen.append(await ledger.record_complaint(customer, at))
        elif kind == "consent":
            seen.append(await ledger.record_consent(customer, step[1], step[2], at))
        elif kind == "outside":
            seen.append(
                await ledger.record_outside_contact(
                    customer, step[1], at, step[4], f"o{step[2]}", step[3]
                )
            )
    for customer in customers:
        for segment in (None, "high_affinity"):
            seen.append(_shown(await ledger.show(customer, now, segment)))
        # The state hash is kept without expiry exactly while it holds an opt-out or a
        # streak (-1), else it expires (> 0); -2: there is none.
        ttl = await ledger.client.pttl(ledger.keys(customer)[5])
        seen.append(("state hash expiry", min(max(ttl, -2), 1)))
    return seen


program = st.lists(
    st.tuples(steps, st.sampled_from([0, 0, 0, 1, HOUR, 3 * DAY]), st.integers(0, 1)),
    min_size=10,
    max_size=80,
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    program=program,
    policy=st.sampled_from([NO_UNIT_CAPS, MODEL_POLICY]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_script_decides_as_the_released_one_and_shares_its_ledgers(
    dev_stack: DevStack, program: list[tuple[Any, ...]], policy: Policy, seed: int
) -> None:
    customers = [new_id(), new_id()]

    async def main() -> None:
        url = dev_stack.redis_url
        async with (
            ReleasedLedger(url, policy, new_id("ns")) as released,
            ContactLedger(url, policy, new_id("ns")) as current,
            RollingLedger(url, policy, new_id("ns")) as rolling,
        ):
            rolling.coin = random.Random(seed)
            want = await _play(released, customers, program)
            assert await _play(current, customers, program) == want
            assert await _play(rolling, customers, program) == want

    run(main())


def test_the_reference_is_another_script() -> None:
    # Otherwise the comparison above would compare the script with itself.
    assert RELEASED_SHA != SCRIPT_SHA
