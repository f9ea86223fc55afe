"""The batch driver: what the worker does with each fetch of its inputs and ticks.

``streams/kafka/fastpath.py`` hands the driver one fetch at a time (``BatchDriver.handle``).
The driver decodes the records (``streams/kafka/pipeline.py``), forwards misrouted ones
(``streams/kafka/copartition.py``), merges each partition's topics by event time
(``streams/core/ordering.py``), applies what the merge releases (``streams/kafka/processor.py``)
and returns the batch's ``Checkpoint`` as the rest that settles it
(``streams/kafka/checkpoint.py``). It also keeps what it knows of the partitions it owns: the
rebalance callbacks, the log identity checks at assignment, the lag gauges and the end offsets.

What the driver holds is dropped (``abandon``) whenever the consumer goes back to the committed
offsets (a seek) or a rebalance comes while a batch settles: the input is read again, and
anything held would be applied twice, out of order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from faust.types import TP

from streams.core.errors import ReplacedLogError
from streams.core.events import Event
from streams.core.log_identity import LANE_PREFIX, REPARTITION
from streams.core.ordering import EventTimeMerger
from streams.core.timeutil import wall_ms
from streams.kafka import fastpath
from streams.kafka.checkpoint import Checkpoint
from streams.kafka.containment import Contained, DeadLetterOut, Position
from streams.kafka.copartition import (
    Alignment,
    InOrderAcks,
    Router,
    forward_headers,
    lane_of,
    source_kind,
    source_of,
)
from streams.kafka.pipeline import Ingest, Rejected
from streams.kafka.processor import Processor
from streams.kafka.topics import TopicNames
from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)

# A topic-partition whose high watermark says "more" but that delivered nothing for this long
# is not waited for by the event-time merge (its remaining offsets are not data).
STALLED_TOPIC_MS = 30_000
# Records the event-time merge may hold of one topic-partition before the fetches leave that
# topic-partition out (back-pressure, streams/kafka/fastpath.py). Below the merge's own bound
# (10,000 per partition, beyond which it releases out of order) by more than a batch.
HOLD_BACK_AT = 2_000
END_OFFSETS_TIMEOUT_SECONDS = 30.0
# The event time a dead letter stands in the event-time merge with: it has none, and goes as
# soon as it is the first of its topic-partition.
DEAD_LETTER_TIME = -1
# Stands for the record of a forwarded input in the event-time merge (its copy is applied at
# the partition its key belongs to: ``streams/kafka/copartition.py``).
FORWARDED = "forwarded"

Forward = Callable[..., Awaitable[Any]]
"""Hand a record to the producer for the repartition topic (key, value, partition, headers)."""

Held = tuple[TP, int, Event | None, Any, str]
"""An item of the event-time merge: (topic-partition, offset, the event (None for a dead letter
or a forwarded record, acked in its turn), the record (for a dead letter should its processing
fail; ``FORWARDED`` for a forwarded one), the applied-offset mark it counts under)."""


class Consumer(Protocol):
    """What the driver needs of the consumer (``fastpath.BatchConsumer``)."""

    epoch: int
    _read_offset: Any

    @property
    def seeks(self) -> int: ...

    def partition_state(self, tp: TP) -> Any | None: ...

    async def highwaters(self, *partitions: TP) -> Any: ...

    async def read_from_beginning(self, tps: Sequence[TP]) -> None: ...

    def ack_offsets(self, tp: TP, offsets: Iterable[int]) -> object: ...


class BatchDriver:
    """Applies the worker's fetches; keeps what it knows of its partitions.

    State: ``owned`` (the input partitions assigned), ``assigned`` (between an assignment and
    the next revocation), ``stale`` (restore and check the owned partitions before the next
    batch), ``seeks_seen`` (the consumer's seek count last seen: a move means a seek came),
    ``processed`` (per input topic-partition, the last offset acked) and ``log_ends`` (its end
    offset as the broker last told it), the event-time ``merger``, the forwarding ``alignment``
    and the repartition topic's ``in_order`` acks.
    """

    def __init__(
        self,
        *,
        consumer: Consumer,
        processor: Processor,
        ingest: Ingest,
        contained: Contained,
        dead_letters: DeadLetterOut,
        router: Router,
        topics: TopicNames,
        ticks: str,
        repartition: str,
        forward: Forward,
        changelogs: Sequence[fastpath.BatchedChangelog],
        producer: Callable[[], Any],
        metrics: Metrics,
        cluster: str | None,
        wall_clock: bool,
        max_order_wait_ms: int,
        order_grace_ms: int,
        on_replaced: str,
        wall_ms: Callable[[], int] = wall_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.processor = processor
        self.ingest = ingest
        self.contained = contained
        self.dead_letters = dead_letters
        self.router = router
        self.topics = topics
        self.ticks = ticks
        self.repartition = repartition
        self.forward = forward
        self.changelogs = changelogs
        self.producer = producer
        self.metrics = metrics
        self.cluster = cluster
        self.wall_clock = wall_clock
        self.order_grace_ms = order_grace_ms
        self.on_replaced = on_replaced
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        # The repartition topic is a third input of the event-time merge where records may be
        # forwarded; with stream.repartition: off it is not read at all.
        self.applied_from: tuple[str, ...] = (
            (*topics.inputs, repartition) if router.forwards else topics.inputs
        )
        self.inputs = frozenset(topics.inputs)
        # The applied-offset marks of a customer record are kept per input: the repartition
        # topic has offsets of its own.
        self.mark_kinds = {topic: topics.kind_of(topic) for topic in topics.inputs}

        self.owned: set[int] = set()
        self.assigned = False
        self.stale = True
        self.assigned_at = monotonic()
        self.assigned_wall = wall_ms()
        self.seeks_seen: int | None = None
        self.processed: dict[tuple[str, int], int] = {}
        self.log_ends: dict[tuple[str, int], int] = {}
        self.merger: EventTimeMerger[Held] = EventTimeMerger(
            self.applied_from, wait_unknown_ms=max_order_wait_ms
        )
        self.alignment = Alignment(router.mode == "all", STALLED_TOPIC_MS, monotonic)
        self.in_order = InOrderAcks()
        # Per topic-partition: the last offset delivered, and when (wall ms).
        self.last_seen: dict[tuple[str, int], int] = {}
        self.last_delivery: dict[tuple[str, int], int] = {}

    @property
    def topics_fetched(self) -> frozenset[str]:
        """The topics whose records the consumer hands to ``handle``."""
        return frozenset((*self.applied_from, self.ticks))

    # --- a batch --------------------------------------------------------------------------

    async def handle(self, batch: fastpath.Batch, epoch: int) -> Awaitable[None] | None:
        """One fetch of the inputs and ticks: ingest, merge by event time and apply; returns the
        rest (its ``Checkpoint``: wait for the decisions' acks, write state and changelogs, ack
        the input), which runs while the next fetch is applied (``streams/kafka/fastpath.py``).

        Acks come last: an input record is acked once its state is written (decisions before
        state, see ``streams/kafka/processor.py``), so no offset commit overtakes unwritten
        state. Records held for event-time order stay unacked until a later batch releases them.
        """
        consumer = self.consumer
        if epoch != consumer.epoch:
            return None  # fetched before a rebalance: read again from the committed offsets
        seeks = consumer.seeks
        if self.seeks_seen != seeks:
            # The consumer went back to the committed offsets: every record not acked comes
            # again, so records held for event-time order and unwritten state would be applied
            # twice, out of order (the stream time runs ahead with the first copies).
            if self.seeks_seen is not None:
                self.abandon("seek")
            self.seeks_seen = seeks
        if self.stale:
            self.stale = False
            await self.processor.restore_partitions(set(self.owned))
            await self.check_logs(set(self.owned))
            # Faust resumes the inputs only once table recovery is done: this is the first
            # moment the worker processes again after an assignment.
            self.metrics.recovery_seconds.set(self.monotonic() - self.assigned_at)
        now = self.wall_ms()
        done: list[tuple[TP, int]] = []
        touched: set[int] = set()
        ticked: set[int] = set()
        for tp, records in batch:
            touched.add(tp.partition)
            if tp.topic == self.ticks:
                ticked.add(tp.partition)
                done.extend((tp, r.offset) for r in records)
                continue
            await self._take(tp, records, now)
        failed: list[tuple[Rejected, Position]] = []
        handed_on = self._release(touched, ticked, now, done, failed)
        sealed = self.processor.seal()
        for rejected, where in failed:
            await self.dead_letters.send(rejected, where)
        checkpoint = Checkpoint(
            processor=self.processor,
            sealed=sealed,
            changelogs=self.changelogs,
            producer=self.producer,
            dead_letters=self.dead_letters,
            letters=self.dead_letters.seal(),
            consumer=consumer,
            epoch=epoch,
            seeks=seeks,
            owned=lambda: self.owned,
            offsets=done,
        )
        return self._rest(checkpoint, handed_on)

    async def _take(self, tp: TP, records: Sequence[Any], now: int) -> None:
        """Decode one topic-partition's records of a fetch into the event-time merge; forward
        the misrouted ones, dead-letter the bad ones."""
        topic, partition = tp.topic, tp.partition
        merger, alignment, router = self.merger, self.alignment, self.router
        # When these records came: the fetch response that brought them (aiokafka leaves a
        # partition with buffered records out of later fetches, so its last response is
        # theirs). The other topic must have news at least as recent to count as caught up.
        known = self.fetch_state(topic, partition)
        came = min(now, known[2]) if known is not None and known[2] else now
        forwarded, forwards = topic == self.repartition, router.forwards
        mark = self.mark_kinds.get(topic, "")
        for r in records:
            lane = None
            if forwarded:
                # A lane per source topic-partition: each keeps its own order, and its own
                # applied-offset mark (offsets of one lane only grow).
                kind, source = source_kind(r.headers), source_of(r.headers)
                alignment.arrived(partition, source)
                lane = lane_of(kind, source)
                mark = LANE_PREFIX + lane
                self.in_order.fetched(tp, r.offset)
                result = self.ingest.accept(topic, partition, r.offset, r.key, r.value, kind=kind)
            else:
                result = self.ingest.accept(topic, partition, r.offset, r.key, r.value)
                if not isinstance(result, Rejected):
                    target = router.target(topic, partition, r.offset, r.key)
                    if forwards:
                        alignment.fetched(topic, partition, result.occurred_at_ms)
                    if target is not None:
                        headers = forward_headers(topic, mark, partition, r.offset)
                        await self.forward(
                            key=r.key, value=r.value, partition=target, headers=headers
                        )
                        alignment.forwarded(
                            target,
                            source_of(headers),
                            result.occurred_at_ms,
                            now,
                            target in self.owned,
                        )
                        # Acked in its turn, like a dead letter: Faust flushes the producer
                        # (the forward) before it commits this offset.
                        merger.add(
                            partition,
                            topic,
                            DEAD_LETTER_TIME,
                            came,
                            (tp, r.offset, None, FORWARDED, mark),
                        )
                        continue
            if isinstance(result, Rejected):
                await self.dead_letters.send(result, Position(topic, partition, r.offset))
                # Acked in its topic-partition's offset order, behind the records the merge
                # still holds: Faust commits up to the first gap it sees in the acked offsets,
                # and does not check the gap before the first of them (on a fresh partition,
                # or one offset wide), so an early ack could commit past them.
                merger.add(
                    partition, topic, DEAD_LETTER_TIME, came, (tp, r.offset, None, None, mark), lane
                )
            else:
                merger.add(
                    partition,
                    topic,
                    result.occurred_at_ms,
                    came,
                    (tp, r.offset, result, r, mark),
                    lane,
                )
        self.last_seen[(topic, partition)] = records[-1].offset
        self.last_delivery[(topic, partition)] = now

    def _release(
        self,
        touched: set[int],
        ticked: set[int],
        now: int,
        done: list[tuple[TP, int]],
        failed: list[tuple[Rejected, Position]],
    ) -> int:
        """Apply what the merge releases of the ``touched`` partitions (and fire due items of
        the ``ticked`` ones on the wall clock); the released offsets go to ``done``, records
        whose processing failed to ``failed``. Returns how many forwarded inputs were released
        (acked, but done only once their copies are applied)."""
        merger, processor = self.merger, self.processor
        apply, apply_time = self.contained.apply, processor.apply_time_nowait
        handed_on = 0
        aligned = self.alignment.active()
        if aligned:
            # A partition held back for another's sake goes as soon as that one catches up,
            # not at its own next fetch.
            touched.update(merger.partitions())
        for partition in sorted(touched):
            forced = merger.forced
            limit = None
            if aligned:
                since = merger.first_arrival(partition)
                if since is not None:
                    limit = self.alignment.limit(
                        partition,
                        self.owned,
                        self.topics.inputs,
                        self.unread_since(since),
                        now,
                    )
            ready = merger.release(partition, self.wall_ms(), self.pending_for(partition), limit)
            if merger.forced > forced:
                self.metrics.order_forced.labels("buffer_full").inc(merger.forced - forced)
            for tp, offset, typed, r, mark in ready:
                if r is FORWARDED:
                    handed_on += 1  # done once its copy is applied (a repartition record)
                elif typed is not None:  # else a dead letter, already sent
                    topic = tp.topic
                    rejected = apply(mark, topic, partition, offset, typed, r.key, r.value)
                    if rejected is not None:
                        failed.append((rejected, Position(topic, partition, offset)))
                    apply_time(partition)
                if tp.topic == self.repartition:
                    # Lanes release this topic-partition out of offset order: acked in order.
                    done.extend(self.in_order.release(tp, offset))
                    continue
                done.append((tp, offset))
            if partition in ticked and self.wall_clock:
                processor.apply_time_nowait(partition)
        return handed_on

    async def _rest(self, checkpoint: Checkpoint, handed_on: int) -> None:
        if not await checkpoint.commit():
            self.abandon("rebalance" if self.consumer.epoch != checkpoint.epoch else "seek")
            return
        inputs = -handed_on
        processed = self.processed
        for tp, offset in checkpoint.offsets:
            if tp.topic == self.repartition:
                inputs += 1
            elif tp.topic in self.inputs:
                inputs += 1
                where = (tp.topic, tp.partition)
                if offset > processed.get(where, -1):
                    processed[where] = offset
        self.metrics.records_done.inc(inputs)

    def abandon(self, reason: str) -> None:
        """Forget everything unwritten: its input was not acked and is read again."""
        processor, merger = self.processor, self.merger
        pending = processor.pending_partitions()
        merged = set(merger.partitions())
        held = sum(len(merger.drop(p)) for p in merged)
        self.in_order.drop()
        # Every assignment ends with a seek, usually before anything was held: say so only when
        # something was dropped.
        log.log(
            logging.INFO if held or pending else logging.DEBUG,
            "%s: %d held records and the unwritten state of partitions %s dropped; their input "
            "is read again from the committed offsets",
            reason,
            held,
            sorted(pending),
        )
        processor.drop_partitions(set(self.owned) | pending | merged)
        self.stale = True

    def held_back(self) -> set[TP]:
        """The topic-partitions the next fetches leave out (``fastpath.BatchConsumer``)."""
        # A topic that ran ahead of the other in its partition (a backlog: aiokafka hands a
        # fetch out one topic-partition at a time, and the topics' records span different
        # stretches of event time) waits in aiokafka's buffer, not in the merge.
        held = {
            TP(topic, partition)
            for partition, topic in self.merger.crowded(HOLD_BACK_AT)
            if topic != self.repartition  # forwards must come back for the alignment to move
        }
        if self.alignment.in_flight() > HOLD_BACK_AT:
            # Forwarding runs ahead of what comes back: the inputs wait in aiokafka's buffer.
            # (Not on what the merge holds: a partition's records wait there for its other
            # input topic, which must then still be fetched.)
            held.update(
                TP(topic, partition) for partition in self.owned for topic in self.topics.inputs
            )
        return held

    # --- what the consumer knows of a topic-partition -------------------------------------

    def fetch_state(self, topic: str, partition: int) -> tuple[int, int, int] | None:
        """(high watermark, fetch position, when the high watermark came) of a topic-partition
        in the consumer, if known.

        The high watermark comes from fetch responses (reliable on Kafka and Tansu, unlike
        ListOffsets), and with it the wall-clock time of that response; the position is the
        next offset aiokafka will hand out, past any transaction markers.
        """
        state = self.consumer.partition_state(TP(topic, partition))
        if state is None or state.highwater is None or not state.has_valid_position:
            return None
        return int(state.highwater), int(state.position), int(state.timestamp or 0)

    def highwater_of(self, topic: str, partition: int) -> int | None:
        known = self.fetch_state(topic, partition)
        return None if known is None else known[0]

    def read_offset(self, topic: str, partition: int) -> int | None:
        """Faust's read offset: the committed position after an assignment, then the last
        record Faust handed on."""
        # Faust's Consumer._read_offset (test_faust_privates: test_consumer_offset_bookkeeping)
        found = self.consumer._read_offset.get(TP(topic, partition))
        return None if found is None else int(found)

    def unread_since(self, since_ms: int) -> Callable[[str, int], bool]:
        """Whether a topic-partition may hold records not read yet that were there by
        ``since_ms``: the event-time merge's own question, unknown counted as yes."""

        def unread(topic: str, partition: int) -> bool:
            return self.pending_for(partition, count=False)(topic, since_ms) is not False

        return unread

    def pending_for(self, partition: int, count: bool = True) -> Callable[[str, int], bool | None]:
        """The event-time merge's question for ``partition``: whether a topic holds records
        the worker has not received yet that were on the broker by ``since_ms`` (None: not
        known yet).

        The answers are remembered for the function's life (one ``release`` of the merge, which
        asks the same question for every record of a fetch: nothing it asks about changes
        meanwhile); a forced answer is counted every time it is given, as before.
        """
        metrics, repartition = self.metrics, self.repartition
        answers: dict[tuple[str, int], tuple[bool | None, str | None]] = {}

        def pending(topic: str, since_ms: int) -> bool | None:
            found = answers.get((topic, since_ms))
            if found is None:
                found = answers[(topic, since_ms)] = answer(topic, since_ms)
            result, forced = found
            if forced is not None and count:
                metrics.order_forced.labels(forced).inc()
            return result

        def answer(topic: str, since_ms: int) -> tuple[bool | None, str | None]:
            """(the answer, the order_forced reason it counts as, if any)."""
            known = self.fetch_state(topic, partition)
            if known is None:
                return None, "unknown"
            highwater, position, answered_ms = known
            if highwater > position:
                return True, None  # on the broker or in aiokafka's buffer, not handed out yet
            grace = self.order_grace_ms
            if topic == repartition and not self.alignment.forwarding(partition):
                # The grace is for external producers, which do not keep order across topics.
                # The repartition topic's producers are the workers, and on correctly
                # partitioned input they write nothing to it: waiting the grace for it would
                # hold nearly every record for the whole grace. While no forwards are seen
                # (none by this worker, none came to this partition in Alignment's
                # ACTIVE_SECONDS) caught up is caught up. The cost: another worker's first
                # forward to this partition can be released after later records of the
                # partition; like other workers' forwards while the alignment is active, it
                # takes part in every trigger within the allowed lateness.
                grace = 0
            if answered_ms < since_ms + grace:
                # That high watermark is not news enough: aiokafka leaves a partition with
                # buffered records out of its next fetches, so it can be older than the
                # waiting record's fetch; and producers do not keep order across topics, so
                # an earlier event of this topic can reach the broker a little after the
                # waiting record (stream.order_grace_ms). Wait for news (bounded).
                return None, None
            seen = self.last_seen.get((topic, partition))
            read = self.read_offset(topic, partition)
            if seen is not None and read is not None and read > seen:
                return True, None  # handed to the stream, on its way to us
            handed_out = position - 1  # the last offset aiokafka gave to faust
            if handed_out <= (seen if seen is not None else (read or 0) - 1):
                return False, None  # everything handed out has reached us
            # aiokafka handed out more than reached us: either faust is still putting it into
            # the stream (the channel is full), or the rest are transaction markers, which
            # never arrive. Wait while the topic keeps delivering.
            quiet_since = self.last_delivery.get((topic, partition), self.assigned_wall)
            if self.wall_ms() - quiet_since < STALLED_TOPIC_MS:
                return True, None
            return False, "stalled"

        return pending

    def lag_of(self, topic: str, partition: int) -> int | None:
        """Records between the last input offset done with (or, before any since the
        assignment, the group's committed position) and the end of the partition's log."""
        known = (self.log_ends.get((topic, partition)), self.highwater_of(topic, partition))
        ends = [e for e in known if e is not None]
        if not ends:
            return None
        end = max(ends)
        done_up_to = self.processed.get((topic, partition))
        if done_up_to is None:
            # faust's read offset right after an assignment: the committed position.
            read = self.read_offset(topic, partition)
            if read is None:
                return 0 if end == 0 else None
            done_up_to = read - 1
        return max(0, end - done_up_to - 1)

    def update_gauges(self) -> None:
        """Due items and consumer lag of each owned partition."""
        metrics = self.metrics
        for p in sorted(self.owned):
            metrics.due_items.labels(str(p)).set(self.processor.due_index.size(p))
            for topic in self.topics.inputs:
                lag = self.lag_of(topic, p)
                if lag is not None:
                    metrics.consumer_lag.labels(topic, str(p)).set(lag)

    async def read_log_ends(self) -> None:
        """Read each owned input partition's end offset from the broker (for the lag, and to
        see a log that shrank under the worker: ``shrunk``)."""
        topics = self.topics
        wanted = [TP(t, p) for p in sorted(self.owned) for t in topics.inputs]
        if not wanted or not self.assigned:
            return
        try:
            # On Tansu the transport's exact ends (streams/kafka/tansu.py), not ListOffsets.
            ends = await asyncio.wait_for(
                self.consumer.highwaters(*wanted), END_OFFSETS_TIMEOUT_SECONDS
            )
        except Exception as exc:  # noqa: BLE001 - lag stays as it was; try again later
            log.debug("end offsets of %d partitions not read: %r", len(wanted), exc)
            return
        for tp, end in ends.items():
            if end is not None and tp.partition in self.owned:
                where = (tp.topic, tp.partition)
                self.log_ends[where] = int(end)
                done_to = self.processed.get(where)
                if done_to is not None and int(end) <= done_to:
                    self.shrunk(tp.topic, tp.partition, done_to, int(end))

    def shrunk(self, topic: str, partition: int, done_to: int, end: int) -> None:
        """An input log now ends before an offset this worker applied from it: the topic was
        deleted and created again, or lost its data, while the worker ran. No rebalance need
        follow, and the consumer waits past the new log's end
        for ever; the check at assignment (``check_logs``) is what recognises a replaced log,
        so the worker stops and its restart makes that check (a supervisor restarts it)."""
        message = (
            f"replaced input log: {topic}[{partition}] ends at offset {end} but this worker "
            f"applied offset {done_to} from it (deleted and created again, or its data lost, "
            "while the worker ran): stopping, so that the restart checks the state against "
            "the new log (stream.on_replaced_log)"
        )
        log.error("%s", message)
        self.metrics.log_resets.labels(topic, str(partition), "shrunk").inc()
        raise ReplacedLogError(message)

    # --- log identity -----------------------------------------------------------------------

    def _ends_key(self, kind: str) -> str:
        return REPARTITION if kind.startswith(LANE_PREFIX) else kind

    def _topic_of(self, kind: str) -> str:
        found = [t for t, k in self.mark_kinds.items() if k == kind]
        return found[0] if found else self.repartition

    async def check_logs(self, partitions: set[int]) -> None:
        """Compare the restored log marks of ``partitions`` with the broker's logs; a replaced
        log is reset (or stops the worker): ``streams/core/log_identity.py``."""
        if not partitions:
            return
        processor, cluster, topic_of = self.processor, self.cluster, self._topic_of
        checked = {topic: self.mark_kinds[topic] for topic in self.topics.inputs}
        if self.router.forwards:
            checked[self.repartition] = REPARTITION
        wanted = [TP(topic, p) for p in sorted(partitions) for topic in checked]
        ends = await self.consumer.highwaters(*wanted)
        for p in sorted(partitions):
            marks = processor.log_marks(p)
            by_kind = {
                kind: int(end)
                for topic, kind in checked.items()
                if (end := ends.get(TP(topic, p))) is not None
            }
            replaced = marks.replaced(cluster, by_kind)
            if not replaced:
                if marks.cluster is None and cluster is not None:
                    marks.cluster = cluster
                    processor.marks_changed(p)
                continue
            described = ", ".join(
                f"{topic_of(kind)}[{p}] ({why}: state applied up to offset "
                f"{marks.applied.get(kind, -1) - marks.base.get(kind, 0)} of cluster "
                f"{marks.cluster}, the log ends at {by_kind.get(self._ends_key(kind))} in "
                f"cluster {cluster})"
                for kind, why in replaced.items()
            )
            if self.on_replaced == "fail":
                message = (
                    f"replaced input log: {described}; stream.on_replaced_log is 'fail': set it "
                    "to 'reset' to keep the customer state and apply the new log's events"
                )
                log.error("%s", message)
                raise ReplacedLogError(message)
            log.error(
                "replaced input log: %s; the customer state is kept and the partition's "
                "applied-offset marks are reset, so every event of the new log is applied",
                described,
            )
            for kind, why in replaced.items():
                self.metrics.log_resets.labels(topic_of(kind), str(p), why).inc()
            marks.reset(replaced, cluster)
            processor.marks_changed(p)
            # The group's offsets belong to the old logs: the new ones are read from their start.
            await self.consumer.read_from_beginning(
                [
                    TP(topic, p)
                    for topic, kind in checked.items()
                    if kind in replaced
                    or (kind == REPARTITION and any(k.startswith(LANE_PREFIX) for k in replaced))
                ]
            )

    # --- rebalances -------------------------------------------------------------------------

    async def on_partitions_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Faust's ``on_partitions_assigned`` signal."""
        self.assigned_partitions(kwargs.get("assigned", args[0] if args else set()))

    async def on_partitions_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Faust's ``on_partitions_revoked`` signal."""
        self.revoked_partitions(kwargs.get("revoked", args[0] if args else set()))

    def assigned_partitions(self, assigned: set[TP]) -> None:
        self.metrics.rebalances.inc()
        self.assigned_at = self.monotonic()
        self.assigned_wall = self.wall_ms()
        self.alignment.assigned(self.assigned_wall)
        self.owned = {tp.partition for tp in assigned if tp.topic in self.inputs}
        self.stale = True
        self.assigned = True
        self.forget(self.owned)

    def revoked_partitions(self, revoked: set[TP]) -> None:
        self.assigned = False
        gone = {tp.partition for tp in revoked if tp.topic in self.inputs}
        self.owned = set(self.owned) - gone
        # Unwritten state and held records of revoked partitions: their input was not acked,
        # the next owner reads it again. A batch in progress sees the epoch and drops the rest.
        self.processor.drop_partitions(gone)
        for tp in revoked:
            self.merger.drop(tp.partition)
            self.alignment.drop(tp.partition)
            self.in_order.drop({tp.partition})
            self.last_seen.pop((tp.topic, tp.partition), None)
            self.last_delivery.pop((tp.topic, tp.partition), None)
        self.forget(self.owned)

    def forget(self, keep: set[int]) -> None:
        """Drop what is known of partitions not in ``keep``, their series first: another
        worker exports them now."""
        self.metrics.owned_partitions(keep, self.topics.inputs)
        for known in (self.processed, self.log_ends):
            for where in [w for w in known if w[1] not in keep]:
                del known[where]
