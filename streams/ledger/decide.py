"""The decide API: ``ContactLedger`` runs ``ledger.lua`` for one customer per call.

One Lua script (``ledger.lua``, run with EVALSHA and loaded again after NOSCRIPT) decides one
candidate against the customer's contact history and records the outcome in the same atomic
step: one round trip per candidate. The decision id is stored with its first result, so a
repeated id returns that result and changes nothing (at-least-once in, effectively-once out).
When Redis cannot be reached, every call raises ``LedgerUnavailable`` and nothing is decided:
the caller pauses, retries later with the same candidates, and gets the same outcomes (fail
closed).

Readings of the contract that the script makes (and the tests pin down):

- Windows are (t - w, t] on ``decided_at``; they assume one customer's clock does not run
  backwards (a customer lives in one partition, and stream time per partition only grows).
- Holdout: a marketing candidate that passes the opt-out, complaint and trigger-cooldown rules
  and whose (customer, trigger) hash falls under ``holdout_rate`` is held out, whatever the
  caps say (a holdout is not a contact). Since holdouts count toward the cooldown, a held-out
  customer gets one holdout per cooldown, as a contacted one gets one contact.
- Global control group: a marketing candidate of a customer whose hash falls under
  ``global_control_rate`` (``Policy.in_global_control``, whatever the trigger) is held out by
  the same rule, and the ledger stores the mark ``global_control`` with its first result, so
  that a replay returns it even if the rate has changed since.
- Outside marketing contacts count like ours: global and channel caps, back-off window and the
  unanswered streak (the customer sees one company). Outside service contacts are recorded only.
- Channel fallbacks (``Policy.channel_fallbacks``): when only channel rules (``channel_cap``,
  ``opted_out``) stop the candidate's own channel, the first fallback that passes is used and
  ``Decision.channel`` names it; otherwise the reasons of every channel tried are reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from importlib import resources
from types import TracebackType
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster

from streams.core.decisions import Arm, Candidate, Decision
from streams.core.errors import ConfigError
from streams.core.events import CHANNELS, CONSENT_CHANNELS, ENGAGEMENT_ACTIONS
from streams.core.policy import (
    MARKETING,
    RETENTION_MARGIN_MS,
    SERVICE,
    Policy,
    check_business_unit,
    sort_reasons,
)
from streams.core.timeutil import MS_PER_DAY
from streams.ledger import view
from streams.ledger.keys import (
    capacity_key,
    capacity_share,
    check_namespace,
    keys_for,
    outside_contact_id,
    prepare_slot_tags,
    slot_of,
)
from streams.ledger.pipeline import Pipeliner
from streams.ledger.redis_url import mask
from streams.ledger.topology import (
    LedgerClient,
    LedgerUnavailable,
    connect,
    describe_client,
    guarded,
)

log = logging.getLogger(__name__)

SCRIPT = resources.files("streams.ledger").joinpath("ledger.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
CONSENT_STATUSES = {"opted_in": "in", "opted_out": "out"}
# A day's capacity counter is read while decisions of that day are made: the day, and the
# lateness a replayed stream may have.
CAPACITY_EXPIRY_MS = MS_PER_DAY + RETENTION_MARGIN_MS

T = TypeVar("T")


class ContactLedger:
    """The shared contact ledger of one namespace (``lt`` in production; a back-test or a test
    uses its own so that it never touches real history).

    ``redis`` is a URL (``redis://``, ``rediss://`` for TLS, ``unix://``, ``redis+cluster://``,
    ``redis+sentinel://``; password and ACL user in the URL, see ``streams.ledger.redis_url``) or an
    existing ``redis.asyncio.Redis`` or ``RedisCluster`` client, which the ledger then does not
    close. ``wait_replicas`` > 0 makes every write wait for that many replicas (``WAIT``), so a
    failover cannot lose an acknowledged decision; a shortfall raises ``LedgerUnavailable``
    (the decision is recorded on the primary, and a retry returns the same outcome).
    A malformed URL raises ``ConfigError``.
    """

    def __init__(
        self,
        redis: str | LedgerClient,
        policy: Policy,
        namespace: str = "lt",
        *,
        timeout: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1_000,
    ) -> None:
        check_namespace(namespace)
        self.policy = policy
        self.namespace = namespace
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._extra_clients: list[aioredis.Redis] = []
        if isinstance(redis, str):
            self._where = mask(redis)
            self.client, self._extra_clients = connect(redis, timeout)
            self._owns_client = True
        else:
            self._where = describe_client(redis)
            self.client = redis
            self._owns_client = False
        self.cluster = isinstance(self.client, RedisCluster)
        if self.cluster and policy.capacity:
            prepare_slot_tags()
        self._batched = (
            None if isinstance(self.client, RedisCluster) else Pipeliner(self.client, SCRIPT_SHA)
        )

    async def aclose(self) -> None:
        """Close the connections (only when the ledger created the client)."""
        if self._owns_client:
            await self.client.aclose()
            for extra in self._extra_clients:
                await extra.aclose()

    async def __aenter__(self) -> ContactLedger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plumbing --------------------------------------------------------------------------

    def keys(self, customer_id: str, business_unit: str | None = None) -> list[str]:
        """The customer's keys, in the order the script expects them; the last one counts the
        marketing contacts of ``business_unit`` (default: ``policy.business_unit``); see
        ``customer_keys``."""
        return keys_for(self.namespace, customer_id, business_unit or self.policy.business_unit)

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call; every way of not reaching Redis becomes ``LedgerUnavailable``."""
        return await guarded(call, self._where, self.client)

    async def _run(
        self,
        customer_id: str,
        args: Sequence[str | int],
        business_unit: str | None = None,
        extra_keys: Sequence[str] = (),
    ) -> Any:
        keys = [*self.keys(customer_id, business_unit), *extra_keys]

        async def call() -> Any:
            try:
                return await self._evalsha(keys, args)
            except rex.NoScriptError:
                # Redis restarted, failed over or flushed its script cache: load and retry once.
                log.info("ledger script not on %s; loading it", self._where)
                await self.client.script_load(SCRIPT)
                return await self._evalsha(keys, args)

        return await self._guard(call)

    async def _evalsha(self, keys: list[str], args: Sequence[str | int]) -> Any:
        if self.wait_replicas <= 0:
            if self._batched is not None:
                return await self._batched.evalsha(keys, args)
            return await self.client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        # The script and WAIT in one round trip, on one connection: WAIT counts the replicas
        # that have this connection's last write. On a cluster both go to the node owning
        # the customer's slot, without redirections (a moved slot is retried by the caller).
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()  # no-op once the slot map is known
            node = self.client.get_node_from_key(keys[0])
            async with self.client.pipeline(transaction=False) as cpipe:
                cpipe.execute_command(
                    "EVALSHA", SCRIPT_SHA, len(keys), *keys, *args, target_nodes=node
                )
                cpipe.execute_command(
                    "WAIT", self.wait_replicas, self.wait_timeout_ms, target_nodes=node
                )
                result, acked = await cpipe.execute(raise_on_error=False, allow_redirections=False)
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                result, acked = await pipe.execute(raise_on_error=False)
        if isinstance(result, Exception):
            raise result
        if isinstance(acked, Exception) or int(acked) < self.wait_replicas:
            raise LedgerUnavailable(
                f"{self._where}: {acked} of {self.wait_replicas} replicas acknowledged within "
                f"{self.wait_timeout_ms} ms; retry (the outcome will not change)"
            )
        return result

    def _base_args(self, op: str, at_ms: int) -> list[str | int]:
        return [op, int(at_ms), self.policy.retention_ms]

    async def ping(self) -> None:
        """Check that Redis answers and holds the script (e.g. for readiness), and that the
        ledger's user may read decisions back (``recall``; an ACL without HMGET is refused
        at start instead of when the first goal resolves)."""
        probe = self.keys("-")[0]

        async def call() -> None:
            await self.client.ping()
            await self.client.script_load(SCRIPT)
            await self.client.hmget(probe, ["-"])

        await self._guard(call)

    # -- decisions -------------------------------------------------------------------------

    async def decide(
        self,
        candidates: Sequence[Candidate],
        now_ms: int,
        segment: str | None = None,
        business_unit: str | None = None,
        skip_channels: Collection[str] = (),
    ) -> list[Decision]:
        """Decide candidates in priority order, each seeing the ones before it.

        One EVALSHA round trip per candidate; the result list is in decision order. A
        candidate whose decision id was decided before gets its first decision back, with its
        first ``decided_at``. Raises ``LedgerUnavailable`` (decisions made before the failure
        stay recorded; calling again with the same candidates returns them unchanged).

        ``business_unit`` is the customer's (profile); each decision is recorded for
        ``Policy.business_unit_for`` its trigger. Fallback channels in ``skip_channels`` (those
        in the customer's quiet hours) are not tried.
        """
        return [
            await self.decide_one(c, now_ms, segment, business_unit, skip_channels)
            for c in self.policy.order(candidates)
        ]

    async def decide_one(
        self,
        candidate: Candidate,
        now_ms: int,
        segment: str | None = None,
        business_unit: str | None = None,
        skip_channels: Collection[str] = (),
    ) -> Decision:
        """Decide and record one candidate (see ``decide``)."""
        policy = self.policy
        caps = policy.caps_for(segment)
        unit = policy.business_unit_for(candidate.trigger, business_unit)
        unit_cap = policy.business_unit_cap(unit, segment)
        if candidate.category == MARKETING:
            channels = policy.channels_for(candidate, skip_channels)
        elif candidate.category == SERVICE:
            channels = (candidate.channel,)
        else:
            raise ValueError(f"category must be marketing or service: {candidate.category!r}")
        for channel in channels:
            if channel not in caps.channels:
                raise ValueError(f"{candidate.trigger}: unknown channel {channel!r}")
        if "|" in candidate.trigger:  # the script counts a trigger's marks by "<trigger>|"
            raise ValueError(f"trigger name must not contain '|': {candidate.trigger!r}")
        args = self._base_args("decide", now_ms)
        args += [
            candidate.decision_id,
            candidate.category,
            candidate.trigger,
            _holdout_arg(policy, candidate),
            caps.global_7d,
            caps.global_30d,
            policy.cooldown_ms,
            policy.non_responder_after,
            policy.non_responder_max_contacts,
            policy.non_responder_window_ms,
            policy.complaint_quiet_ms,
            segment or "",
            policy.multiplier(segment),
            unit,
            _cap_arg(None if unit_cap is None else unit_cap.per_7_days),
            _cap_arg(None if unit_cap is None else unit_cap.per_30_days),
            len(channels),
        ]
        for channel in channels:
            cap = caps.channels[channel]
            args += [channel, cap.max, cap.window_ms]
        # The new rules' arguments come last: the script of the release before ignores them.
        args += [_cap_arg(policy.sunset_after_unanswered), _flag(policy.undeliverable)]
        extra_keys: list[str] = []
        per_day = policy.capacity.get(candidate.action) if candidate.category == MARKETING else None
        if per_day is not None:
            day = policy.capacity_day(now_ms)
            if self.cluster:
                slot = slot_of(self.keys(candidate.customer_id)[0])
                limit = capacity_share(per_day, slot, candidate.action, day)
            else:
                slot, limit = None, per_day
            extra_keys.append(capacity_key(self.namespace, candidate.action, day, slot))
            args += [limit, CAPACITY_EXPIRY_MS]
        raw = await self._run(candidate.customer_id, args, unit, extra_keys)
        result = json.loads(raw)
        return Decision(
            candidate=candidate,
            outcome=result["o"],
            reasons=sort_reasons(r for r in result["r"].split(",") if r),
            decided_at_ms=int(result["t"]),
            channel=result["c"],
            details=_details(result.get("d")),
        )

    async def recall(self, customer_id: str, decision_ids: Sequence[str]) -> dict[str, Arm]:
        """What was decided for each of ``decision_ids`` (one HMGET of the customer's decision
        hash; ids it no longer holds are left out). Raises ``LedgerUnavailable``."""
        if not decision_ids:
            return {}
        key = self.keys(customer_id)[0]
        ids = list(decision_ids)

        async def call() -> Any:
            return await self.client.hmget(key, ids)

        found: dict[str, Arm] = {}
        for decision, raw in zip(ids, await self._guard(call), strict=True):
            if raw is None:
                continue
            result = json.loads(raw)
            details = _details(result.get("d"))
            outcome = result["o"]
            found[decision] = Arm(
                outcome,
                result["c"],
                outcome == "holdout" and details.get("global_control") is True,
                int(result["t"]),
            )
        return found

    # -- what else the ledger hears ----------------------------------------------------------

    async def record_engagement(
        self,
        customer_id: str,
        channel: str,
        action: str,
        at_ms: int,
        decision_id: str | None = None,
    ) -> None:
        """An engagement event: opened/clicked/converted end the unanswered streak (back-off),
        and that channel's unanswered count (sunset); unsubscribed opts the channel out;
        bounced makes the channel undeliverable until a later delivered, opened or clicked
        (with ``Policy.undeliverable``; else delivered and bounced change nothing)."""
        if action not in ENGAGEMENT_ACTIONS:
            raise ValueError(f"action must be one of {ENGAGEMENT_ACTIONS}: {action!r}")
        _check_channel(channel, CHANNELS)
        args = [
            *self._base_args("engage", at_ms),
            channel,
            action,
            decision_id or "",
            _flag(self.policy.sunset_after_unanswered is not None),
            _flag(self.policy.undeliverable),
        ]
        await self._run(customer_id, args)

    async def record_consent(self, customer_id: str, channel: str, status: str, at_ms: int) -> None:
        """A consent event for a channel or ``all``; the latest one (by event time) wins."""
        _check_channel(channel, CONSENT_CHANNELS)
        if status not in CONSENT_STATUSES:
            raise ValueError(f"status must be opted_in or opted_out: {status!r}")
        args = [*self._base_args("consent", at_ms), channel, CONSENT_STATUSES[status]]
        await self._run(customer_id, args)

    async def record_complaint(self, customer_id: str, at_ms: int) -> None:
        """A complaint: no marketing contact for ``complaint_quiet_days`` after it."""
        await self._run(customer_id, self._base_args("complaint", at_ms))

    async def record_outside_contact(
        self,
        customer_id: str,
        channel: str,
        at_ms: int,
        business_unit: str,
        contact_id: str,
        category: str = MARKETING,
    ) -> bool:
        """A contact another business unit made: marketing ones count against the global caps
        (and the channel caps and back-off, since the customer sees one company).

        Idempotent by (business_unit, contact_id); returns False when it was already recorded.
        """
        _check_channel(channel, CHANNELS)
        if category not in (MARKETING, SERVICE):
            raise ValueError(f"category must be marketing or service: {category!r}")
        if not business_unit or not contact_id:
            raise ValueError("business_unit and contact_id must not be empty")
        try:
            check_business_unit("business_unit", business_unit)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        key = outside_contact_id(business_unit, contact_id)
        args = [
            *self._base_args("outside", at_ms),
            key,
            channel,
            category,
            business_unit,
            _flag(self.policy.sunset_after_unanswered is not None),
        ]
        return bool(await self._run(customer_id, args, business_unit))

    # -- reading -----------------------------------------------------------------------------

    async def show(
        self, customer_id: str, now_ms: int, segment: str | None = None
    ) -> dict[str, Any]:
        """What the ledger knows of a customer at ``now_ms``: contact history, the caps in
        force with their current counts, back-off state, opt-outs and complaint quiet (see
        ``streams.ledger.view``)."""
        units = sorted({self.policy.business_unit, *self.policy.business_unit_caps})
        keys = self.keys(customer_id)
        unit_keys = [self.keys(customer_id, unit)[-1] for unit in units]
        raw = await self._guard(lambda: view.read(self.client, keys, unit_keys))
        history_ids, records, contacts, marks, complaints, state, *by_unit = raw
        return view.summary(
            self.policy,
            segment,
            now_ms,
            history_ids,
            records,
            contacts,
            marks,
            complaints,
            state,
            dict(zip(units, by_unit, strict=True)),
        )


def _holdout_arg(policy: Policy, candidate: Candidate) -> str:
    """The script's holdout argument: "2" for a marketing candidate of a customer in the
    global control group (held out like "1", and marked), else "1" when the customer is in the
    trigger's holdout group, else "0". Without a global control group the argument is the one
    the releases before sent."""
    if candidate.category == MARKETING and policy.in_global_control(candidate.customer_id):
        return "2"
    return "1" if policy.is_holdout(candidate.customer_id, candidate.trigger) else "0"


def _cap_arg(cap: int | None) -> int:
    return -1 if cap is None else cap


def _flag(on: bool) -> str:
    return "1" if on else "0"


def _check_channel(channel: str, allowed: Sequence[str]) -> None:
    if channel not in allowed:
        raise ValueError(f"channel must be one of {', '.join(allowed)}: {channel!r}")


def _details(raw: Any) -> dict[str, Any]:
    # cjson encodes an empty table as {}; keep whatever the script reported otherwise.
    return dict(raw) if isinstance(raw, dict) else {}
