"""Customer state, the due-time index and decisions, between ingest and publish.

This is the stream-processing shell around the pure core (``streams/core.py``): it loads a
customer's record, skips replayed input, runs the core, has the contact policy decide, publishes
decisions, and only then writes state. It knows nothing of Faust: ``streams/app.py`` gives it
table-backed stores and a publisher; tests give it dicts.

Decisions before state. Faust writes a table's changelog on every write, so after a crash the
restored record can be ahead of the committed input offset; the record therefore remembers the
highest offset it has applied per input topic, and input at or below it is skipped. For the
skip to lose nothing, a record carrying a new offset is written only after the decisions its
event caused are acknowledged by the broker. Due items work the same way: the customer's
record (which knows what has fired) is written after the decisions are acknowledged, and the
index entry is derived from the record each time the customer is touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from streams.clock import Clock
from streams.decisions import NOBODY, Candidate, Decision, Recipient
from streams.due_index import DueIndex
from streams.events import Event
from streams.metrics import Metrics
from streams.policy import MARKETING, QuietHours
from streams.timeutil import wall_ms

log = logging.getLogger(__name__)


class Store(Protocol):
    """A key-value table (a Faust table in the worker, a dict in tests)."""

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...


class Gate(Protocol):
    """The contact policy in front of publishing (the Redis ledger, or contact-all)."""

    async def record(self, event: Event) -> None:
        """Take note of an input event the policy cares about (engagement, consent, ...)."""

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, recipient: Recipient = NOBODY
    ) -> list[Decision]:
        """Decide one customer's candidates of one moment, in priority order."""


class CoreAdapter(Protocol):
    """What the shell needs of the pure core, with the trigger parameters bound."""

    def load(self, raw: bytes) -> Any: ...

    def dump(self, state: Any) -> bytes: ...

    def applied_offset(self, state: Any, kind: str) -> int: ...

    def with_applied_offset(self, state: Any, kind: str, offset: int) -> Any: ...

    def segment(self, state: Any) -> str | None: ...

    def step(self, state: Any, event: Event, now_ms: int) -> tuple[Any, list[Candidate], bool]: ...

    def advance(self, state: Any, now_ms: int) -> tuple[Any, list[Candidate]]: ...

    def next_due_ms(self, state: Any) -> int | None: ...

    def business_unit(self, state: Any) -> str | None: ...

    def timezone(self, state: Any) -> str | None: ...

    def defer(self, state: Any, candidate: Candidate, until_ms: int, at_ms: int) -> None: ...

    def take_deferred(self, state: Any, now_ms: int) -> list[tuple[Candidate, int, int]]: ...


class ContactAll:
    """The gate until the contact ledger is wired in: every candidate becomes a contact."""

    async def record(self, event: Event) -> None:
        return None

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, recipient: Recipient = NOBODY
    ) -> list[Decision]:
        ordered = sorted(candidates, key=lambda c: (-c.priority, c.trigger, c.instance))
        return [Decision(c, "contact", (), now_ms) for c in ordered]


Publish = Callable[[Decision], Awaitable[Awaitable[Any]]]
"""Send a decision; the outer await hands it to the producer, the inner one is its ack."""


@dataclass
class Stores:
    customers: Store
    due: Store
    clock: Store


class Processor:
    """Applies input events and clock movements to customer state, in decisions-before-state order.

    Must be called from inside the stream event whose partition the writes belong to (Faust
    sends a table's changelog record to the current event's partition).
    """

    def __init__(
        self,
        core: CoreAdapter,
        stores: Stores,
        clock: Clock,
        gate: Gate,
        publish: Publish,
        metrics: Metrics,
        wall_ms: Callable[[], int] = wall_ms,
        quiet_hours: QuietHours | None = None,
    ) -> None:
        self._wall_ms = wall_ms
        self._quiet = quiet_hours
        self._core = core
        self._stores = stores
        self._clock = clock
        self._gate = gate
        self._publish = publish
        self._metrics = metrics
        self.due_index = DueIndex()

    # --- partitions -------------------------------------------------------------------

    def restore_partitions(self, partitions: set[int]) -> None:
        """Rebuild the in-memory due index and clock of the partitions this worker now owns.

        Reads only the due table (one entry per customer with a due item) and the clock table,
        never the customers table.
        """
        for p in self.due_index.partitions():
            if p not in partitions:
                self.due_index.drop(p)
                self._clock.forget(p)
        by_partition: dict[int, list[tuple[bytes, int]]] = {p: [] for p in partitions}
        for customer, raw in self._stores.due.items():
            partition, due_ms = orjson.loads(raw)
            if partition in by_partition:
                by_partition[partition].append((customer, due_ms))
        for p, entries in by_partition.items():
            self.due_index.rebuild(p, entries)
            raw_time = self._stores.clock.get(str(p).encode())
            if raw_time is not None:
                self._clock.restore(p, int(raw_time))
        log.info(
            "restored %d due items on partitions %s",
            sum(len(e) for e in by_partition.values()),
            sorted(partitions),
        )

    # --- input ------------------------------------------------------------------------

    async def on_event(self, kind: str, partition: int, offset: int, event: Event) -> None:
        """Apply one valid input event of ``kind`` (account/usage) at ``partition``/``offset``."""
        key = event.customer_id.encode()
        if self._clock.is_event_time and self._clock.observe(partition, event.occurred_at_ms):
            self._stores.clock[str(partition).encode()] = str(
                self._clock.stream_time(partition)
            ).encode()
        now = self._clock.now(partition)
        assert now is not None  # noqa: S101 - observed just above in event mode
        raw = self._stores.customers.get(key)
        if raw is None:
            self._metrics.state_records.labels(str(partition)).inc()
        state = None if raw is None else self._core.load(raw)
        if state is not None and self._core.applied_offset(state, kind) >= offset:
            # A replay after a crash or rebalance: the record already holds this event, and
            # its decisions were acknowledged before the record was written.
            self._metrics.events_replayed.labels(kind).inc()
            self._index(partition, key, state)
        else:
            await self._gate.record(event)
            new_state, candidates, duplicate = self._core.step(state, event, now)
            if duplicate:
                self._metrics.events_duplicate.labels(kind).inc()
            new_state = self._core.with_applied_offset(new_state, kind, offset)
            await self._decide_and_publish(candidates, now, new_state)
            self._stores.customers[key] = self._core.dump(new_state)
            self._index(partition, key, new_state)
        await self.on_time(partition)

    async def on_time(self, partition: int) -> None:
        """Fire every due item of ``partition`` whose time has come (now >= due)."""
        now = self._clock.now(partition)
        if now is None:
            return
        for key in self.due_index.pop_due(partition, now):
            raw = self._stores.customers.get(key)
            if raw is None:  # pragma: no cover - an index entry always has a record
                del self._stores.due[key]
                continue
            state, candidates = self._core.advance(self._core.load(raw), now)
            deferred = self._core.take_deferred(state, now)
            await self._decide_and_publish(candidates, now, state, deferred)
            self._stores.customers[key] = self._core.dump(state)
            self._index(partition, key, state)

    # --- helpers ----------------------------------------------------------------------

    async def _decide_and_publish(
        self,
        candidates: list[Candidate],
        now: int,
        state: Any,
        deferred: Sequence[tuple[Candidate, int, int]] = (),
    ) -> None:
        """Decide and publish the candidates that fired now and the deferred ones now due;
        candidates that fall in the customer's quiet hours are deferred into ``state``."""
        if not candidates and not deferred:
            return
        started = time.perf_counter()
        for candidate in candidates:
            self._metrics.triggers_fired.labels(candidate.trigger).inc()
        quiet: frozenset[str] = frozenset()
        if self._quiet is not None:
            timezone = self._core.timezone(state)
            quiet = self._quiet.quiet_channels(now, timezone)
            if quiet:
                candidates = self._defer(candidates, now, state, timezone)
        was_deferred = {c.decision_id: (at, until) for c, at, until in deferred}
        candidates = [*candidates, *(c for c, _, _ in deferred)]
        if not candidates:
            return
        recipient = Recipient(self._core.segment(state), self._core.business_unit(state), quiet)
        decisions = await self._gate.decide(candidates, now, recipient)
        for d in decisions:
            if d.decision_id in was_deferred:
                at, until = was_deferred[d.decision_id]
                d.details["deferred"] = {"at": at, "until": until}
        acks = [await self._publish(d) for d in decisions]
        for ack in acks:
            await ack
        for d in decisions:
            self._metrics.decisions.labels(d.candidate.trigger, d.outcome).inc()
        latency = self._metrics.event_to_decision_seconds
        latency.labels("processing_time").observe(time.perf_counter() - started)
        if not self._clock.is_event_time:
            # From the event's own time (or the due time) to the acknowledged decision; with
            # the event clock this would measure the age of replayed history, so it is skipped.
            wall = self._wall_ms()
            for d in decisions:
                latency.labels("event_time").observe(
                    max(0, wall - d.candidate.triggered_at_ms) / 1000
                )

    def _defer(
        self, candidates: list[Candidate], now: int, state: Any, timezone: str | None
    ) -> list[Candidate]:
        """Keep marketing candidates on a channel in its quiet hours in ``state`` until the
        hours end; return the rest. Service messages are never deferred."""
        assert self._quiet is not None  # noqa: S101 - only called with quiet hours
        kept = []
        for c in candidates:
            until = None
            if c.category == MARKETING:
                until = self._quiet.defer_until(now, c.channel, timezone)
            if until is None:
                kept.append(c)
            else:
                self._core.defer(state, c, until, now)
                self._metrics.decisions_deferred.labels(c.trigger).inc()
                log.debug("deferred %s of %s until %d", c.trigger, c.customer_id, until)
        return kept

    def _index(self, partition: int, key: bytes, state: Any) -> None:
        """Derive the customer's due-index entry from its record (idempotent: replays too)."""
        due = self._core.next_due_ms(state)
        self.due_index.set(partition, key, due)
        # Compare with the durable entry, not the in-memory one: pop_due has already removed
        # the in-memory entry of a customer whose item just fired.
        raw = self._stores.due.get(key)
        if (None if raw is None else orjson.loads(raw)[1]) == due:
            return
        if due is None:
            del self._stores.due[key]
        else:
            self._stores.due[key] = orjson.dumps([partition, due])
