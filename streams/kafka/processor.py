"""Customer state, the due-time index and decisions, between ingest and publish.

This is the stream-processing shell around the pure core (``streams/core/engine.py``): it loads a
customer's record, skips replayed input, runs the core, has the contact policy decide, publishes
decisions, and only then writes state. It knows nothing of Faust: ``streams/kafka/app.py`` gives it
table-backed stores and a publisher; tests give it dicts.

Decisions before state. Faust writes a table's changelog on every write, so after a crash the
restored record can be ahead of the committed input offset; the record therefore remembers the
highest offset it has applied per input topic, and input at or below it is skipped. For the
skip to lose nothing, a record carrying a new offset is written only after the decisions its
event caused are acknowledged by the broker. Due items work the same way: the customer's
record (which knows what has fired) is written after the decisions are acknowledged, and the
index entry is derived from the record each time the customer is touched.

Batches. ``apply_event`` and ``apply_time`` hand decisions to the producer and keep the
resulting table writes in a record cache (``streams/core/pending_writes.py``: the last value per
key); ``flush`` waits for the decisions' acknowledgements and only then writes the cache, the
changed due-index entries and each partition's stream time to the tables. The caller acks the
batch's input after ``flush``. ``on_event`` and ``on_time`` are one-event batches.

Batches overlap. ``flush`` is ``seal`` then ``finish``: ``seal`` ends a batch (its writes, its
ledger work, its decisions in flight and its partitions' stream times move into a
``SealedBatch``), and ``finish`` settles and writes that batch. Between the two the next batch
can be applied: it reads the sealed batch's state, its ledger work for a customer waits for the
sealed batch's work for that customer, and its own writes stay in its own layer, so a sealed
batch never writes state whose decisions are not acknowledged. Batches finish in seal order.

Ledger calls overlap. The contact ledger keeps one customer's history under that customer's
keys, so only one customer's calls need an order: each customer's ledger work (taking note of
an engagement, consent or complaint; deciding candidates and handing the decisions to the
producer) runs as a chain in event order, and chains of different customers run concurrently
(at most ``LEDGER_CALLS_IN_FLIGHT``). ``finish`` waits for every chain of its batch before it
writes state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson

from streams.core.clock import Clock
from streams.core.decisions import NOBODY, Arm, Candidate, Decision, Recipient
from streams.core.due_index import DueIndex
from streams.core.events import Event
from streams.core.goals import Resolved, outcome_of
from streams.core.log_identity import LogMarks, marks_key
from streams.core.pending_writes import Layer, PendingWrites
from streams.core.policy import MARKETING, QuietHours
from streams.core.timeutil import wall_ms
from streams.ops.metrics import Children, Metrics

log = logging.getLogger(__name__)

LEDGER_CALLS_IN_FLIGHT = 32
RESTORE_YIELD_EVERY = 5_000


class KeyValues(Protocol):
    """What a partition's reads and writes need of a store."""

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...


class Store(KeyValues, Protocol):
    """A key-value table, one for all partitions (a dict in tests and tools)."""

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...


class PartitionedStore(Protocol):
    """A table that keeps each partition apart (a Faust table: ``streams/kafka/fastpath.py``,
    ``BatchedChangelog``): every read and write of one partition's state goes through
    ``at(partition)``; ``get`` and ``items`` read across partitions (restoring)."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...

    def at(self, partition: int) -> KeyValues:
        """The store as ``partition`` reads and writes it."""
        ...


AnyStore = Store | PartitionedStore


def _partitions_of(store: AnyStore) -> Callable[[int], KeyValues] | None:
    return cast(Callable[[int], KeyValues] | None, getattr(store, "at", None))


def _at(store: AnyStore, partition: int) -> KeyValues:
    at = _partitions_of(store)
    return cast(Store, store) if at is None else at(partition)


def _pending(store: AnyStore) -> PendingWrites:
    # With ``at``, PendingWrites only reads ``store`` itself (a key of no given partition).
    return PendingWrites(cast(Store, store), _partitions_of(store))


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

    # step and advance may update the state they are given in place: the shell passes only
    # a state it has just loaded and uses only the state they return.
    def step(self, state: Any, event: Event, now_ms: int) -> tuple[Any, list[Candidate], bool]: ...

    def advance(self, state: Any, now_ms: int) -> tuple[Any, list[Candidate]]: ...

    def next_due_ms(self, state: Any) -> int | None: ...

    def business_unit(self, state: Any) -> str | None: ...

    def timezone(self, state: Any) -> str | None: ...

    def defer(self, state: Any, candidate: Candidate, until_ms: int, at_ms: int) -> None: ...

    def take_deferred(self, state: Any, now_ms: int) -> list[tuple[Candidate, int, int]]: ...

    # Outcome tracking (called only when the processor publishes outcomes):

    def goals_step(
        self, state: Any, decided: list[Candidate], now_ms: int
    ) -> tuple[Sequence[Resolved], int]: ...

    def describe(self, trigger: str) -> tuple[str, str] | None: ...


class ContactAll:
    """The gate until the contact ledger is wired in: every candidate becomes a contact."""

    def wants(self, event: Event) -> bool:
        return False

    async def record(self, event: Event) -> None:
        return None

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, recipient: Recipient = NOBODY
    ) -> list[Decision]:
        ordered = sorted(candidates, key=lambda c: (-c.priority, c.trigger, c.instance))
        return [Decision(c, "contact", (), now_ms) for c in ordered]


Publish = Callable[[Decision], Awaitable[Awaitable[Any]]]
"""Send a decision; the outer await hands it to the producer, the inner one is its ack."""

StillOurs = Callable[[int], bool]
"""Asked before a partition's writes are made: False when the partition is no longer ours
(its writes are dropped, its input is read again by the new owner)."""


def _always(partition: int) -> bool:
    return True


Unacked = list[tuple[Decision, Awaitable[Any], float]]
"""Decisions handed to the producer, not yet acknowledged: (decision, ack, started)."""

PublishOutcome = Callable[[bytes, bytes], Awaitable[Awaitable[Any]]]
"""Send an outcome record (key, value) to ``decision-outcomes``; awaits as ``Publish``."""


@dataclass(eq=False)
class Outcomes:
    """A batch's outcome records handed to the producer and not yet acknowledged ((trigger,
    arm, converted, ack)), and what it counts once it is written: the goals the bound dropped
    and the resolved goals without a ledger entry (counted then, so that a batch read again
    after a failure is not counted twice)."""

    acks: list[tuple[str, str, bool, Awaitable[Any]]] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)
    dropped: int = 0


@dataclass(eq=False)
class SealedBatch:
    """A batch whose events are all applied (``Processor.seal``): its ledger work and
    decisions in flight, and the state it will write once they are acknowledged."""

    chains: dict[bytes, asyncio.Future[None]]
    unacked: Unacked
    customers: Layer
    due: Layer
    stream_times: dict[int, int]
    # Each touched partition's log marks (``streams/core/log_identity.py``), encoded when sealed.
    marks: dict[int, bytes]
    outcomes: Outcomes = field(default_factory=Outcomes)

    def partitions(self) -> set[int]:
        return (
            self.customers.partitions()
            | self.due.partitions()
            | set(self.stream_times)
            | set(self.marks)
        )


@dataclass
class Stores:
    customers: AnyStore
    due: AnyStore
    clock: AnyStore


class Processor:
    """Applies input events and clock movements to customer state, in decisions-before-state order.

    Every read and write names the partition it belongs to (``Store``).
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
        publish_outcome: PublishOutcome | None = None,
    ) -> None:
        self._wall_ms = wall_ms
        # Outcome tracking (``streams/core/goals.py``) is on when outcomes can be published.
        self._publish_outcome = publish_outcome
        self._quiet = quiet_hours
        self._core = core
        self._stores = stores
        self._clock = clock
        self._event_time = clock.is_event_time  # the clock's mode is fixed
        self._gate = gate
        # Which events the gate's ``record`` cares about, looked up once.
        self._wants: Callable[[Event], bool] | None = getattr(gate, "wants", None)
        self._publish = publish
        self._metrics = metrics
        self._state_records = metrics.tally(metrics.state_records_created)
        self._triggers_fired = Children(metrics.triggers_fired)
        self.due_index = DueIndex()
        self._customers = _pending(stores.customers)
        self._due = _pending(stores.due)
        # Partitions whose stream time moved since it was last written.
        self._clock_dirty: set[int] = set()
        # Event time: the partitions where something may be due since ``apply_time`` last
        # looked (the stream time moved, or an entry at or before it was set); it skips the
        # others (it runs after every event, and most move nothing due).
        self._due_now: set[int] = set()
        # Each owned input partition's log identity, and the partitions whose marks changed.
        self._marks: dict[int, LogMarks] = {}
        self._marks_dirty: set[int] = set()
        # This batch's decisions handed to the producer, not yet acknowledged.
        self._unacked: Unacked = []
        self._outcomes = Outcomes()
        # Each customer's ledger work of this batch, as the last task of its chain.
        self._chains: dict[bytes, asyncio.Future[None]] = {}
        # Earlier batches, applied and sealed, not yet written (oldest first).
        self._sealed: list[SealedBatch] = []
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    # --- partitions -------------------------------------------------------------------

    async def restore_partitions(self, partitions: set[int]) -> None:
        """Rebuild the in-memory due index and clock of the partitions this worker now owns.

        Reads only the due table (one entry per customer with a due item) and the clock table,
        never the customers table. Pending writes of partitions not owned are dropped. Yields
        to the event loop every ``RESTORE_YIELD_EVERY`` entries: at a million customers the
        scan takes seconds, and health checks and metrics must answer meanwhile.
        """
        for p in self.due_index.partitions():
            if p not in partitions:
                self.due_index.drop(p)
                self._clock.forget(p)
        self.drop_partitions(self.pending_partitions() - partitions)
        by_partition: dict[int, list[tuple[bytes, int]]] = {p: [] for p in partitions}
        for n, (customer, raw) in enumerate(self._stores.due.items(), 1):
            partition, due_ms = orjson.loads(raw)
            if partition in by_partition:
                by_partition[partition].append((customer, due_ms))
            if n % RESTORE_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        for p, entries in by_partition.items():
            self.due_index.rebuild(p, entries)
            raw_time = self._stores.clock.get(str(p).encode())
            if raw_time is not None:
                self._clock.restore(p, int(raw_time))
            self._marks[p] = LogMarks.decode(self._stores.clock.get(marks_key(p)))
            self._due_now.add(p)
        log.info(
            "restored %d due items on partitions %s",
            sum(len(e) for e in by_partition.values()),
            sorted(partitions),
        )

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the unwritten changes and the stream time of revoked partitions.

        Their input was not acked, so whoever owns them next reads it again from the committed
        offset; the stream time is restored from the table then, not kept ahead of it.
        """
        if not partitions:
            return
        self._customers.discard(partitions)
        self._due.discard(partitions)
        for p in partitions:
            self._clock_dirty.discard(p)
            self._marks.pop(p, None)  # restored from the table with the partition
            self._marks_dirty.discard(p)
            for sealed in self._sealed:
                sealed.stream_times.pop(p, None)
                sealed.marks.pop(p, None)
            self._clock.forget(p)
            self.due_index.drop(p)

    def pending_partitions(self) -> set[int]:
        """Partitions with writes waiting for ``flush``."""
        found = (
            self._customers.partitions()
            | self._due.partitions()
            | self._clock_dirty
            | self._marks_dirty
        )
        for sealed in self._sealed:
            found |= set(sealed.stream_times) | set(sealed.marks)
        return found

    def log_marks(self, partition: int) -> LogMarks:
        """The log identity of an input partition (``streams/core/log_identity.py``); changes made
        to it are written with the next batch once ``marks_changed`` is called."""
        marks = self._marks.get(partition)
        if marks is None:
            marks = self._marks[partition] = LogMarks()
        return marks

    def marks_changed(self, partition: int) -> None:
        """Write ``partition``'s log marks with the next batch."""
        self._marks_dirty.add(partition)

    # --- input ------------------------------------------------------------------------

    async def on_event(self, kind: str, partition: int, offset: int, event: Event) -> None:
        """Apply one valid input event and write its state (a batch of one)."""
        await self.apply_event(kind, partition, offset, event)
        await self.flush()

    async def on_time(self, partition: int) -> None:
        """Fire every due item of ``partition`` whose time has come and write the state."""
        await self.apply_time(partition)
        await self.flush()

    async def apply_event(self, kind: str, partition: int, offset: int, event: Event) -> None:
        """Apply one valid input event of ``kind`` (account/usage) at ``partition``/``offset``.

        Its decisions are handed to the producer; its state is written by ``flush``.
        """
        self.apply_event_nowait(kind, partition, offset, event)

    def apply_event_nowait(self, kind: str, partition: int, offset: int, event: Event) -> None:
        """``apply_event`` without a coroutine per event (the batch path's): applying never
        waits; the ledger work it starts runs as tasks once the caller yields."""
        self.step_event_nowait(kind, partition, offset, event)
        self.apply_time_nowait(partition)

    def step_event_nowait(self, kind: str, partition: int, offset: int, event: Event) -> None:
        """Apply one input event to its customer's record, without firing the partition's due
        items (``apply_time_nowait`` does that).

        All or nothing: whatever can fail (loading the record, the core's step, quiet hours,
        encoding the record) runs before anything changes. If it raises, the processor is as
        it was: the stream time has not moved, no ledger work was started and no write is
        pending, so the caller can dead-letter the event and go on.
        """
        key = event.customer_id.encode()
        # Offsets are compared and stored counted from the partition's base: a replaced log's
        # events then lie above every offset applied from the log before it.
        marks = self.log_marks(partition)
        offset += marks.base.get(kind, 0)
        clock = self._clock
        occurred = event.occurred_at_ms
        if self._event_time:
            # The stream time this event moves to; observed once the event is applied.
            stream_time = clock.stream_time(partition)
            now = occurred if stream_time is None or occurred > stream_time else stream_time
        else:
            wall_now = clock.now(partition)
            assert wall_now is not None  # noqa: S101 - the wall clock always has a time
            now = wall_now
        core = self._core
        raw = self._customers.get(key, partition)
        state = None if raw is None else core.load(raw)
        durable_due = self.due_index.get(partition, key)
        if state is not None and core.applied_offset(state, kind) >= offset:
            # A replay after a crash or rebalance: the record already holds this event, and
            # its decisions were acknowledged before the record was written.
            due = core.next_due_ms(state)
            self._metrics.events_replayed.labels(kind).inc()
            self._observe(partition, occurred)
            self._set_due(partition, key, due, durable_due)
            return
        new_state, candidates, duplicate = core.step(state, event, now)
        new_state = core.with_applied_offset(new_state, kind, offset)
        fired = candidates
        if candidates:
            candidates, recipient, deferred = self._prepare(candidates, now, new_state)
        else:
            # Most events fire nothing: no recipient to make (only ``decide`` reads it).
            recipient, deferred = NOBODY, []
        outcomes, dropped = self._track(new_state, candidates, now)
        dumped = core.dump(new_state)
        due = core.next_due_ms(new_state)
        # Nothing below raises on a record's content: the event is applied from here on.
        self._observe(partition, occurred)
        if offset > marks.applied.get(kind, -1):
            marks.applied[kind] = offset
            self._marks_dirty.add(partition)
        if raw is None:
            self._state_records.add(str(partition))
        if duplicate:
            self._metrics.events_duplicate.labels(kind).inc()
        if fired:
            self._count(fired, deferred)
        self._outcomes.dropped += dropped
        wants = self._wants  # which events the gate's ``record`` cares about (None: all)
        if wants is None or candidates or outcomes or wants(event):
            work = self._ledger_work(
                self._unacked, event, candidates, now, recipient, (), outcomes, event.customer_id,
                self._outcomes,
            )  # fmt: skip
            self._chain(key, work)
        self._customers.put(partition, key, dumped)
        if due != durable_due:  # (else the index and the due table hold it already)
            self._set_due(partition, key, due, durable_due)

    def _observe(self, partition: int, occurred_at_ms: int) -> None:
        if self._event_time and self._clock.observe(partition, occurred_at_ms):
            self._clock_dirty.add(partition)
            self._due_now.add(partition)

    async def apply_time(self, partition: int) -> None:
        """Fire every due item of ``partition`` whose time has come (now >= due)."""
        self.apply_time_nowait(partition)

    def apply_time_nowait(self, partition: int) -> None:
        """``apply_time`` without a coroutine (see ``apply_event_nowait``)."""
        if self._event_time:
            if partition not in self._due_now:
                return  # nothing can have come due since the last look
            self._due_now.discard(partition)
        now = self._clock.now(partition)
        if now is None:
            return
        for key, due_ms in self.due_index.pop_due_items(partition, now):
            raw = self._customers.get(key, partition)
            if raw is None:  # pragma: no cover - an index entry always has a record
                self._due.put(partition, key, None)
                continue
            state = self._core.load(raw)
            record_due = self._core.next_due_ms(state)
            if record_due is None or record_due > now:
                # The entry is older than the record: after a crash the due table can lag the
                # customers table (it is written after it). Nothing is due: the record stays as
                # it is (settling it now would move its pruning floor past where an
                # uninterrupted run leaves it) and the entry is derived from it again.
                self._index(partition, key, state, due_ms)
                continue
            state, candidates = self._core.advance(state, now)
            deferred = self._core.take_deferred(state, now)
            fired = candidates
            candidates, recipient, held = self._prepare(candidates, now, state)
            decided = [*candidates, *(c for c, _, _ in deferred)] if deferred else candidates
            outcomes, dropped = self._track(state, decided, now)
            self._outcomes.dropped += dropped
            self._count(fired, held)
            if candidates or deferred or outcomes:
                work = self._ledger_work(
                    self._unacked, None, candidates, now, recipient, deferred, outcomes,
                    key.decode(), self._outcomes,
                )  # fmt: skip
                self._chain(key, work)
            self._customers.put(partition, key, self._core.dump(state))
            # The durable entry is still the one just popped from the in-memory index.
            self._index(partition, key, state, due_ms)

    async def flush(self, still_ours: StillOurs = _always) -> None:
        """Wait for the acknowledgement of every decision so far, then write the held state
        of the partitions ``still_ours`` (see ``StillOurs``)."""
        await self.finish(self.seal(), still_ours)

    def seal(self) -> SealedBatch:
        """End the batch: what was applied so far is settled and written by ``finish``, while
        the next batch is applied (it reads the sealed state; its writes stay its own)."""
        stream_times: dict[int, int] = {}
        for p in self._clock_dirty:
            stream_time = self._clock.stream_time(p)
            if stream_time is not None:
                stream_times[p] = stream_time
        self._clock_dirty = set()
        marks = {p: self._marks[p].encode() for p in self._marks_dirty if p in self._marks}
        self._marks_dirty = set()
        sealed = SealedBatch(
            self._chains,
            self._unacked,
            self._customers.seal(),
            self._due.seal(),
            stream_times,
            marks,
            self._outcomes,
        )
        self._chains, self._unacked, self._outcomes = {}, [], Outcomes()
        self._sealed.append(sealed)
        return sealed

    async def finish(self, sealed: SealedBatch, still_ours: StillOurs = _always) -> None:
        """Wait for the acknowledgement of ``sealed``'s decisions, then write its state of the
        partitions ``still_ours`` (see ``StillOurs``).

        Batches finish in the order they were sealed.
        """
        try:
            await self._settle(sealed)
            for p in sorted(sealed.partitions()):
                if not still_ours(p):
                    self.drop_partitions({p})
                    continue
                self._customers.write(sealed.customers, p)
                self._due.write(sealed.due, p)
                clock = _at(self._stores.clock, p)
                stream_time = sealed.stream_times.get(p)
                if stream_time is not None:
                    clock[str(p).encode()] = str(stream_time).encode()
                raw_marks = sealed.marks.get(p)
                if raw_marks is not None:
                    clock[marks_key(p)] = raw_marks
        finally:
            self._customers.release(sealed.customers)
            self._due.release(sealed.due)
            self._sealed = [held for held in self._sealed if held is not sealed]

    # --- helpers ----------------------------------------------------------------------

    def _prepare(
        self, candidates: list[Candidate], now: int, state: Any
    ) -> tuple[list[Candidate], Recipient, list[Candidate]]:
        """Keep the candidates that fall in the customer's quiet hours in ``state`` (deferred),
        and say who the rest are decided for: (the rest, the recipient, the deferred)."""
        quiet: frozenset[str] = frozenset()
        deferred: list[Candidate] = []
        if self._quiet is not None and candidates:
            until = self._quiet.quiet_until(now, self._core.timezone(state))
            if until is not None:
                quiet = self._quiet.channels
                candidates, deferred = self._defer(candidates, now, state, quiet, until)
        segment, unit = self._core.segment(state), self._core.business_unit(state)
        return candidates, Recipient(segment, unit, quiet), deferred

    def _count(self, fired: list[Candidate], deferred: list[Candidate]) -> None:
        """Count the candidates that fired now and those held for the end of quiet hours."""
        for candidate in fired:
            self._triggers_fired(candidate.trigger).inc()
        for candidate in deferred:
            self._metrics.decisions_deferred.labels(candidate.trigger).inc()
            log.debug("deferred %s of %s", candidate.trigger, candidate.customer_id)

    async def _ledger_work(
        self,
        unacked: Unacked,
        event: Event | None,
        candidates: list[Candidate],
        now: int,
        recipient: Recipient,
        deferred: Sequence[tuple[Candidate, int, int]] = (),
        outcomes: Sequence[Resolved] = (),
        customer_id: str = "",
        outcome_acks: Outcomes | None = None,
    ) -> None:
        """One event's (or due moment's) ledger calls, decisions and outcome records, in that
        order; deferred candidates now due are decided with the rest."""
        if event is not None:
            await self._gate.record(event)
        if deferred:
            candidates = [*candidates, *(c for c, _, _ in deferred)]
        if candidates:
            await self._decide(unacked, candidates, now, recipient, deferred)
        if outcomes:
            assert outcome_acks is not None  # noqa: S101 - given with outcomes
            await self._publish_outcomes(outcome_acks, customer_id, outcomes)

    def _track(
        self, state: Any, decided: list[Candidate], now: int
    ) -> tuple[Sequence[Resolved], int]:
        """Keep the pending goal of each candidate decided now (every arm), and take the goals
        this call resolved (converted by the event, or expired by the clock): their outcome
        records are published after the decisions, in the customer's ledger chain, and the
        record that no longer holds them is written only once they are acknowledged. Also
        returns how many pending goals the bound dropped."""
        if self._publish_outcome is None:
            return (), 0
        return self._core.goals_step(state, decided, now)

    async def _publish_outcomes(
        self, batch: Outcomes, customer_id: str, outcomes: Sequence[Resolved]
    ) -> None:
        """Publish the outcome records of ``outcomes``, with the arm the ledger decided.

        The decisions were decided earlier in this customer's chain (or in a batch already
        written), so the ledger holds them for as long as a goal can resolve
        (``Policy.decisions_kept_ms``). A decision it no longer holds, or of a trigger no longer
        installed, is counted as unattributed and skipped.
        """
        publish = self._publish_outcome
        assert publish is not None  # noqa: S101 - outcomes are taken only with a publisher
        core = self._core
        recall = getattr(self._gate, "recall", None)
        # A gate without a ledger (no ``recall``) contacts every candidate on its own channel.
        arms = (
            None if recall is None else await recall(customer_id, [r.decision_id for r in outcomes])
        )
        key = customer_id.encode()
        for r in outcomes:
            described = core.describe(r.trigger)
            if arms is not None:
                arm = arms.get(r.decision_id)
            else:
                arm = None if described is None else Arm("contact", described[1])
            if arm is None or described is None:
                batch.unattributed.append(r.trigger)
                log.warning(
                    "no outcome published for decision %s of %s (%s): %s",
                    r.decision_id, customer_id, r.trigger,
                    "the ledger no longer holds it" if described is not None
                    else "the trigger is not installed",
                )  # fmt: skip
                continue
            record = outcome_of(r, customer_id, described[0], arm)
            ack = await publish(key, orjson.dumps(record))
            batch.acks.append((r.trigger, arm.outcome, r.converted, ack))

    async def _decide(
        self,
        unacked: Unacked,
        candidates: list[Candidate],
        now: int,
        recipient: Recipient,
        deferred: Sequence[tuple[Candidate, int, int]],
    ) -> None:
        started = time.perf_counter()
        decisions = await self._gate.decide(candidates, now, recipient)
        was_deferred = {c.decision_id: (at, until) for c, at, until in deferred}
        for d in decisions:
            if d.decision_id in was_deferred:
                at, until = was_deferred[d.decision_id]
                d.details["deferred"] = {"at": at, "until": until}
            unacked.append((d, await self._publish(d), started))

    def _defer(
        self, candidates: list[Candidate], now: int, state: Any, quiet: frozenset[str], until: int
    ) -> tuple[list[Candidate], list[Candidate]]:
        """Keep marketing candidates on a ``quiet`` channel in ``state`` until ``until`` (the
        end of the customer's quiet hours); (the rest, the kept). Service is never deferred."""
        kept, deferred = [], []
        for c in candidates:
            if c.category != MARKETING or c.channel not in quiet:
                kept.append(c)
            else:
                self._core.defer(state, c, until, now)
                deferred.append(c)
        return kept, deferred

    def _chain(self, key: bytes, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the customer's earlier ledger work, concurrently with others'."""
        previous = self._chains.get(key)
        if previous is None:
            for sealed in reversed(self._sealed):
                previous = sealed.chains.get(key)
                if previous is not None:
                    break
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(LEDGER_CALLS_IN_FLIGHT))
        limit = self._limit[1]

        async def run() -> None:
            try:
                if previous is not None:
                    await previous
            except BaseException:
                work.close()  # the customer's earlier work failed: this one never runs
                raise
            async with limit:
                await work

        self._chains[key] = asyncio.ensure_future(run())

    async def _settle(self, sealed: SealedBatch) -> None:
        """Wait for every customer's ledger work of ``sealed``, then for every decision's
        acknowledgement.

        On a failure all unwritten state is dropped, this batch's and any later one's (its
        input is read again), and the failure is raised.
        """
        try:
            if sealed.chains:
                chains = list(sealed.chains.values())
                outcomes = await asyncio.gather(*chains, return_exceptions=True)
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
            for _, _, _, outcome_ack in sealed.outcomes.acks:
                await outcome_ack
            for _, ack, _ in sealed.unacked:
                await ack
        except BaseException:
            self._unacked.clear()
            self._outcomes = Outcomes()
            self.drop_partitions(self.pending_partitions())
            raise
        metrics = self._metrics
        self._count_outcomes(sealed.outcomes)
        unacked = sealed.unacked
        if not unacked:
            return
        latency = metrics.event_to_decision_seconds
        acked = time.perf_counter()
        wall = None if self._event_time else self._wall_ms()
        for d, _, started in unacked:
            metrics.decisions.labels(d.candidate.trigger, d.outcome).inc()
            if d.global_control:
                metrics.decisions_global_control.labels(d.candidate.trigger).inc()
            latency.labels("processing_time").observe(acked - started)
            if wall is not None:
                # From the event's own time (or the due time) to the acknowledged decision;
                # with the event clock this would measure the age of replayed history, so it
                # is skipped.
                latency.labels("event_time").observe(
                    max(0, wall - d.candidate.triggered_at_ms) / 1000
                )

    def _count_outcomes(self, batch: Outcomes) -> None:
        """Count a written batch's outcome records, dropped goals and unattributed goals."""
        metrics = self._metrics
        for trigger, arm, converted, _ in batch.acks:
            metrics.outcomes.labels(trigger, arm, "true" if converted else "false").inc()
        for trigger in batch.unattributed:
            metrics.outcomes_unattributed.labels(trigger).inc()
        if batch.dropped:
            metrics.goals_dropped.inc(batch.dropped)

    def _index(self, partition: int, key: bytes, state: Any, durable_due: int | None) -> None:
        """Derive the customer's due-index entry from its record (idempotent: replays too).

        ``durable_due`` is the entry the due table holds (or will hold once flushed): the
        in-memory index mirrors it, except for an entry ``pop_due_items`` just removed.
        """
        self._set_due(partition, key, self._core.next_due_ms(state), durable_due)

    def _set_due(
        self, partition: int, key: bytes, due: int | None, durable_due: int | None
    ) -> None:
        """Set the customer's due-index entry to ``due`` (see ``_index``)."""
        self.due_index.set(partition, key, due)
        if due is not None and self._event_time:
            stream_time = self._clock.stream_time(partition)
            if stream_time is not None and due <= stream_time:
                self._due_now.add(partition)  # due already: the next apply_time fires it
        if durable_due == due:
            return
        self._due.put(partition, key, None if due is None else orjson.dumps([partition, due]))
