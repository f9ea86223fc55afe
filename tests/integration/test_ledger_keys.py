"""Ledger keys against a real redis-server: identifiers that spelled another customer's key
under the old layout now get ledgers of their own, and ledgers written in the old layout keep
counting after the upgrade.

The old layout (``<namespace>:{<customer_id>}:<part>`` and ``...:bu:<unit>``, outside contacts
recorded as ``x:<unit>:<contact_id>``) wrote ``ns:{V}:bu:u}:dec`` both as customer ``V``'s
contacts for business unit ``u}:dec`` and as the decision hash of customer ``V}:bu:u``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from streams.config import default_policy
from streams.core.decisions import Candidate
from streams.core.policy import BusinessUnitCap, ChannelCap
from streams.core.timeutil import MS_PER_DAY, parse_rfc3339_ms
from streams.ledger import KEY_PARTS, ContactLedger
from streams.tools.devstack import DevStack
from streams.tools.scenarios import build
from tests.integration.test_policy_extensions_live import DAY_START, _event, _produce
from tests.support import WorkerProcess, consume, unique_topics, write_config

DAY = MS_PER_DAY
T0 = 1_772_357_400_000  # 2026-03-01T09:30:00Z
POLICY = dataclasses.replace(default_policy(), holdout_rate=0.0)
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def cand(customer: str, trigger: str, instance: str = "1", channel: str = "email") -> Candidate:
    return Candidate(customer, trigger, instance, "act", channel, "marketing", 50, ("e",), T0)


class OldLayoutLedger(ContactLedger):
    """The ledger as released before the key change: same script, keys built as it built them
    (``ContactLedger.keys`` and ``record_outside_contact`` of that release, verbatim)."""

    def keys(self, customer_id: str, business_unit: str | None = None) -> list[str]:
        prefix = f"{self.namespace}:{{{customer_id}}}:"
        unit = business_unit or self.policy.business_unit
        return [*(prefix + part for part in KEY_PARTS), f"{prefix}bu:{unit}"]

    async def record_outside_contact(
        self,
        customer_id: str,
        channel: str,
        at_ms: int,
        business_unit: str,
        contact_id: str,
        category: str = "marketing",
    ) -> bool:
        key = f"x:{business_unit}:{contact_id}"
        args = [*self._base_args("outside", at_ms), key, channel, category, business_unit]
        return bool(await self._run(customer_id, args, business_unit))


def _namespace() -> str:
    return f"keys-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("part", ["dec", "mk"])
def test_colliding_customers_are_decided_with_separate_ledgers(
    dev_stack: DevStack, part: str
) -> None:
    """Customer V (profile business unit ``u}:<part>``) and customer ``V}:bu:u``: under the
    old layout V's business-unit key was the other's ``<part>`` key (the decision hash: Redis
    answers WRONGTYPE and the worker crash-loops; the contacts set: V's contacts count toward
    the other's global cap). Each must be decided on its own history."""
    v = f"V{uuid.uuid4().hex[:6]}"
    other, unit = f"{v}}}:bu:u", f"u}}:{part}"

    async def body() -> None:
        async with ContactLedger(dev_stack.redis_url, POLICY, _namespace()) as ledger:
            first = await ledger.decide([cand(v, "renewal_reminder")], T0, None, unit)
            second = await ledger.decide(
                [cand(v, "lapsed_revolver", channel="push")], T0 + 1, None, unit
            )
            assert [d.outcome for d in (*first, *second)] == ["contact", "contact"]
            # The other customer has no history: its first contact is not capped by V's two.
            (d,) = await ledger.decide([cand(other, "renewal_reminder")], T0 + 2)
            assert (d.outcome, d.reasons) == ("contact", ())
            assert d.details["global_7d"]["count"] == 0
            # And V's history holds only V's decisions.
            (again,) = await ledger.decide(
                [cand(v, "lapsed_transactor", channel="sms")], T0 + 3, None, unit
            )
            assert again.reasons == ("global_cap_7d",)
            assert again.details["global_7d"]["count"] == 2
            shown_v = await ledger.show(v, T0 + 4)
            shown_other = await ledger.show(other, T0 + 4)
            assert [h["id"] for h in shown_v["history"]] == [
                x.decision_id for x in (*first, *second, again)
            ]
            assert [h["id"] for h in shown_other["history"]] == [d.decision_id]
            assert shown_other["caps"]["global_7d"]["count"] == 1

    run(body())


def test_every_key_a_customer_touches_is_its_own_and_in_its_slot(dev_stack: DevStack) -> None:
    """The keys Redis holds after deciding customers whose ids and business units contain
    braces, colons and spaces: each customer's keys share one hash slot and no two customers
    share a key."""
    tag = uuid.uuid4().hex[:6]
    people = {
        f"{tag}": "u}:dec",
        f"{tag}}}:bu:u": "cards",
        f"{tag} {{x}}": "a b:{c}",
        f"{tag}}}": "}",
        f"{{{tag}": "{",
        f"{tag}%7D": "%",
    }
    namespace = _namespace()

    async def body() -> None:
        async with ContactLedger(dev_stack.redis_url, POLICY, namespace) as ledger:
            for customer, unit in people.items():
                await ledger.decide([cand(customer, "renewal_reminder")], T0, None, unit)
                await ledger.record_complaint(customer, T0 + 1)
                await ledger.record_consent(customer, "sms", "opted_out", T0 + 2)
                assert await ledger.record_outside_contact(customer, "push", T0 + 3, unit, "k")
            client: aioredis.Redis = ledger.client
            stored = {k async for k in client.scan_iter(match=f"{namespace}:*")}
            owners: dict[bytes, str] = {}
            for customer, unit in people.items():
                keys = [k.encode() for k in ledger.keys(customer, unit)]
                assert len({key_slot(k) for k in keys}) == 1, customer
                for key in keys:
                    assert key not in owners, (customer, owners.get(key))
                    owners[key] = customer
            # Everything Redis holds was written under one of those keys.
            assert stored <= set(owners)
            for customer in people:
                shown = await ledger.show(customer, T0 + 4)
                assert len(shown["history"]) == 2, customer
                assert shown["opted_out"] == ["sms"]

    run(body())


def test_outside_contacts_of_units_with_colons_do_not_collide(dev_stack: DevStack) -> None:
    """``x:<unit>:<contact_id>`` was one id for unit ``a:b`` contact ``c`` and unit ``a``
    contact ``b:c``: the second was taken for a repeat of the first and not counted."""
    customer = f"c-{uuid.uuid4().hex[:8]}"

    async def body() -> None:
        async with ContactLedger(dev_stack.redis_url, POLICY, _namespace()) as ledger:
            assert await ledger.record_outside_contact(customer, "email", T0, "a:b", "c")
            assert await ledger.record_outside_contact(customer, "sms", T0, "a", "b:c")
            assert not await ledger.record_outside_contact(customer, "email", T0, "a:b", "c")
            shown = await ledger.show(customer, T0 + 1)
            assert shown["caps"]["global_7d"]["count"] == 2

    run(body())


UPGRADE_POLICY = dataclasses.replace(
    POLICY,
    global_cap_7d=3,
    global_cap_30d=10,
    channel_caps={ch: ChannelCap(10, 7) for ch in POLICY.channel_caps},
    non_responder_after=99,
    business_unit_caps={"cards:eu": BusinessUnitCap(per_7_days=1, per_30_days=None)},
)


@pytest.mark.parametrize("customer", ["c-{}", "crm:{}", "{{{}", "a b {}"])
def test_a_ledger_written_in_the_old_layout_keeps_counting(
    dev_stack: DevStack, customer: str
) -> None:
    """Keys of identifiers without ``}`` are unchanged: what the old release recorded still
    decides caps, cooldowns, opt-outs, business-unit caps and repeated decision ids."""
    customer = customer.format(uuid.uuid4().hex[:8])
    namespace = _namespace()

    async def body() -> None:
        async with OldLayoutLedger(dev_stack.redis_url, UPGRADE_POLICY, namespace) as old:
            (first,) = await old.decide([cand(customer, "renewal_reminder")], T0, None, "cards:eu")
            assert first.outcome == "contact"
            assert await old.record_outside_contact(customer, "sms", T0 + 1, "insurance", "m-1")
            await old.record_consent(customer, "push", "opted_out", T0 + 2)
        async with ContactLedger(dev_stack.redis_url, UPGRADE_POLICY, namespace) as new:
            # The decision id decided before the upgrade returns its first outcome.
            (replayed,) = await new.decide([cand(customer, "renewal_reminder")], T0 + DAY)
            assert replayed == first
            # The outside contact recorded before the upgrade is known.
            assert not await new.record_outside_contact(customer, "sms", T0 + 1, "insurance", "m-1")
            # Its trigger is cooling down, its business unit capped, push opted out.
            (cooled,) = await new.decide([cand(customer, "renewal_reminder", "2")], T0 + DAY)
            assert "trigger_cooldown" in cooled.reasons
            (unit,) = await new.decide(
                [cand(customer, "lapsed_revolver")], T0 + DAY, None, "cards:eu"
            )
            assert unit.reasons == ("business_unit_cap",)
            (push,) = await new.decide(
                [cand(customer, "never_activated", channel="push")], T0 + DAY
            )
            assert "opted_out" in push.reasons
            # Two contacts before the upgrade, one after: the 7-day cap of 3 is reached.
            (third,) = await new.decide([cand(customer, "replacement_due")], T0 + DAY)
            assert third.outcome == "contact"
            assert third.details["global_7d"]["count"] == 2
            (fourth,) = await new.decide([cand(customer, "lapsed_transactor")], T0 + DAY + 1)
            assert fourth.reasons == ("global_cap_7d",)
            shown = await new.show(customer, T0 + DAY + 2)
            assert shown["caps"]["global_7d"]["count"] == 3
            assert shown["opted_out"] == ["push"]

    run(body())


def test_a_worker_decides_the_colliding_customers_independently(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """Through a real worker and broker: customer V, whose profile names business unit
    ``u}:dec``, and customer ``V}:bu:u`` each get a drop-to-wire contact (under the old
    layout the second call met a sorted set where its decision hash should be: WRONGTYPE, and
    the worker stopped)."""
    tag = uuid.uuid4().hex[:8]
    v, other, clock = f"V{tag}", f"V{tag}}}:bu:u", f"clock-{tag}"
    drop = DAY_START + 92 * MS_PER_DAY
    events = [_event(v, f"{v}-profile", DAY_START, business_unit="u}:dec")]
    events += build("savings_drop_to_wire", v, DAY_START).events
    events += build("savings_drop_to_wire", other, DAY_START + 60_000).events
    events += [_event(clock, f"{clock}-1", drop + DAY)]
    topics = unique_topics("keys")
    app_id = f"keys-{tag}"
    config = write_config(tmp_path / "keys.yaml", topics, {"policy": {"holdout_rate": 0}})
    worker = WorkerProcess(dev_stack, config, app_id, tmp_path / "state", partitions=1)
    worker.start()
    try:
        worker.wait_ready()
        run(_produce(dev_stack.bootstrap_servers, topics, events))
        records = run(
            consume(
                dev_stack.bootstrap_servers,
                topics.contact_decisions,
                until=2,
                timeout=60,
                settle=3,
            )
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log_text()[-3000:]
    decisions = {d["customer_id"]: d for d in (orjson.loads(r.value) for r in records)}
    assert set(decisions) == {v, other}, worker.log_text()[-3000:]
    for customer, d in decisions.items():
        assert (d["trigger"], d["outcome"]) == ("savings_drop_to_wire", "contact"), d
        assert d["policy"]["global_7d"]["count"] == 0, customer
        assert parse_rfc3339_ms(d["decided_at"]) is not None

    async def ledgers() -> None:
        async with ContactLedger(dev_stack.redis_url, POLICY, app_id) as ledger:
            for customer, d in decisions.items():
                shown = await ledger.show(customer, drop + 2 * DAY)
                assert [h["id"] for h in shown["history"]] == [d["decision_id"]], customer
            shown_v = await ledger.show(v, drop + 2 * DAY)
            assert shown_v["history"][0]["business_unit"] == "u}:dec"

    run(ledgers())
