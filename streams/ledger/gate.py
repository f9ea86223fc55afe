"""The contact ledger in front of publishing, failing closed.

No decision is published without the ledger: when Redis cannot be reached, the call is retried
with backoff for as long as it takes, which holds the stream (no offset moves past an undecided
event), and the outage is logged and counted. Ledger calls are idempotent (a decision id
returns its first outcome), so a retry after a half-done call is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from streams.core import events as ev
from streams.core.decisions import NOBODY, Arm, Candidate, Decision, Recipient
from streams.ledger import ContactLedger, LedgerUnavailable
from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 5.0
# The events ``LedgerGate.record`` tells the ledger about.
_RECORDED = (ev.Engagement, ev.Consent, ev.Complaint)


class LedgerGate:
    """Decides candidates through the Redis contact ledger and feeds it engagement, consent
    and complaints; waits out Redis outages instead of publishing undecided decisions."""

    def __init__(
        self,
        ledger: ContactLedger,
        metrics: Metrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ledger = ledger
        self._metrics = metrics
        self._sleep = sleep
        # Whether Redis answered the last call or probe: /ledger and lifecycle_redis_up.
        self.up = False

    def _set_up(self, up: bool) -> None:
        self.up = up
        self._metrics.redis_up.set(1 if up else 0)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = FIRST_RETRY_SECONDS
        outage_started: float | None = None
        while True:
            started = time.perf_counter()
            try:
                result = await call()
            except LedgerUnavailable as exc:
                self._metrics.ledger_errors.labels("unavailable").inc()
                self._set_up(False)
                if outage_started is None:
                    outage_started = time.monotonic()
                    log.error("contact ledger unavailable, holding the stream: %s", exc)
                else:
                    log.warning("contact ledger still unavailable, retrying in %.1f s", delay)
                await self._sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            self._metrics.ledger_call_seconds.labels(operation).observe(
                time.perf_counter() - started
            )
            self._set_up(True)
            if outage_started is not None:
                log.warning(
                    "contact ledger back after %.1f s; the stream resumes",
                    time.monotonic() - outage_started,
                )
            return result

    def wants(self, event: ev.Event) -> bool:
        """Whether ``record`` has anything to tell the ledger about ``event``."""
        return isinstance(event, _RECORDED)

    async def record(self, event: ev.Event) -> None:
        """Tell the ledger about responses, consent and complaints (they steer the policy)."""
        led = self.ledger
        cid, at = event.customer_id, event.occurred_at_ms
        if isinstance(event, ev.Engagement):
            channel, action, did = event.channel, event.action, event.decision_id
            await self._call(
                "engagement", lambda: led.record_engagement(cid, channel, action, at, did)
            )
        elif isinstance(event, ev.Consent):
            channel, status = event.channel, event.status
            await self._call("consent", lambda: led.record_consent(cid, channel, status, at))
        elif isinstance(event, ev.Complaint):
            await self._call("complaint", lambda: led.record_complaint(cid, at))

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, recipient: Recipient = NOBODY
    ) -> list[Decision]:
        decisions = await self._call(
            "decide",
            lambda: self.ledger.decide(
                candidates,
                now_ms,
                recipient.segment,
                recipient.business_unit,
                recipient.quiet_channels,
            ),
        )
        for d in decisions:
            for reason in d.reasons:
                self._metrics.decision_reasons.labels(d.candidate.trigger, reason).inc()
        return decisions

    async def recall(self, customer_id: str, decision_ids: Sequence[str]) -> dict[str, Arm]:
        """What the ledger decided for ``decision_ids`` (for their outcome records); waits out
        an outage like every other call."""
        return await self._call("recall", lambda: self.ledger.recall(customer_id, decision_ids))

    async def ping(self, timeout: float | None = None) -> bool:
        """One health probe (no retry): True when Redis answered within ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                await self.ledger.ping()
        except (LedgerUnavailable, TimeoutError) as exc:
            if self.up:
                log.warning("contact ledger probe failed: %r", exc)
            self._set_up(False)
            return False
        self._set_up(True)
        return True
