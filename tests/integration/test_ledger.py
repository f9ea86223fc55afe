"""The contact ledger against a real redis-server: every rule on both sides of its limit,
idempotency, outside contacts, expiry, concurrency, outage, and a model-based property test.

Every test uses its own namespace and customer ids, so they share the session's Redis safely.
Times are explicit epoch milliseconds; windows are (t - w, t], so a contact at T0 still counts
at T0 + w - 1 ms and no longer at T0 + w.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config import build_config, default_policy
from streams.core.decisions import REASON_CODES, Candidate, Decision
from streams.core.errors import ConfigError
from streams.core.policy import BusinessUnitCap, ChannelCap, Policy
from streams.core.timeutil import MS_PER_DAY
from streams.ledger import SCRIPT_SHA, ContactLedger, LedgerUnavailable
from streams.ledger.cli import add_ledger_commands, run_ledger_command
from streams.ledger.pipeline import Pipeliner
from streams.tools.devstack import DevStack, RedisServer, free_port

DAY = MS_PER_DAY
HOUR = DAY // 24
T0 = 1_772_357_400_000  # 2026-03-01T09:30:00Z
NO_HOLDOUT = dataclasses.replace(default_policy(), holdout_rate=0.0)
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def new_id(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def cand(
    customer: str,
    trigger: str,
    instance: str = "1",
    channel: str = "email",
    category: str = "marketing",
    priority: int = 50,
) -> Candidate:
    return Candidate(customer, trigger, instance, "act", channel, category, priority, ("e",), T0)


def with_ledger(
    stack: DevStack,
    body: Callable[[ContactLedger], Awaitable[T]],
    policy: Policy = NO_HOLDOUT,
    **kwargs: Any,
) -> T:
    async def main() -> T:
        async with ContactLedger(stack.redis_url, policy, new_id("ns"), **kwargs) as ledger:
            return await body(ledger)

    return asyncio.run(main())


async def one(
    ledger: ContactLedger, c: Candidate, now: int, segment: str | None = None
) -> Decision:
    (decision,) = await ledger.decide([c], now, segment)
    return decision


def outcome(d: Decision) -> tuple[str, tuple[str, ...]]:
    return d.outcome, d.reasons


# -- caps ---------------------------------------------------------------------------------------


def test_global_cap_7d_on_both_sides(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        assert outcome(await one(ledger, cand(c, "a", channel="email"), T0)) == ("contact", ())
        assert outcome(await one(ledger, cand(c, "b", channel="push"), T0 + HOUR)) == (
            "contact",
            (),
        )
        third = await one(ledger, cand(c, "c", channel="sms"), T0 + 2 * HOUR)
        assert outcome(third) == ("suppressed", ("global_cap_7d",))
        assert third.details["global_7d"] == {"count": 2, "cap": 2}
        # Just inside the window the contact at T0 still counts ...
        d = await one(ledger, cand(c, "d", channel="sms"), T0 + 7 * DAY - 1)
        assert outcome(d) == ("suppressed", ("global_cap_7d",))
        # ... and at T0 + 7 days it no longer does: (t - 7d, t] excludes T0.
        assert outcome(await one(ledger, cand(c, "e", channel="sms"), T0 + 7 * DAY)) == (
            "contact",
            (),
        )

    with_ledger(dev_stack, body)


def test_global_cap_30d_on_both_sides(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        # Six contacts in 30 days, two per 7-day window, alternating channels.
        for i, day in enumerate((0, 0, 8, 8, 16, 16)):
            channel = "email" if i % 2 == 0 else "push"
            d = await one(ledger, cand(c, f"t{i}", channel=channel), T0 + day * DAY + i)
            assert d.outcome == "contact", (i, d)
        d = await one(ledger, cand(c, "t6", channel="sms"), T0 + 24 * DAY)
        assert outcome(d) == ("suppressed", ("global_cap_30d",))
        assert d.details["global_30d"] == {"count": 6, "cap": 6}
        d = await one(ledger, cand(c, "t7", channel="sms"), T0 + 30 * DAY - 1)
        assert outcome(d) == ("suppressed", ("global_cap_30d",))
        # The first contact (T0 + 0) leaves the window at T0 + 30 days.
        d = await one(ledger, cand(c, "t8", channel="sms"), T0 + 30 * DAY)
        assert outcome(d) == ("contact", ())

    # Six unanswered contacts would start the back-off: keep it out of this test.
    with_ledger(dev_stack, body, dataclasses.replace(NO_HOLDOUT, non_responder_after=99))


@pytest.mark.parametrize(
    ("channel", "cap", "days"),
    [("email", 2, 7), ("sms", 1, 7), ("push", 3, 7), ("phone", 1, 30), ("direct_mail", 1, 30)],
)
def test_channel_cap_on_both_sides(dev_stack: DevStack, channel: str, cap: int, days: int) -> None:
    # Global caps raised so that only the channel cap can bite.
    policy = dataclasses.replace(NO_HOLDOUT, global_cap_7d=10, global_cap_30d=10)

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        for i in range(cap):
            d = await one(ledger, cand(c, f"t{i}", channel=channel), T0 + i)
            assert outcome(d) == ("contact", ())
        d = await one(ledger, cand(c, "x", channel=channel), T0 + days * DAY - 1)
        assert outcome(d) == ("suppressed", ("channel_cap",))
        assert d.details["channels"][channel]["count"] == cap
        assert d.details["channels"][channel]["cap"] == cap
        # Another channel is not affected.
        other = "sms" if channel != "sms" else "email"
        d = await one(ledger, cand(c, "y", channel=other), T0 + days * DAY - 1)
        assert outcome(d) == ("contact", ())
        d = await one(ledger, cand(c, "z", channel=channel), T0 + days * DAY)
        assert outcome(d) == ("contact", ())

    with_ledger(dev_stack, body, policy)


def test_high_affinity_doubles_global_and_channel_caps(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c, standard = new_id(), new_id()
        for i in range(4):
            d = await one(ledger, cand(c, f"t{i}"), T0 + i, "high_affinity")
            assert outcome(d) == ("contact", ()), i
        d = await one(ledger, cand(c, "t4"), T0 + 5, "high_affinity")
        assert outcome(d) == ("suppressed", ("global_cap_7d", "channel_cap"))
        assert d.details["global_7d"] == {"count": 4, "cap": 4}
        assert d.details["channels"]["email"]["cap"] == 4
        assert d.details["segment"] == "high_affinity" and d.details["multiplier"] == 2
        # The same history without the segment stops at the normal caps.
        for i in range(2):
            assert (await one(ledger, cand(standard, f"t{i}"), T0 + i, "standard")).outcome == (
                "contact"
            )
        d = await one(ledger, cand(standard, "t2"), T0 + 3, "standard")
        assert outcome(d) == ("suppressed", ("global_cap_7d", "channel_cap"))

    with_ledger(dev_stack, body)


def test_trigger_cooldown_on_both_sides(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        assert (await one(ledger, cand(c, "renewal_reminder", "a"), T0)).outcome == "contact"
        d = await one(ledger, cand(c, "renewal_reminder", "b"), T0 + 14 * DAY - 1)
        assert outcome(d) == ("suppressed", ("trigger_cooldown",))
        assert d.details["trigger_cooldown"]["last_at"] == T0
        # Another trigger is not cooled down.
        assert (await one(ledger, cand(c, "never_activated"), T0 + DAY)).outcome == "contact"
        d = await one(ledger, cand(c, "renewal_reminder", "c"), T0 + 14 * DAY)
        assert outcome(d) == ("contact", ())

    with_ledger(dev_stack, body)


def test_non_responder_backoff_after_five_unanswered(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        # Contacts 8 days apart stay within every cap: only the back-off can bite.
        days = [0, 8, 16, 24, 32]
        for i, day in enumerate(days):
            d = await one(ledger, cand(c, f"t{i}"), T0 + day * DAY)
            # The 5th is allowed: 4 unanswered before it.
            assert outcome(d) == ("contact", ()), i
            assert d.details["non_responder"]["unanswered"] == i
        # Bounced and delivered are no answer (the delivery after the bounce leaves email
        # deliverable).
        await ledger.record_engagement(c, "email", "bounced", T0 + 33 * DAY - 1)
        await ledger.record_engagement(c, "email", "delivered", T0 + 33 * DAY)
        d = await one(ledger, cand(c, "t5"), T0 + 40 * DAY)
        assert outcome(d) == ("suppressed", ("non_responder_backoff",))
        assert d.details["non_responder"]["active"] is True
        assert d.details["non_responder"]["count"] == 3  # days 16, 24, 32 in (10, 40]
        d = await one(ledger, cand(c, "t6"), T0 + 62 * DAY - 1)
        assert outcome(d) == ("suppressed", ("non_responder_backoff",))
        # 30 days after the last contact: one more is allowed, then back-off again.
        assert outcome(await one(ledger, cand(c, "t7"), T0 + 62 * DAY)) == ("contact", ())
        d = await one(ledger, cand(c, "t8"), T0 + 70 * DAY)
        assert outcome(d) == ("suppressed", ("non_responder_backoff",))
        # An open (even without a decision id) ends the back-off.
        await ledger.record_engagement(c, "email", "opened", T0 + 71 * DAY)
        d = await one(ledger, cand(c, "t9"), T0 + 72 * DAY)
        assert outcome(d) == ("contact", ())
        assert d.details["non_responder"]["unanswered"] == 0

    with_ledger(dev_stack, body)


@pytest.mark.parametrize("action", ["opened", "clicked", "converted"])
def test_each_response_resets_the_streak(dev_stack: DevStack, action: str) -> None:
    policy = dataclasses.replace(NO_HOLDOUT, non_responder_after=1)

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        first = await one(ledger, cand(c, "a"), T0)
        assert first.outcome == "contact"
        assert (await one(ledger, cand(c, "b"), T0 + DAY)).reasons == ("non_responder_backoff",)
        await ledger.record_engagement(c, "email", action, T0 + 2 * DAY, first.decision_id)
        assert (await one(ledger, cand(c, "c"), T0 + 3 * DAY)).outcome == "contact"

    with_ledger(dev_stack, body, policy)


# Only the sunset rule can bite: contacts 8 days apart stay within every cap, and the
# back-off never starts.
SUNSET = dataclasses.replace(
    NO_HOLDOUT, non_responder_after=1000, channel_fallbacks={"tf": ("push",)}
)


async def _unanswered_emails(ledger: ContactLedger, c: str, n: int, start: int = T0) -> int:
    """``n`` email contacts 8 days apart from ``start``; the time of the last."""
    at = start
    for i in range(n):
        at = start + i * 8 * DAY
        d = await one(ledger, cand(c, f"s{start}-{i}"), at)
        assert outcome(d) == ("contact", ()), i
        assert d.details["channels"]["email"]["unanswered"] == i
    return at


def test_sunset_after_twelve_unanswered_on_a_channel(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        last = await _unanswered_emails(ledger, c, 11)
        # 11 unanswered: the 12th contact is allowed.
        d = await one(ledger, cand(c, "twelfth"), last + 8 * DAY)
        assert outcome(d) == ("contact", ())
        assert d.details["channels"]["email"]["unanswered"] == 11
        assert d.details["sunset"] == {"after": 12}
        # 12 unanswered: sunset, not the back-off, and however long one waits.
        d = await one(ledger, cand(c, "thirteenth"), last + 100 * DAY)
        assert outcome(d) == ("suppressed", ("sunset",))
        assert d.details["channels"]["email"]["unanswered"] == 12
        assert d.details["non_responder"]["active"] is False
        # A fallback channel that is not sunset is used.
        d = await one(ledger, cand(c, "tf"), last + 100 * DAY + 1)
        assert outcome(d) == ("contact", ()) and d.channel == "push"
        assert d.details["fallback_from"] == "email"
        # No response on email: delivered is none, a response on push ends push's count only.
        await ledger.record_engagement(c, "email", "delivered", last + 101 * DAY)
        await ledger.record_engagement(c, "push", "opened", last + 101 * DAY)
        d = await one(ledger, cand(c, "fourteenth"), last + 102 * DAY)
        assert outcome(d) == ("suppressed", ("sunset",))
        shown = await ledger.show(c, last + 102 * DAY)
        assert shown["sunset"]["sunset"] == ["email"]
        assert shown["sunset"]["unanswered"]["email"] == 12
        # A click on email ends it.
        await ledger.record_engagement(c, "email", "clicked", last + 103 * DAY)
        d = await one(ledger, cand(c, "fifteenth"), last + 104 * DAY)
        assert outcome(d) == ("contact", ())
        assert d.details["channels"]["email"]["unanswered"] == 0

    with_ledger(dev_stack, body, SUNSET)


def test_sunset_counts_contacts_after_a_late_response_and_outside_ones(
    dev_stack: DevStack,
) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        last = await _unanswered_emails(ledger, c, 10)
        # Another unit's email counts (the customer sees one company): 11 unanswered.
        assert await ledger.record_outside_contact(c, "email", last + DAY, "cards", "k-1")
        d = await one(ledger, cand(c, "twelfth"), last + 8 * DAY)
        assert outcome(d) == ("contact", ())
        d = await one(ledger, cand(c, "thirteenth"), last + 16 * DAY)
        assert outcome(d) == ("suppressed", ("sunset",))
        # An open that happened before the last two contacts, heard late: those two still
        # count (the outside one at last + DAY and ours at last + 8 days).
        await ledger.record_engagement(c, "email", "opened", last + 1)
        d = await one(ledger, cand(c, "fourteenth"), last + 17 * DAY)
        assert outcome(d) == ("contact", ())
        assert d.details["channels"]["email"]["unanswered"] == 2

    with_ledger(dev_stack, body, SUNSET)


def test_sunset_off_leaves_the_decision_as_before(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(SUNSET, sunset_after_unanswered=None)

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        last = None
        for i in range(13):
            last = T0 + i * 8 * DAY
            d = await one(ledger, cand(c, f"t{i}"), last)
            assert outcome(d) == ("contact", ()), i
            assert "unanswered" not in d.details["channels"]["email"]
            assert "sunset" not in d.details
        assert last is not None
        assert "sunset" not in await ledger.show(c, last)

    with_ledger(dev_stack, body, policy)


BOUNCES = dataclasses.replace(NO_HOLDOUT, channel_fallbacks={"tf": ("push",)})


def test_a_bounce_stops_marketing_on_its_channel_until_a_later_delivery(
    dev_stack: DevStack,
) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        state_key = ledger.keys(c)[5]
        assert outcome(await one(ledger, cand(c, "a"), T0)) == ("contact", ())
        await ledger.record_engagement(c, "email", "bounced", T0 + HOUR)
        d = await one(ledger, cand(c, "b"), T0 + 8 * DAY)
        assert outcome(d) == ("suppressed", ("undeliverable",))
        assert d.details["channels"]["email"]["undeliverable"] is True
        # A channel rule: the fallback is used.
        d = await one(ledger, cand(c, "tf"), T0 + 8 * DAY + 1)
        assert outcome(d) == ("contact", ()) and d.channel == "push"
        assert (await ledger.show(c, T0 + 8 * DAY))["undeliverable"] == ["email"]
        # Kept without expiry while it matters (like an opt-out).
        assert await ledger.client.pttl(state_key) == -1
        # A delivery at the bounce's own time is not later: still undeliverable.
        await ledger.record_engagement(c, "email", "delivered", T0 + HOUR)
        d = await one(ledger, cand(c, "c"), T0 + 16 * DAY)
        assert outcome(d) == ("suppressed", ("undeliverable",))
        # A later one is.
        await ledger.record_engagement(c, "email", "delivered", T0 + HOUR + 1)
        d = await one(ledger, cand(c, "d"), T0 + 16 * DAY + 1)
        assert outcome(d) == ("contact", ())
        assert d.details["channels"]["email"]["undeliverable"] is False
        assert (await ledger.show(c, T0 + 17 * DAY))["undeliverable"] == []
        # A customer with nothing else lasting: the state hash expires again after delivery.
        other = new_id()
        await ledger.record_engagement(other, "email", "bounced", T0)
        assert await ledger.client.pttl(ledger.keys(other)[5]) == -1
        await ledger.record_engagement(other, "email", "delivered", T0 + 1)
        assert await ledger.client.pttl(ledger.keys(other)[5]) > 0

    with_ledger(dev_stack, body, BOUNCES)


def test_bounces_by_event_time_whatever_the_arrival_order(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        # The delivery is heard first, the earlier bounce late: the channel is deliverable.
        await ledger.record_engagement(c, "sms", "delivered", T0 + 10)
        await ledger.record_engagement(c, "sms", "bounced", T0 + 5)
        assert outcome(await one(ledger, cand(c, "a", channel="sms"), T0 + DAY)) == (
            "contact",
            (),
        )
        # A bounce on push leaves sms alone; a click on push after it ends it, an open of
        # another channel or a conversion does not.
        await ledger.record_engagement(c, "push", "bounced", T0 + 2 * DAY)
        await ledger.record_engagement(c, "email", "opened", T0 + 3 * DAY)
        await ledger.record_engagement(c, "push", "converted", T0 + 3 * DAY)
        d = await one(ledger, cand(c, "b", channel="push"), T0 + 4 * DAY)
        assert outcome(d) == ("suppressed", ("undeliverable",))
        await ledger.record_engagement(c, "push", "clicked", T0 + 3 * DAY)
        d = await one(ledger, cand(c, "c", channel="push"), T0 + 4 * DAY + 1)
        assert outcome(d) == ("contact", ())

    with_ledger(dev_stack, body, BOUNCES)


def test_bounce_rule_off_leaves_the_decision_as_before(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(BOUNCES, undeliverable=False)

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        await ledger.record_engagement(c, "email", "bounced", T0)
        assert await ledger.client.exists(ledger.keys(c)[5]) == 0  # nothing recorded
        d = await one(ledger, cand(c, "a"), T0 + DAY)
        assert outcome(d) == ("contact", ())
        assert "undeliverable" not in d.details["channels"]["email"]
        assert "undeliverable" not in await ledger.show(c, T0 + DAY)

    with_ledger(dev_stack, body, policy)


def acand(customer: str, trigger: str, action: str, **kwargs: Any) -> Candidate:
    return dataclasses.replace(cand(customer, trigger, **kwargs), action=action)


def test_capacity_per_action_and_local_day_on_both_sides(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(
        NO_HOLDOUT,
        capacity={"act": 3},
        capacity_timezone="America/New_York",
        channel_fallbacks={"tf": ("push",)},
    )
    midnight = 1_772_427_600_000  # 2026-03-02T05:00:00Z: midnight in New York
    assert T0 < midnight - HOUR

    async def body(ledger: ContactLedger) -> None:
        people = [new_id() for _ in range(5)]
        firsts = []
        for i, c in enumerate(people[:3]):
            d = await one(ledger, cand(c, "a"), T0 + i)
            assert outcome(d) == ("contact", ()), i
            assert d.details["capacity"] == {"count": i, "cap": 3}
            firsts.append(d)
        # N contacted: the N+1st is over capacity, and a fallback channel does not help (the
        # capacity is the action's, whatever the channel).
        d = await one(ledger, cand(people[3], "a"), T0 + 3)
        assert outcome(d) == ("suppressed", ("capacity",))
        assert d.details["capacity"] == {"count": 3, "cap": 3}
        d = await one(ledger, cand(people[3], "tf"), T0 + 4)
        assert outcome(d) == ("suppressed", ("capacity",)) and d.channel == "email"
        # A repeated decision id takes no capacity; other actions and service have none.
        assert outcome(await one(ledger, firsts[0].candidate, T0 + 5)) == ("contact", ())
        assert outcome(await one(ledger, acand(people[3], "b", "other"), T0 + 6)) == (
            "contact",
            (),
        )
        service = acand(people[4], "svc", "act", category="service")
        assert outcome(await one(ledger, service, T0 + 7)) == ("contact", ())
        # The day is New York's: still March 1st a millisecond before its midnight.
        d = await one(ledger, cand(people[4], "c"), midnight - 1)
        assert outcome(d) == ("suppressed", ("capacity",))
        d = await one(ledger, cand(people[4], "d"), midnight)
        assert outcome(d) == ("contact", ())
        assert d.details["capacity"] == {"count": 0, "cap": 3}

    with_ledger(dev_stack, body, policy)


def test_capacity_goes_to_the_higher_priority_candidate_first(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(NO_HOLDOUT, capacity={"act": 1})

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        low, high = cand(c, "low", priority=10), cand(c, "high", priority=90)
        got = await ledger.decide([low, high], T0)
        assert [(d.candidate.trigger, outcome(d)) for d in got] == [
            ("high", ("contact", ())),
            ("low", ("suppressed", ("capacity",))),
        ]

    with_ledger(dev_stack, body, policy)


def test_capacity_holds_with_two_workers_racing(dev_stack: DevStack) -> None:
    """Two clients, each in its own thread and event loop (two workers), decide 20 customers
    each at the same time for one action with a capacity of 7: exactly 7 contacts."""
    policy = dataclasses.replace(NO_HOLDOUT, capacity={"act": 7})
    namespace = new_id("ns")
    start = threading.Barrier(2)

    def worker(name: str) -> list[Decision]:
        async def main() -> list[Decision]:
            async with ContactLedger(dev_stack.redis_url, policy, namespace) as ledger:
                await ledger.ping()
                start.wait()
                people = [f"{name}-{i}" for i in range(20)]
                return list(await asyncio.gather(*(one(ledger, cand(c, "a"), T0) for c in people)))

        return asyncio.run(main())

    with ThreadPoolExecutor(2) as pool:
        results = [*pool.map(worker, ["w1", "w2"])]
    decisions = [d for got in results for d in got]
    assert len(decisions) == 40
    assert sum(d.outcome == "contact" for d in decisions) == 7
    assert all(d.reasons == ("capacity",) for d in decisions if d.outcome == "suppressed")

    async def counted() -> int:
        client = aioredis.from_url(dev_stack.redis_url)
        try:
            return int(await client.get(f"{namespace}:capacity:act:2026-03-01"))
        finally:
            await client.aclose()

    assert run(counted()) == 7


def test_recent_complaint_on_both_sides_service_unaffected(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        await ledger.record_complaint(c, T0)
        d = await one(ledger, cand(c, "a"), T0)
        assert outcome(d) == ("suppressed", ("recent_complaint",))
        d = await one(ledger, cand(c, "b"), T0 + 14 * DAY - 1)
        assert outcome(d) == ("suppressed", ("recent_complaint",))
        assert d.details["complaint"] == {"at": T0, "quiet_until": T0 + 14 * DAY}
        s = await one(ledger, cand(c, "auto_renew_confirmation", category="service"), T0 + 1)
        assert outcome(s) == ("contact", ())
        assert outcome(await one(ledger, cand(c, "c"), T0 + 14 * DAY)) == ("contact", ())

    with_ledger(dev_stack, body)


def test_opt_outs_per_channel_all_and_unsubscribe(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(NO_HOLDOUT, global_cap_7d=20, global_cap_30d=20)

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        await ledger.record_consent(c, "email", "opted_out", T0)
        assert outcome(await one(ledger, cand(c, "a", channel="email"), T0 + 1)) == (
            "suppressed",
            ("opted_out",),
        )
        assert (await one(ledger, cand(c, "b", channel="push"), T0 + 2)).outcome == "contact"
        await ledger.record_consent(c, "all", "opted_out", T0 + 3)
        d = await one(ledger, cand(c, "c", channel="push"), T0 + 4)
        assert outcome(d) == ("suppressed", ("opted_out",))
        assert d.details["channels"]["push"]["opted_out"] is True
        # Service messages ignore opt-outs.
        s = await one(ledger, cand(c, "svc", channel="email", category="service"), T0 + 5)
        assert s.outcome == "contact"
        # A later opt-in of one channel reopens that channel only.
        await ledger.record_consent(c, "sms", "opted_in", T0 + 6)
        assert (await one(ledger, cand(c, "d", channel="sms"), T0 + 7)).outcome == "contact"
        assert (await one(ledger, cand(c, "e", channel="push"), T0 + 8)).outcome == "suppressed"
        # A consent event older than the one in force changes nothing (late arrival).
        await ledger.record_consent(c, "all", "opted_in", T0 + 2)
        assert (await one(ledger, cand(c, "f", channel="push"), T0 + 9)).outcome == "suppressed"
        await ledger.record_consent(c, "all", "opted_in", T0 + 10)
        assert (await one(ledger, cand(c, "g", channel="push"), T0 + 11)).outcome == "contact"
        # Unsubscribing (from a push message) opts that channel out.
        await ledger.record_engagement(c, "push", "unsubscribed", T0 + 12)
        assert (await one(ledger, cand(c, "h", channel="push"), T0 + 13)).reasons == ("opted_out",)
        shown = await ledger.show(c, T0 + 14)
        assert shown["opted_out"] == ["push"]

    with_ledger(dev_stack, body, policy)


def test_every_reason_that_applies_is_reported(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(
        NO_HOLDOUT,
        global_cap_7d=1,
        global_cap_30d=1,
        non_responder_after=1,
        channel_caps={k: dataclasses.replace(v, max=1) for k, v in NO_HOLDOUT.channel_caps.items()},
    )

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        assert (await one(ledger, cand(c, "renewal_reminder", "1"), T0)).outcome == "contact"
        await ledger.record_complaint(c, T0 + 1)
        await ledger.record_consent(c, "email", "opted_out", T0 + 2)
        d = await one(ledger, cand(c, "renewal_reminder", "2"), T0 + 3)
        assert d.outcome == "suppressed"
        assert d.reasons == (
            "global_cap_7d",
            "global_cap_30d",
            "channel_cap",
            "trigger_cooldown",
            "non_responder_backoff",
            "recent_complaint",
            "opted_out",
        )
        details = d.details
        assert details["global_7d"] == {"count": 1, "cap": 1}
        assert details["global_30d"] == {"count": 1, "cap": 1}
        assert details["channels"]["email"] == {
            "count": 1,
            "cap": 1,
            "days": 7,
            "opted_out": True,
            "unanswered": 1,  # the sunset rule's count (on by default)
            "undeliverable": False,  # the bounce rule (on by default)
        }
        assert details["sunset"] == {"after": 12}
        assert details["trigger_cooldown"] == {"count": 1, "days": 14, "last_at": T0}
        assert details["non_responder"]["unanswered"] == 1
        assert details["complaint"]["at"] == T0 + 1
        assert d.to_record()["policy"] == details  # published as the additive field

    with_ledger(dev_stack, body, policy)


# -- service, holdout, priority, fallbacks ---------------------------------------------------------


def test_service_is_recorded_never_stopped_never_counted(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        await ledger.record_consent(c, "all", "opted_out", T0)
        await ledger.record_complaint(c, T0)
        for i in range(5):
            s = await one(
                ledger, cand(c, "auto_renew_confirmation", str(i), category="service"), T0 + i
            )
            assert outcome(s) == ("contact", ()), i
        await ledger.record_consent(c, "all", "opted_in", T0 + 10)
        shown = await ledger.show(c, T0 + 20 * DAY)
        assert [h["category"] for h in shown["history"]] == ["service"] * 5
        assert shown["caps"]["global_7d"]["count"] == 0
        # Complaint quiet over, opt-in back: five service messages left every cap free.
        assert (await one(ledger, cand(c, "a"), T0 + 20 * DAY)).outcome == "contact"
        assert (await one(ledger, cand(c, "b", channel="push"), T0 + 20 * DAY)).outcome == (
            "contact"
        )

    with_ledger(dev_stack, body)


def _customer_in_holdout(policy: Policy, trigger: str, other: str) -> str:
    while True:
        c = new_id()
        if policy.is_holdout(c, trigger) and not policy.is_holdout(c, other):
            return c


def test_holdout_counts_toward_cooldown_not_caps(dev_stack: DevStack) -> None:
    policy = default_policy()
    c = _customer_in_holdout(policy, "renewal_reminder", "never_activated")

    async def body(ledger: ContactLedger) -> None:
        d = await one(ledger, cand(c, "renewal_reminder", "1"), T0)
        assert outcome(d) == ("holdout", ())
        assert d.details["holdout"] is True
        # Within the cooldown: suppressed like a contacted customer would be.
        d = await one(ledger, cand(c, "renewal_reminder", "2"), T0 + DAY)
        assert outcome(d) == ("suppressed", ("trigger_cooldown",))
        # Not toward caps: two contacts of another trigger still fit in 7 days.
        assert (await one(ledger, cand(c, "never_activated", "1"), T0 + 2)).outcome == "contact"
        d = await one(ledger, cand(c, "never_activated", "2"), T0 + 15 * DAY)
        assert d.outcome == "contact"
        assert (await one(ledger, cand(c, "renewal_reminder", "3"), T0 + 15 * DAY)).outcome == (
            "holdout"
        )

    with_ledger(dev_stack, body, policy)


def test_holdout_only_among_those_passing_opt_out_and_complaint(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(default_policy(), holdout_rate=1.0)

    async def body(ledger: ContactLedger) -> None:
        a, b, x = new_id(), new_id(), new_id()
        await ledger.record_consent(a, "email", "opted_out", T0)
        assert outcome(await one(ledger, cand(a, "t"), T0 + 1)) == ("suppressed", ("opted_out",))
        await ledger.record_complaint(b, T0)
        d = await one(ledger, cand(b, "t"), T0 + 1)
        assert outcome(d) == ("suppressed", ("recent_complaint",))
        # Caps do not stop a holdout (it is not a contact).
        await ledger.record_outside_contact(x, "email", T0, "cards", "o1")
        await ledger.record_outside_contact(x, "email", T0, "cards", "o2")
        assert outcome(await one(ledger, cand(x, "t"), T0 + 1)) == ("holdout", ())
        s = await one(ledger, cand(x, "svc", category="service"), T0 + 2)
        assert s.outcome == "contact"  # service is never held out

    with_ledger(dev_stack, body, policy)


def test_holdout_is_stable_per_customer_and_trigger(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(default_policy(), holdout_rate=0.5)
    customers = [new_id() for _ in range(40)]

    async def body(ledger: ContactLedger) -> None:
        for c in customers:
            first = await one(ledger, cand(c, "never_activated", "1"), T0)
            again = await one(ledger, cand(c, "never_activated", "2"), T0 + 20 * DAY)
            assert first.outcome == again.outcome
            assert (first.outcome == "holdout") == policy.is_holdout(c, "never_activated")
        held = sum(policy.is_holdout(c, "never_activated") for c in customers)
        assert 0 < held < len(customers)

    with_ledger(dev_stack, body, policy)


def test_arbitration_by_priority_each_seeing_the_ones_before(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        await ledger.record_outside_contact(c, "sms", T0 - HOUR, "insurance", "ins-1")
        given_order = [
            cand(c, "replacement_due", priority=20),
            cand(c, "savings_drop_to_checking", priority=85),
            cand(c, "auto_renew_confirmation", category="service", priority=100),
            cand(c, "savings_drop_to_wire", channel="phone", priority=90),
        ]
        decided = await ledger.decide(given_order, T0)
        assert [(d.candidate.trigger, d.outcome, d.reasons) for d in decided] == [
            ("auto_renew_confirmation", "contact", ()),
            ("savings_drop_to_wire", "contact", ()),
            # One outside contact + the wire call: the 7-day cap of 2 is used up.
            ("savings_drop_to_checking", "suppressed", ("global_cap_7d",)),
            ("replacement_due", "suppressed", ("global_cap_7d",)),
        ]

    with_ledger(dev_stack, body)


def test_channel_fallback_when_capped_or_opted_out(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(
        NO_HOLDOUT,
        global_cap_7d=10,
        global_cap_30d=10,
        non_responder_after=99,
        channel_fallbacks={"never_activated": ("push",), "replacement_due": ("push",)},
    )

    async def body(ledger: ContactLedger) -> None:
        c, o = new_id(), new_id()
        for i in range(2):
            assert (await one(ledger, cand(c, f"t{i}"), T0 + i)).channel == "email"
        d = await one(ledger, cand(c, "never_activated", "1"), T0 + 2)
        assert (d.outcome, d.channel, d.reasons) == ("contact", "push", ())
        assert d.details["fallback_from"] == "email"
        assert d.to_record()["channel"] == "push"
        for i in range(2):
            await one(ledger, cand(c, f"p{i}", channel="push"), T0 + 3 + i)
        # Both channels capped: suppressed, reported on the candidate's own channel.
        d = await one(ledger, cand(c, "replacement_due", "2"), T0 + 10)
        assert (d.outcome, d.channel, d.reasons) == ("suppressed", "email", ("channel_cap",))
        assert d.details["channels"]["push"]["count"] == 3
        # Opted out of email: push instead; a trigger without fallbacks stays suppressed.
        await ledger.record_consent(o, "email", "opted_out", T0)
        d = await one(ledger, cand(o, "never_activated"), T0 + 1)
        assert (d.outcome, d.channel) == ("contact", "push")
        d = await one(ledger, cand(o, "usual_booking_missed"), T0 + 1)
        assert d.reasons == ("opted_out",)
        # Rules that hold on every channel are not escaped by a fallback.
        d = await one(ledger, cand(o, "never_activated", "2"), T0 + 2)
        assert (d.outcome, d.reasons) == ("suppressed", ("trigger_cooldown", "opted_out"))

    with_ledger(dev_stack, body, policy)


def test_quiet_channels_are_not_used_as_fallbacks(dev_stack: DevStack) -> None:
    policy = dataclasses.replace(
        NO_HOLDOUT, channel_fallbacks={"never_activated": ("push", "direct_mail")}
    )

    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        await ledger.record_consent(c, "email", "opted_out", T0)
        # Push is in its quiet hours: the next fallback is used instead.
        (d,) = await ledger.decide([cand(c, "never_activated")], T0, skip_channels={"push"})
        assert (d.outcome, d.channel) == ("contact", "direct_mail")
        # With every fallback quiet, nothing else is tried: opted out of its own channel.
        (d,) = await ledger.decide(
            [cand(c, "never_activated", "2")], T0 + 1, skip_channels={"push", "direct_mail"}
        )
        assert (d.outcome, d.reasons) == ("suppressed", ("trigger_cooldown", "opted_out"))
        assert set(d.details["channels"]) == {"email"}

    with_ledger(dev_stack, body, policy)


# -- business units ----------------------------------------------------------------------------

BU_POLICY = dataclasses.replace(
    NO_HOLDOUT,
    global_cap_7d=10,
    global_cap_30d=20,
    non_responder_after=99,
    channel_caps={ch: ChannelCap(10, 7) for ch in NO_HOLDOUT.channel_caps},
    trigger_business_units={"lapsed_revolver": "cards", "lapsed_transactor": "cards"},
    business_unit_caps={
        "cards": BusinessUnitCap(per_7_days=1, per_30_days=2),
        "lifecycle": BusinessUnitCap(per_7_days=None, per_30_days=3),
    },
)


def test_business_unit_7_day_cap_on_both_sides(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        first = await one(ledger, cand(c, "lapsed_revolver", "1"), T0)
        assert outcome(first) == ("contact", ())
        assert first.details["business_unit"] == {
            "name": "cards", "count_7d": 0, "count_30d": 0, "cap_7d": 1, "cap_30d": 2,
        }  # fmt: skip
        # Another trigger of the same unit inside 7 days: the unit's cap, not the global one.
        d = await one(ledger, cand(c, "lapsed_transactor", "1"), T0 + 7 * DAY - 1)
        assert outcome(d) == ("suppressed", ("business_unit_cap",))
        assert d.details["business_unit"]["count_7d"] == 1
        # Another unit's trigger is not held by the cards cap.
        d = await one(ledger, cand(c, "never_activated", "1"), T0 + 7 * DAY - 1)
        assert outcome(d) == ("contact", ())
        # The first contact leaves the 7-day window at T0 + 7 days.
        d = await one(ledger, cand(c, "lapsed_transactor", "2"), T0 + 7 * DAY)
        assert outcome(d) == ("contact", ())

    with_ledger(dev_stack, body, BU_POLICY)


def test_business_unit_30_day_cap_and_segment_doubling(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c, vip = new_id(), new_id()
        # Our own unit ("lifecycle"): no 7-day cap, 3 in 30 days.
        for i in range(3):
            d = await one(ledger, cand(c, f"t{i}"), T0 + i * 8 * DAY)
            assert outcome(d) == ("contact", ()), i
        d = await one(ledger, cand(c, "t3"), T0 + 30 * DAY - 1)
        assert outcome(d) == ("suppressed", ("business_unit_cap",))
        assert d.details["business_unit"]["count_30d"] == 3
        assert "cap_7d" not in d.details["business_unit"]
        d = await one(ledger, cand(c, "t4"), T0 + 30 * DAY)  # the first one has left
        assert outcome(d) == ("contact", ())
        # high_affinity tolerates twice the unit's caps too: 2 cards contacts in 7 days.
        hi = "high_affinity"
        assert outcome(await one(ledger, cand(vip, "lapsed_revolver"), T0, hi))[0] == "contact"
        assert outcome(await one(ledger, cand(vip, "lapsed_transactor"), T0, hi))[0] == "contact"
        d = await one_for(ledger, cand(vip, "never_activated"), T0 + 1, "cards", hi)
        assert outcome(d) == ("suppressed", ("business_unit_cap",))
        assert d.details["business_unit"]["cap_7d"] == 2
        assert d.details["business_unit"]["count_7d"] == 2

    with_ledger(dev_stack, body, BU_POLICY)


def test_outside_contacts_count_against_their_units_cap(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c, p = new_id(), new_id()
        assert await ledger.record_outside_contact(c, "sms", T0, "cards", "k-1")
        assert not await ledger.record_outside_contact(c, "sms", T0, "cards", "k-1")
        await ledger.record_outside_contact(c, "sms", T0, "cards", "s-1", category="service")
        d = await one(ledger, cand(c, "lapsed_revolver"), T0 + 1)
        assert outcome(d) == ("suppressed", ("business_unit_cap",))
        assert d.details["business_unit"]["count_7d"] == 1  # once, and service not counted
        # Another unit's contacts count globally, not against the cards cap.
        await ledger.record_outside_contact(p, "sms", T0, "insurance", "k-1")
        d = await one(ledger, cand(p, "lapsed_revolver"), T0 + 1)
        assert outcome(d) == ("contact", ()) and d.details["global_7d"]["count"] == 1
        # The customer's profile unit applies to triggers without one of their own.
        d = await one_for(ledger, cand(p, "never_activated"), T0 + 2, "cards")
        assert outcome(d) == ("suppressed", ("business_unit_cap",))
        shown = await ledger.show(p, T0 + 3)
        assert shown["caps"]["business_units"]["cards"] == {
            "count_7d": 1, "count_30d": 1, "cap_7d": 1, "cap_30d": 2,
        }  # fmt: skip
        assert shown["caps"]["business_units"]["lifecycle"]["count_30d"] == 0
        history = {h["trigger"] or "outside": h["business_unit"] for h in shown["history"]}
        assert history == {"outside": "insurance", "lapsed_revolver": "cards",
                           "never_activated": "cards"}  # fmt: skip

    with_ledger(dev_stack, body, BU_POLICY)


def test_business_unit_caps_from_the_configuration() -> None:
    policy = Policy.from_config(
        build_config(
            {
                "policy": {
                    "business_unit": "retention",
                    "trigger_business_units": {"lapsed_revolver": "cards"},
                    "business_unit_caps": {"cards": {"per_30_days": 2}},
                }
            }
        )["policy"]
    )
    assert policy.business_unit_for("lapsed_revolver", "mortgages") == "cards"
    assert policy.business_unit_for("never_activated", "mortgages") == "mortgages"
    assert policy.business_unit_for("never_activated", None) == "retention"
    assert policy.business_unit_cap("cards", None) == BusinessUnitCap(None, 2)
    assert policy.business_unit_cap("cards", "high_affinity") == BusinessUnitCap(None, 4)
    assert policy.business_unit_cap("retention", None) is None
    with pytest.raises(ConfigError, match=r"policy.business_unit_caps.cards: give per_7_days"):
        build_config({"policy": {"business_unit_caps": {"cards": {}}}})
    with pytest.raises(ConfigError, match=r"policy.trigger_business_units.nope: unknown key"):
        build_config({"policy": {"trigger_business_units": {"nope": "cards"}}})


async def one_for(
    ledger: ContactLedger, c: Candidate, now: int, business_unit: str, segment: str | None = None
) -> Decision:
    (decision,) = await ledger.decide([c], now, segment, business_unit)
    return decision


# -- idempotency, outside contacts, keys ------------------------------------------------------


def test_repeated_decision_id_returns_first_result_and_changes_nothing(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        first = await one(ledger, cand(c, "a", "occ-1"), T0)
        assert first.outcome == "contact"
        before = await ledger.show(c, T0 + 1)
        # Replayed later, after the rules would say otherwise: the first outcome comes back.
        await ledger.record_consent(c, "email", "opted_out", T0 + 1)
        again = await one(ledger, cand(c, "a", "occ-1"), T0 + 2 * DAY)
        assert again == first  # same outcome, reasons, channel, details and decided_at
        after = await ledger.show(c, T0 + 1)
        assert after["caps"] == before["caps"]
        assert after["non_responder"]["unanswered"] == 1
        assert len(after["history"]) == 1
        # A suppressed one is stable too.
        s1 = await one(ledger, cand(c, "b", "occ-2"), T0 + 3 * DAY)
        await ledger.record_consent(c, "email", "opted_in", T0 + 4 * DAY)
        s2 = await one(ledger, cand(c, "b", "occ-2"), T0 + 5 * DAY)
        assert s1 == s2 and s1.reasons == ("opted_out",)

    with_ledger(dev_stack, body)


def test_outside_contacts_count_against_global_caps_once(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        assert await ledger.record_outside_contact(c, "direct_mail", T0, "insurance", "m-1")
        assert not await ledger.record_outside_contact(c, "direct_mail", T0, "insurance", "m-1")
        # The same contact id of another unit is another contact.
        assert await ledger.record_outside_contact(c, "phone", T0, "cards", "m-1")
        assert await ledger.record_outside_contact(
            c, "email", T0, "cards", "s-1", category="service"
        )
        d = await one(ledger, cand(c, "a"), T0 + 1)
        assert outcome(d) == ("suppressed", ("global_cap_7d",))
        assert d.details["global_7d"]["count"] == 2  # not 3 (idempotent), not 4 (service)
        shown = await ledger.show(c, T0 + 2)
        units = sorted((h["business_unit"], h["category"]) for h in shown["history"][:3])
        assert units == [("cards", "marketing"), ("cards", "service"), ("insurance", "marketing")]

    with_ledger(dev_stack, body)


def test_keys_share_a_hash_tag_and_expire(dev_stack: DevStack) -> None:
    policy = NO_HOLDOUT

    async def body(ledger: ContactLedger) -> None:
        c, quiet = new_id(), new_id()
        await one(ledger, cand(c, "a"), T0)
        await ledger.record_complaint(c, T0)
        client = ledger.client
        keys = ledger.keys(c)
        assert all(k.startswith(f"{ledger.namespace}:{{{c}}}:") for k in keys)
        for key in keys[:5]:
            ttl = await client.pttl(key)
            assert 0 < ttl <= policy.retention_ms, (key, ttl)
        # The state hash holds an unanswered streak: it must outlive the windows.
        assert await client.pttl(keys[5]) == -1
        # A state hash that holds nothing lasting (an opt-in) expires like the rest.
        await ledger.record_consent(quiet, "email", "opted_in", T0)
        assert 0 < await client.pttl(ledger.keys(quiet)[5]) <= policy.retention_ms
        await ledger.record_consent(quiet, "email", "opted_out", T0 + 1)
        assert await client.pttl(ledger.keys(quiet)[5]) == -1
        # History older than the retention is pruned on the next write.
        later = T0 + policy.retention_ms + 1
        await one(ledger, cand(c, "b"), later)
        ids = await client.zrange(keys[1], 0, -1)
        assert len(ids) == 1 and await client.hlen(keys[0]) == 1
        assert await client.zcard(keys[2]) == 1 and await client.zcard(keys[4]) == 0

    with_ledger(dev_stack, body, policy)


def test_show_and_cli(dev_stack: DevStack, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    namespace = new_id("ns")
    c = new_id()
    parser = argparse.ArgumentParser()
    add_ledger_commands(parser.add_subparsers(dest="command"))
    common = ["--redis-url", dev_stack.redis_url, "--namespace", namespace]
    args = parser.parse_args([
        "ledger", "record-contact", c, "--channel", "email", "--business-unit", "cards",
        "--contact-id", "k-1", "--at", "2026-03-01T09:30:00Z", *common,
    ])  # fmt: skip
    assert run_ledger_command(args) == 0
    assert run_ledger_command(args) == 0
    out = capsys.readouterr().out
    assert "recorded" in out and "already recorded" in out
    show = ["ledger", "show", c, "--at", "2026-03-02T09:30:00Z", *common]
    assert run_ledger_command(parser.parse_args(show)) == 0
    out = capsys.readouterr().out
    assert "global 7 days:  1/2" in out and "outside:cards" in out
    assert "back-off: inactive (1 unanswered" in out
    assert run_ledger_command(parser.parse_args([*show, "--json"])) == 0
    assert '"global_7d"' in capsys.readouterr().out
    down = ["ledger", "show", c, "--redis-url", f"redis://127.0.0.1:{free_port()}/0"]
    assert run_ledger_command(parser.parse_args(down)) == 1
    assert "cannot be reached" in capsys.readouterr().err
    bad = ["ledger", "show", c, "--at", "yesterday", *common]
    assert run_ledger_command(parser.parse_args(bad)) == 2


# -- Redis trouble ----------------------------------------------------------------------------


def test_unreachable_redis_raises_ledger_unavailable() -> None:
    async def body() -> None:
        url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
        async with ContactLedger(url, NO_HOLDOUT, timeout=1.0) as ledger:
            with pytest.raises(LedgerUnavailable) as err:
                await ledger.decide([cand(new_id(), "a")], T0)
            assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)

    run(body())


def test_wrong_password_is_a_clear_message_without_the_password(dev_stack: DevStack) -> None:
    user = new_id("ledger-user")
    assert dev_stack.redis is not None
    host = f"127.0.0.1:{dev_stack.redis.port}"

    async def body() -> None:
        admin = aioredis.from_url(dev_stack.redis_url)
        await admin.execute_command("ACL", "SETUSER", user, "on", ">right-pw", "~*", "+@all")
        try:
            async with ContactLedger(f"redis://{user}:wrong-pw@{host}/0", NO_HOLDOUT) as bad:
                with pytest.raises(LedgerUnavailable) as err:
                    await bad.decide([cand(new_id(), "a")], T0)
            message = str(err.value)
            assert "credentials" in message and "wrong-pw" not in message
            assert "***" in message
            # The right password, as an ACL user in the URL, works.
            async with ContactLedger(f"redis://{user}:right-pw@{host}/0", NO_HOLDOUT) as good:
                assert (await good.decide([cand(new_id(), "a")], T0))[0].outcome == "contact"
        finally:
            await admin.execute_command("ACL", "DELUSER", user)
            await admin.aclose()

    run(body())


def test_script_is_reloaded_after_noscript(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        await ledger.client.script_flush()
        assert await ledger.client.script_exists(SCRIPT_SHA) == [False]
        assert (await one(ledger, cand(c, "a"), T0)).outcome == "contact"
        assert await ledger.client.script_exists(SCRIPT_SHA) == [True]

    with_ledger(dev_stack, body)


def test_calls_issued_together_share_pipelines_and_decide_as_one_by_one(
    dev_stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Per customer: engagement, then candidates that meet the global cap and a cooldown.
    customers = [new_id() for _ in range(40)]

    async def customer_calls(ledger: ContactLedger, c: str) -> list[tuple[str, tuple[str, ...]]]:
        got = []
        await ledger.record_engagement(c, "email", "opened", T0 - DAY, None)
        for k, trigger in enumerate(("a", "b", "a", "c")):
            d = await one(ledger, cand(c, trigger, str(k)), T0 + k * HOUR)
            got.append((d.outcome, d.reasons))
        return got

    pipelines: list[int] = []

    async def body() -> None:
        async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, new_id("ns")) as alone:
            expected = [await customer_calls(alone, c) for c in customers]
        async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, new_id("ns")) as together:
            batched = together._batched
            assert batched is not None
            exchange = batched._exchange

            async def counted(calls: list[Any]) -> list[Any]:
                pipelines.append(len(calls))
                return await exchange(calls)

            monkeypatch.setattr(batched, "_exchange", counted)
            await together.client.script_flush()  # NOSCRIPT inside pipelines, reloaded
            got = await asyncio.gather(*(customer_calls(together, c) for c in customers))
        assert got == expected
        assert max(pipelines) > 1  # calls of different customers did share round trips
        assert sum(pipelines) >= len(customers) * 5

    run(body())


def test_pipelined_calls_answer_as_redis_py_does(
    dev_stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline is written and read on a pooled connection directly: every call gets the
    answer (and leaves the state) that redis-py's own Pipeline gives, error replies included."""
    rng = random.Random(5)
    customers = [new_id() for _ in range(30)]
    script: list[tuple[str, int, int]] = [  # (customer, kind, step) in a fixed random order
        (c, rng.randrange(5), step) for step in range(6) for c in customers
    ]

    async def call(ledger: ContactLedger, c: str, kind: int, step: int) -> Any:
        at = T0 + step * HOUR
        if kind == 0:
            await ledger.record_engagement(c, "email", "opened", at, None)
            return "engaged"
        if kind == 1:
            await ledger.record_consent(c, rng_channel(c, step), "opted_out", at)
            return "consent"
        if kind == 2:
            await ledger.record_complaint(c, at)
            return "complaint"
        if kind == 3:
            return await ledger.record_outside_contact(c, "sms", at, "retail", f"o{step}")
        (d,) = await ledger.decide([cand(c, f"t{step % 3}", str(step), rng_channel(c, step))], at)
        return (d.decision_id, d.outcome, d.reasons, d.channel, d.decided_at_ms, d.details)

    async def run_all(ledger: ContactLedger) -> tuple[list[Any], dict[str, Any]]:
        await ledger.client.script_flush()  # the first calls meet NOSCRIPT inside a pipeline
        got: list[Any] = []
        for step in range(6):
            got += await asyncio.gather(*(call(ledger, c, k, s) for c, k, s in script if s == step))
        shown = {c: await ledger.show(c, T0 + 7 * HOUR) for c in customers}
        return got, shown

    async def by_redis_py(self: Any, calls: list[tuple[list[str], Any]]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))

    async def body() -> None:
        async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, new_id("ns")) as ours:
            got, shown = await run_all(ours)
        with monkeypatch.context() as patched:
            patched.setattr(Pipeliner, "_exchange", by_redis_py)
            async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, new_id("ns")) as theirs:
                expected, expected_shown = await run_all(theirs)
        assert got == expected
        assert shown == expected_shown
        outcomes = {g[1] for g in got if isinstance(g, tuple)}
        assert {"contact", "suppressed"} <= outcomes  # the mix exercised the policy

    asyncio.run(body())


def rng_channel(customer: str, step: int) -> str:
    return ("email", "push", "sms")[(len(customer) + step) % 3]


def test_a_stalled_redis_times_out_and_never_mixes_up_replies(tmp_path: Path) -> None:
    """Redis stops answering mid-pipeline (SIGSTOP): the calls fail as LedgerUnavailable after
    the timeout and the client's retries, and the connection they were read on is never used
    again, so once Redis answers again no call gets a reply meant for another."""
    server = RedisServer(tmp_path)
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    capped = new_id()
    fresh = [new_id() for _ in range(5)]
    later = [new_id() for _ in range(5)]

    async def body() -> None:
        async with ContactLedger(server.url, NO_HOLDOUT, "ns", timeout=0.3) as ledger:
            # The capped customer meets the global 7-day cap (2) with two contacts.
            assert (await one(ledger, cand(capped, "a"), T0)).outcome == "contact"
            assert (await one(ledger, cand(capped, "b"), T0 + HOUR)).outcome == "contact"
            os.kill(pid, signal.SIGSTOP)
            try:
                stalled = await asyncio.gather(
                    *(one(ledger, cand(c, "a"), T0) for c in fresh), return_exceptions=True
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            assert all(isinstance(o, LedgerUnavailable) for o in stalled), stalled
            # Retried and new calls together: each gets its own answer.
            decided = await asyncio.gather(
                one(ledger, cand(capped, "c"), T0 + 2 * HOUR),
                *(one(ledger, cand(c, "a"), T0) for c in fresh),
                *(one(ledger, cand(c, "b", channel="push"), T0) for c in later),
            )
        assert decided[0].outcome == "suppressed"
        assert "global_cap_7d" in decided[0].reasons
        chosen = [(d.outcome, d.channel or d.candidate.channel) for d in decided[1:]]
        assert chosen == [("contact", "email")] * 5 + [("contact", "push")] * 5

    try:
        asyncio.run(body())
    finally:
        os.kill(pid, signal.SIGCONT)
        server.stop()


def test_a_failed_pipeline_fails_every_call_in_it() -> None:
    async def body() -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"
        async with ContactLedger(url, NO_HOLDOUT, timeout=1.0) as ledger:
            outcomes = await asyncio.gather(
                *(ledger.decide([cand(new_id(), "a")], T0) for _ in range(5)),
                return_exceptions=True,
            )
        assert all(isinstance(o, LedgerUnavailable) for o in outcomes), outcomes

    run(body())


def test_wait_for_replicas_shortfall_is_unavailable_and_retry_safe(dev_stack: DevStack) -> None:
    async def body(ledger: ContactLedger) -> None:
        c = new_id()
        # The session's Redis has no replica: WAIT 1 times out with 0 acknowledgements.
        with pytest.raises(LedgerUnavailable, match="0 of 1 replicas"):
            await one(ledger, cand(c, "a"), T0)
        with pytest.raises(LedgerUnavailable):
            await one(ledger, cand(c, "a"), T0 + 5)
        shown = await ledger.show(c, T0 + 10)
        assert shown["caps"]["global_7d"]["count"] == 1  # recorded once, on the primary

    with_ledger(dev_stack, body, wait_replicas=1, wait_timeout_ms=20)


def test_concurrent_clients_never_exceed_caps_and_count_each_id_once(dev_stack: DevStack) -> None:
    namespace = new_id("ns")
    customers = [new_id() for _ in range(15)]
    rng = random.Random(7)
    # Per customer: 8 marketing candidates (4 triggers x 2 occurrences) on email and push.
    per_customer = {
        c: [cand(c, f"t{k % 4}", f"o{k // 4}", channel=("email", "push")[k % 2]) for k in range(8)]
        for c in customers
    }

    async def client_run(seed: int) -> dict[str, Decision]:
        local = random.Random(seed)
        got: dict[str, Decision] = {}
        async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, namespace) as ledger:
            order = customers[:]
            local.shuffle(order)
            for c in order:
                cands = per_customer[c][:]
                local.shuffle(cands)
                # Single candidates, racing: each client sees whatever the others recorded.
                # One moment for all: windows assume a customer's clock does not run backwards.
                for cd in cands:
                    d = await one(ledger, cd, T0)
                    got[d.decision_id] = d
        return got

    async def main() -> None:
        results = await asyncio.gather(*(client_run(rng.randrange(10**9)) for _ in range(8)))
        by_id: dict[str, set[tuple[str, tuple[str, ...], int]]] = {}
        for result in results:
            for did, d in result.items():
                by_id.setdefault(did, set()).add((d.outcome, d.reasons, d.decided_at_ms))
        # Every client saw the first result of every id.
        assert all(len(v) == 1 for v in by_id.values())
        async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, namespace) as ledger:
            for c in customers:
                contacted = {
                    cd.decision_id
                    for cd in per_customer[c]
                    if next(iter(by_id[cd.decision_id]))[0] == "contact"
                }
                members = await ledger.client.zrange(ledger.keys(c)[2], 0, -1)
                ids = [m.decode().split("|", 1)[1] for m in members]
                assert sorted(ids) == sorted(contacted)  # each contact counted once
                assert len(ids) == 2  # the global cap of 2 in 7 days, exactly

    asyncio.run(main())


def test_outage_mid_stream_fails_closed_and_resumes(
    dev_stack: DevStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops mid-stream and comes back (with its data, like a persistent production
    Redis): nothing is published while it is down, every decision is published exactly once,
    with the outcome an undisturbed run gives, and the script is loaded again by itself."""
    server = dev_stack.redis
    assert server is not None
    port = server.port
    rng = random.Random(11)
    customers = [new_id() for _ in range(3)]
    batches: list[tuple[int, list[Candidate]]] = []
    for step in range(30):
        c = customers[step % 3]
        batch = [
            cand(c, rng.choice(["t1", "t2", "t3", "t4"]), f"s{step}-{k}",
                 channel=rng.choice(["email", "push", "sms"]))
            for k in range(rng.randint(1, 3))
        ]  # fmt: skip
        batches.append((T0 + step * DAY // 2, batch))

    async def reference() -> dict[str, tuple[str, tuple[str, ...], str]]:
        async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, new_id("ns")) as ledger:
            out = {}
            for now, batch in batches:
                for d in await ledger.decide(batch, now):
                    out[d.decision_id] = (d.outcome, d.reasons, d.channel)
            return out

    expected = asyncio.run(reference())
    published: list[tuple[float, Decision]] = []
    down: dict[str, float] = {}
    failures = 0

    async def worker(ledger: ContactLedger) -> None:
        nonlocal failures
        for now, batch in batches:
            while True:
                try:
                    decided = await ledger.decide(batch, now)
                    break
                except LedgerUnavailable:
                    failures += 1  # fail closed: publish nothing, pause, retry the batch
                    await asyncio.sleep(0.05)
            published.extend((time.monotonic(), d) for d in decided)
            await asyncio.sleep(0.01)

    async def outage(ledger: ContactLedger) -> None:
        while len(published) < 12:
            await asyncio.sleep(0.005)
        # Saves on shutdown, as a production Redis with persistence would keep its data.
        await ledger.client.config_set("save", "3600 1")
        await asyncio.to_thread(server.stop)
        down["from"] = time.monotonic()
        await asyncio.sleep(1.0)
        down["until"] = time.monotonic()
        await asyncio.to_thread(server.start, port)

    async def main() -> None:
        async with ContactLedger(dev_stack.redis_url, NO_HOLDOUT, new_id("ns"), timeout=1) as lg:
            await asyncio.gather(worker(lg), outage(lg))

    caplog.set_level(logging.INFO, logger="streams.ledger")
    try:
        asyncio.run(main())
    finally:
        if not server.running:
            server.start(port=port)
        (Path(server.workdir) / "dump.rdb").unlink(missing_ok=True)

    assert failures > 0
    # The restarted server had no script cache: NOSCRIPT, then loaded again by the ledger.
    assert "ledger script not on" in caplog.text
    assert not [t for t, _ in published if down["from"] <= t <= down["until"]]
    ids = [d.decision_id for _, d in published]
    assert len(ids) == len(set(ids)) == len(expected)
    assert {d.decision_id: (d.outcome, d.reasons, d.channel) for _, d in published} == expected


# -- the property test against an independent model --------------------------------------------

MODEL_POLICY = dataclasses.replace(
    default_policy(),
    # The rules added after the model (sunset, bounces) are off: each has its own tests.
    sunset_after_unanswered=None,
    undeliverable=False,
    holdout_rate=0.25,
    non_responder_after=3,
    channel_fallbacks={"tf": ("push", "sms")},
    trigger_business_units={"tb": "cards"},
    business_unit_caps={
        "cards": BusinessUnitCap(per_7_days=1, per_30_days=3),
        "lifecycle": BusinessUnitCap(per_7_days=None, per_30_days=4),
    },
)
MODEL_TRIGGERS = ("ta", "tb", "tf")
MODEL_CHANNELS = ("email", "sms", "push", "phone")


@dataclasses.dataclass
class Model:
    """The contract's rules written plainly over lists, for comparison with the script."""

    policy: Policy
    customer: str
    # (decided at, channel, id, segment, business unit) of every marketing contact
    contacts: list[tuple[int, str, str, str | None, str]] = dataclasses.field(default_factory=list)
    marks: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    complaints: list[int] = dataclasses.field(default_factory=list)
    consents: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    engaged_at: int = -1
    decided: dict[str, tuple[int, tuple[str, tuple[str, ...], str]]] = dataclasses.field(
        default_factory=dict
    )

    def prune(self, now: int) -> None:
        horizon = now - self.policy.retention_ms
        self.decided = {k: v for k, v in self.decided.items() if v[0] >= horizon}

    def count(
        self, now: int, window: int, channel: str | None = None, unit: str | None = None
    ) -> int:
        return sum(
            1
            for at, ch, _, _, bu in self.contacts
            if now - window < at <= now
            and (channel is None or ch == channel)
            and (unit is None or bu == unit)
        )

    def opted_out(self, channel: str) -> bool:
        own, every = self.consents.get(channel), self.consents.get("all")
        if own is None and every is None:
            return False
        if every is None or (own is not None and own[0] > every[0]):
            return own is not None and own[1] == "out"
        if own is None or every[0] > own[0]:
            return every[1] == "out"
        return "out" in (own[1], every[1])

    def decide(
        self, c: Candidate, now: int, segment: str | None, unit: str | None = None
    ) -> tuple[str, tuple, str]:
        if c.decision_id in self.decided:
            return self.decided[c.decision_id][1]
        self.prune(now)
        result = self._decide(c, now, segment, unit)
        self.decided[c.decision_id] = (now, result)
        return result

    def _decide(
        self, c: Candidate, now: int, segment: str | None, customer_unit: str | None
    ) -> tuple[str, tuple, str]:
        p = self.policy
        if c.category == "service":
            return ("contact", (), c.channel)
        caps = p.caps_for(segment)
        channels = [
            c.channel,
            *[x for x in p.channel_fallbacks.get(c.trigger, ()) if x != c.channel],
        ]
        complained = any(now - p.complaint_quiet_ms < at <= now for at in self.complaints)
        cooled = any(t == c.trigger and now - p.cooldown_ms < at <= now for at, t in self.marks)
        open_channels = [ch for ch in channels if not self.opted_out(ch)]
        held = p.is_holdout(self.customer, c.trigger) or p.in_global_control(self.customer)
        if held and not complained and open_channels and not cooled:
            self.marks.append((now, c.trigger))
            return ("holdout", (), open_channels[0])
        unanswered = sum(1 for at, _, _, _, _ in self.contacts if at > self.engaged_at)
        common = set()
        if self.count(now, 7 * DAY) >= caps.global_7d:
            common.add("global_cap_7d")
        if self.count(now, 30 * DAY) >= caps.global_30d:
            common.add("global_cap_30d")
        unit = p.trigger_business_units.get(c.trigger) or customer_unit or p.business_unit
        unit_cap = p.business_unit_caps.get(unit)
        m = p.multiplier(segment)
        if unit_cap is not None and (
            (
                unit_cap.per_7_days is not None
                and self.count(now, 7 * DAY, unit=unit) >= unit_cap.per_7_days * m
            )
            or (
                unit_cap.per_30_days is not None
                and self.count(now, 30 * DAY, unit=unit) >= unit_cap.per_30_days * m
            )
        ):
            common.add("business_unit_cap")
        if cooled:
            common.add("trigger_cooldown")
        if unanswered >= p.non_responder_after and (
            self.count(now, p.non_responder_window_ms) >= p.non_responder_max_contacts
        ):
            common.add("non_responder_backoff")
        if complained:
            common.add("recent_complaint")
        every = set(common)
        for ch in channels:
            own = set()
            cap = caps.channels[ch]
            if self.count(now, cap.window_ms, ch) >= cap.max:
                own.add("channel_cap")
            if self.opted_out(ch):
                own.add("opted_out")
            if not common and not own:
                self.contacts.append((now, ch, c.decision_id, segment, unit))
                self.marks.append((now, c.trigger))
                return ("contact", (), ch)
            every |= own
        return ("suppressed", tuple(sorted(every, key=REASON_CODES.index)), c.channel)


_advance = st.tuples(
    st.just("advance"), st.sampled_from([0, 1, HOUR, DAY, 2 * DAY, 3 * DAY, 7 * DAY, 14 * DAY])
)
_decide = st.tuples(
    st.just("decide"),
    st.lists(
        st.tuples(
            st.sampled_from(MODEL_TRIGGERS),
            st.integers(0, 4),
            st.sampled_from(MODEL_CHANNELS),
            st.sampled_from(["marketing"] * 5 + ["service"]),
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([None, None, "high_affinity"]),
    st.sampled_from([None, None, "cards"]),  # the customer's business unit (profile)
)
_other = {
    "engage": st.tuples(
        st.just("engage"),
        st.sampled_from(["opened", "delivered", "unsubscribed"]),
        st.sampled_from(MODEL_CHANNELS),
    ),
    "complaint": st.tuples(st.just("complaint")),
    "consent": st.tuples(
        st.just("consent"),
        st.sampled_from([*MODEL_CHANNELS, "all"]),
        st.sampled_from(["opted_in", "opted_in", "opted_out"]),
    ),
    "outside": st.tuples(
        st.just("outside"),
        st.sampled_from(MODEL_CHANNELS),
        st.integers(0, 3),
        st.sampled_from(["marketing", "service"]),
        st.sampled_from(["bu", "cards", "lifecycle"]),
    ),
}
# Weighted towards decisions and time: opt-outs and complaints stop everything, so they are
# rarer, and opt-ins come more often than opt-outs.
_STEPS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "advance": _advance,
    "decide": _decide,
    **_other,
}
steps = st.sampled_from(
    ["advance"] * 3 + ["decide"] * 6 + ["engage", "consent", "outside"] * 2 + ["complaint"]
).flatmap(_STEPS.__getitem__)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(steps, min_size=10, max_size=60))
def test_script_matches_the_model_and_never_exceeds_a_cap(
    dev_stack: DevStack, program: list[tuple[Any, ...]]
) -> None:
    run_program(dev_stack, program, MODEL_POLICY, new_id())


GLOBAL_CONTROL_POLICY = dataclasses.replace(MODEL_POLICY, global_control_rate=0.5)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(steps, min_size=10, max_size=60))
def test_a_global_control_customer_is_held_out_by_the_holdout_rule(
    dev_stack: DevStack, program: list[tuple[Any, ...]]
) -> None:
    # Every marketing candidate of the customer is a holdout candidate: the model holds it out
    # among those passing opt-out, complaint and cooldown, and every holdout is marked.
    customer = next(c for c in iter(new_id, None) if GLOBAL_CONTROL_POLICY.in_global_control(c))
    run_program(dev_stack, program, GLOBAL_CONTROL_POLICY, customer)


def run_program(
    dev_stack: DevStack, program: list[tuple[Any, ...]], policy: Policy, customer: str
) -> None:
    """Run a program of ledger calls for one customer and check every decision against the
    model, and the recorded contacts against the caps."""
    model = Model(policy, customer)
    control = policy.in_global_control(customer)

    async def body(ledger: ContactLedger) -> None:
        now = T0
        for step in program:
            kind = step[0]
            if kind == "advance":
                now += step[1]
            elif kind == "decide":
                cands = [
                    cand(customer, trig, f"i{inst}", channel=ch, category=cat, priority=len(trig))
                    for trig, inst, ch, cat in step[1]
                ]
                got = await ledger.decide(cands, now, step[2], step[3])
                want = [model.decide(c, now, step[2], step[3]) for c in Policy.order(cands)]
                assert [(d.outcome, d.reasons, d.channel) for d in got] == want, step
                assert [d.global_control for d in got] == [
                    control and d.outcome == "holdout" for d in got
                ]
            elif kind == "engage":
                model.prune(now)
                await ledger.record_engagement(customer, step[2], step[1], now)
                if step[1] == "opened":
                    model.engaged_at = max(model.engaged_at, now)
                elif step[1] == "unsubscribed":
                    _consent(model, step[2], "out", now)
            elif kind == "complaint":
                model.prune(now)
                await ledger.record_complaint(customer, now)
                model.complaints.append(now)
            elif kind == "consent":
                model.prune(now)
                await ledger.record_consent(customer, step[1], step[2], now)
                _consent(model, step[1], "out" if step[2] == "opted_out" else "in", now)
            elif kind == "outside":
                key = f"x:{step[4]}:o{step[2]}"
                new = await ledger.record_outside_contact(
                    customer, step[1], now, step[4], f"o{step[2]}", step[3]
                )
                assert new == (key not in model.decided)
                if new:
                    model.prune(now)
                    model.decided[key] = (now, ("contact", (), step[1]))
                    if step[3] == "marketing":
                        model.contacts.append((now, step[1], key, None, step[4]))
        # What Redis recorded is what the model recorded ...
        members = await ledger.client.zrange(ledger.keys(customer)[2], 0, -1, withscores=True)
        # (History older than the retention may already be pruned: compare what must remain.)
        kept = now - policy.retention_ms
        recorded = sorted((int(at), m.decode().split("|", 1)[0]) for m, at in members)
        assert [r for r in recorded if r[0] >= kept] == sorted(
            (at, ch) for at, ch, _, _, _ in model.contacts if at >= kept
        )
        # ... and no contact the ledger made broke a rolling window of the caps in force when
        # it was made (the segment can differ per decision). Outside contacts are facts.
        for i, (at, ch, did, segment, unit) in enumerate(model.contacts):
            if did.startswith("x:"):
                continue
            caps = policy.caps_for(segment)
            before = model.contacts[: i + 1]
            assert sum(1 for t, *_ in before if at - 7 * DAY < t <= at) <= caps.global_7d
            assert sum(1 for t, *_ in before if at - 30 * DAY < t <= at) <= caps.global_30d
            cap = caps.channels[ch]
            in_channel = [t for t, c, *_ in before if c == ch and at - cap.window_ms < t <= at]
            assert len(in_channel) <= cap.max
            unit_cap = policy.business_unit_cap(unit, segment)
            assert unit_cap is not None  # both units of the model's triggers have caps
            of_unit = [t for t, _, _, _, u in before if u == unit]
            for window, limit in ((7 * DAY, unit_cap.per_7_days), (30 * DAY, unit_cap.per_30_days)):
                if limit is not None:
                    assert sum(1 for t in of_unit if at - window < t <= at) <= limit

    with_ledger(dev_stack, body, policy)


def _consent(model: Model, scope: str, status: str, at: int) -> None:
    old = model.consents.get(scope)
    if old is None or at >= old[0]:
        model.consents[scope] = (at, status)


def test_model_agrees_with_a_hand_worked_example() -> None:
    # Sanity check of the test's own model against a hand-worked example.
    m = Model(NO_HOLDOUT, "c")
    assert m.decide(cand("c", "a"), T0, None) == ("contact", (), "email")
    assert m.decide(cand("c", "b"), T0, None) == ("contact", (), "email")
    assert m.decide(cand("c", "x", channel="push"), T0, None) == (
        "suppressed",
        ("global_cap_7d",),
        "push",
    )
    # The business unit caps of the property test's policy: cards 1 in 7 days (2 for
    # high_affinity), for trigger tb and for any trigger of a customer of the cards unit.
    m = Model(dataclasses.replace(MODEL_POLICY, holdout_rate=0.0), "c")
    assert m.decide(cand("c", "tb", "1"), T0, None) == ("contact", (), "email")
    assert m.decide(cand("c", "ta", "1"), T0 + 1, None, "cards") == (
        "suppressed",
        ("business_unit_cap",),
        "email",
    )
    assert m.decide(cand("c", "ta", "2"), T0 + 2, "high_affinity", "cards") == (
        "contact",
        (),
        "email",
    )
    # Both count globally: a third contact in 7 days is over the global cap, not a unit cap.
    assert m.decide(cand("c", "tf", "1"), T0 + 3, None)[:2] == (
        "suppressed",
        ("global_cap_7d", "channel_cap"),  # email is at its cap too
    )
