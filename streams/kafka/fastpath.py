"""The worker's input, a fetch at a time: Faust's consumer with a batch hand-over.

Faust hands every record to an agent through a task pair, the Conductor, a channel and the
stream iterator, which costs far more than reading the record (docs/shell.md). Faust stays in
charge of everything else here (group membership, rebalances, table recovery, standby tables,
offset commits); only the hand-over of the worker's own topics changes: the records of each
fetch go to one ``BatchHandler`` call, as aiokafka returned them, per topic-partition in offset
order. Records of every other topic (table changelogs in recovery) take Faust's usual path.

Rebalances. The hand-over must neither apply a record twice in one assignment nor skip one:

- A fetch that straddles a seek (Faust seeks every partition to its committed offset when an
  assignment's recovery is done) may hold records from before the seek. Its records of the
  worker's topics are dropped, and the consumer seeks to the committed offsets once more, so
  what it held is read again in order. Its changelog records (standby tables) take Faust's
  path as usual: the seek does not move the changelogs, so a dropped changelog record would
  never come again, and a standby would skip it while its persisted offset moved past it.
- A fetch taken while the flow is stopped (a revocation is under way) is dropped whole, as
  Faust does; the recovery that follows the assignment seeks the inputs and the changelogs.
- Whatever is dropped while the flow runs is followed by a seek, also while Faust still counts
  the app as rebalancing: that lasts until after the recovery's own seek, so a fetch that
  straddled that seek would otherwise never be read again. A seek does not move the
  changelogs (they have no committed offsets), so an extra one during recovery only moves the
  inputs, which the recovery's own seek moves again.
- Every revocation and every assignment moves the consumer's ``epoch``. A fetch whose epoch
  moved before it reached the handler is dropped and read again: after the seek that ends the
  rebalance, or, when that seek came already, after one more (its read offsets were set after
  that seek); a batch in progress compares its epoch with the consumer's before it writes
  state and before it acks (``streams/kafka/checkpoint.py``), so nothing is acked for a
  partition no longer ours.

Overlap. A handler may return the rest of its batch (``BatchHandler``): that runs while the next
fetch is handed over, so a batch's broker and Redis round trips overlap the next batch's work.
At most one rest runs at a time, in batch order; a batch of a new epoch or after a seek, a seek
and the stop wait for the last rest first (before the epoch and seek checks, so that no await
separates those from the handler's own check): a rest from before a rebalance or a seek drops
what its batch held, and a later batch's work must not be in reach of that. A rest that fails
stops the fetch loop with its error, as a failing handler does.

Seeks. Every seek to the committed offsets moves ``seeks``, when it starts and when it ends
(Faust's recovery resumes the partitions just before it seeks, so a fetch can come in between):
everything not acked is read again, so a handler drops what it holds of those records
(``streams/kafka/driver.py`` does so when it sees the count move), or the re-read copies would
queue behind the held ones, out of order.

Acks go straight to Faust's offset bookkeeping (``ack_offset``), as ``Consumer.ack`` does for a
message, without building Faust message objects for our records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, cast

from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streams.kafka.stores import TableStore

logger = logging.getLogger(__name__)

Batch = Sequence[tuple[TP, Sequence[Any]]]
"""Per topic-partition, aiokafka ``ConsumerRecord``s in offset order."""

BatchHandler = Callable[[Batch, int], Awaitable[Awaitable[None] | None]]
"""Called with one fetch's records of the worker's topics and the consumer's rebalance epoch
they were fetched in (``BatchConsumer.epoch``); the fetch loop waits for it before it fetches
again. It may return the rest of the batch's work (waiting for acknowledgements, writing,
acking): the loop runs that as a task while it fetches and hands over the next batch, and
waits for it before it starts the next batch's rest (``_Tail``)."""

FETCH_TIMEOUT_SECONDS = 1.0


class _Tail:
    """The rest of the last batch (``BatchHandler``) running as a task, with its epoch."""

    def __init__(self) -> None:
        self.task: asyncio.Future[None] | None = None
        self.epoch = 0
        self.seeks = 0

    def follows(self, epoch: int, seeks: int) -> bool:
        """Whether a batch fetched at ``epoch``/``seeks`` may start while the rest runs: only
        a batch of the same assignment and seek. A rest from before a seek or a rebalance
        drops what it holds (``streams/kafka/driver.py``); that must not reach a later
        batch's work."""
        return self.task is None or (self.epoch == epoch and self.seeks == seeks)

    async def then(self, rest: Awaitable[None] | None, epoch: int, seeks: int = 0) -> None:
        """Wait for the running rest (raises its failure), then start ``rest``."""
        try:
            await self.wait()
        except BaseException:
            close = getattr(rest, "close", None)
            if close is not None:
                close()  # never started: its batch is read again
            raise
        if rest is not None:
            self.task, self.epoch, self.seeks = asyncio.ensure_future(rest), epoch, seeks

    def raise_failure(self) -> None:
        """Raise the failure of a rest that has ended."""
        task = self.task
        if task is not None and task.done():
            self.task = None
            task.result()

    async def wait(self) -> None:
        """Wait for the running rest; raises its failure. A cancelled wait leaves it running
        (the loop's stop waits for it: ``wait_quietly``)."""
        task = self.task
        if task is not None:
            await asyncio.shield(task)
            self.task = None

    async def wait_quietly(self) -> None:
        """Wait for the running rest at a stop, whatever it raises (its input is read again)."""
        task, self.task = self.task, None
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except BaseException as exc:  # noqa: BLE001 - stopping; the input was not acked
            logger.info("the last batch did not finish at the stop: %r", exc)


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer; records of ``batch_topics`` go to ``batch_handler`` per fetch.

    Without a handler (``batch_handler`` None) it is Faust's consumer, unchanged.
    """

    batch_handler: BatchHandler | None = None
    batch_topics: frozenset[str] = frozenset()
    held_back: Callable[[], Collection[TP]] | None = None
    epoch = 0  # moved by every revocation and assignment
    _seeks = 0

    def use_batches(
        self,
        topics: frozenset[str],
        handler: BatchHandler,
        held_back: Callable[[], Collection[TP]] | None = None,
    ) -> None:
        """Hand ``topics``' records to ``handler`` a fetch at a time. ``held_back`` names the
        topic-partitions the handler has enough of for now: the next fetches leave them out."""
        self.batch_topics = topics
        self.batch_handler = handler
        self.held_back = held_back

    # Faust's private fetch (test_faust_privates: test_consumer_methods_the_batch_loop_overrides)
    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # Partitions left out stay buffered in aiokafka, which fetches no more of them until
        # their buffer is taken: back-pressure without a pause (a Faust pause drops what our
        # fetch loop receives of a paused partition) and without reading anything twice.
        held_back = self.held_back
        if held_back is not None and active_partitions:
            held = held_back()
            if held:
                wanted = {tp for tp in active_partitions if tp not in held}
                if wanted:  # never empty: aiokafka reads "no partitions" as all of them
                    active_partitions = wanted
        return await super()._getmany(active_partitions, timeout)

    # test_faust_privates: test_consumer_methods_the_batch_loop_overrides
    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.epoch += 1
        await super().on_partitions_revoked(revoked)

    # test_faust_privates: test_consumer_methods_the_batch_loop_overrides
    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self.epoch += 1
        await super().on_partitions_assigned(assigned, generation_id)

    # test_faust_privates: test_consumer_methods_the_batch_loop_overrides
    async def perform_seek(self) -> None:
        # Moved before and after: a fetch handed out while the seek is under way (Faust's
        # recovery resumes the partitions just before it seeks) is from before it.
        self._seeks += 1
        await super().perform_seek()
        # aiokafka's seek_to_committed leaves a partition without a committed offset (none, or
        # 0) where its fetcher is: what was read from it would not come again. Those of ours
        # go back to their beginning (the worker's offset reset is "earliest").
        # test_faust_privates: test_consumer_offset_bookkeeping, test_consumer_thread_methods
        committed = self._committed_offset
        uncommitted = [
            tp
            for tp in self.assignment()
            if tp.topic in self.batch_topics and not committed.get(tp)
        ]
        if uncommitted:
            await self._thread.seek_to_beginning(
                *(TopicPartition(tp.topic, tp.partition) for tp in uncommitted)
            )
            for tp in uncommitted:
                self._read_offset[tp] = None
        self._seeks += 1

    async def read_from_beginning(self, tps: Collection[TP]) -> None:
        """Read ``tps`` from the beginning of their logs, forgetting their committed offsets:
        the logs were replaced (``streams/core/log_identity.py``), and offsets committed in the old
        ones mean nothing in the new (a committed offset past the new end would hold the
        consumer there for ever). Faust's bookkeeping of the partition starts over, as for a
        partition without a committed offset (``perform_seek``)."""
        if not tps:
            return
        # test_faust_privates: test_consumer_offset_bookkeeping, test_consumer_thread_methods
        for tp in tps:
            self._committed_offset[tp] = None
            self._read_offset[tp] = None
            self._acked[tp] = []
            self._acked_index[tp] = set()
        await self._thread.seek_to_beginning(
            *(TopicPartition(tp.topic, tp.partition) for tp in tps)
        )

    def partition_state(self, tp: TP) -> Any | None:
        """aiokafka's fetch state of an assigned topic-partition (position, high watermark and
        when it came), or None: not started, or not assigned. Read across Faust's consumer
        thread: plain ints, no locking needed."""
        try:
            # test_faust_privates: test_consumer_thread_methods, test_aiokafka_partition_state
            consumer = self._thread._ensure_consumer()
            assignment = consumer._subscription.subscription.assignment
            return assignment.state_value(TopicPartition(tp.topic, tp.partition))
        except Exception:  # noqa: BLE001 - not started, or the partition just moved
            return None

    async def _read_again(self, tail: _Tail) -> None:
        """After a drop: once the last rest is done, back to the committed offsets (if the flow
        runs; a stopped flow is sought by the recovery that follows)."""
        await tail.wait()
        if self.flow_active:
            await self.perform_seek()

    async def _rewind(self, first: dict[TP, int]) -> None:
        """Seek changelog partitions paused since their records were fetched back to the first
        of those records (never forward).

        Faust pauses a standby's changelog partitions between its seek to the standby offsets
        and their resumption, and a fetch can return their records in between: dropped (as
        Faust's own loop drops records of paused partitions), they would never come again, and
        the standby's persisted offset would later pass them. Reading a changelog again is safe:
        Faust's recovery skips offsets it has seen, and replays in order otherwise.
        """
        back: dict[TP, int] = {}
        for tp, offset in first.items():
            state = self.partition_state(tp)
            if state is not None and state.has_valid_position and state.position > offset:
                back[tp] = offset
        if back:
            logger.info("changelog records of paused partitions read again: %s", back)
            # test_faust_privates: test_consumer_thread_methods
            await self._thread.seek_wait(back)

    @property
    def seeks(self) -> int:
        """Moved by every seek to the committed offsets: everything not acked before it is read
        again, so whatever a handler holds of it (records waiting for their turn, unwritten
        state) must go."""
        return self._seeks

    def ack_offset(self, tp: TP, offset: int) -> bool:
        """Mark ``offset`` of ``tp`` processed: Faust commits up to the first gap in these.

        Faust's ``Consumer.ack`` for a message at ``offset``, without the message (our records
        have no Faust message, so none waits in ``_unacked_messages``); True when newly acked.
        """
        return self.ack_offsets(tp, (offset,)) == 1

    def ack_offsets(self, tp: TP, offsets: Iterable[int]) -> int:
        """``ack_offset`` for each of ``offsets`` of ``tp``, under one take of the ack lock
        and with one wake-up; returns how many were newly acked."""
        # Consumer.ack's bookkeeping (test_faust_privates: test_ack_offset_is_faust_ack)
        newly = 0
        with ack_lock:
            if not self.app.topics.acks_enabled_for(tp.topic):
                return 0
            try:
                committed = self._committed_offset[tp]
                acked_index, acked = self._acked_index[tp], self._acked[tp]
                for offset in offsets:
                    if (committed is None or offset >= committed) and offset not in acked_index:
                        acked_index.add(offset)
                        acked.append(offset)
                        newly += 1
                self._n_acked += newly
            finally:
                notify(self._waiting_for_ack)
        return newly

    # Replaces Faust's fetch loop; the privates it uses, by test in test_faust_privates:
    # test_consumer_methods_the_batch_loop_overrides, test_consumer_methods_the_batch_loop_calls,
    # test_consumer_offset_bookkeeping.
    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - run by faust
        handler = self.batch_handler
        if handler is None:
            await super()._drain_messages(fetcher)
            return
        ours = self.batch_topics
        callback = self.callback
        app = self.app
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        to_message = self._to_message
        tail = _Tail()
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                tail.raise_failure()
                self.diag.set_flag(CONSUMER_FETCHING)
                seeks, epoch = self._seeks, self.epoch
                records, _ = await self._wait_next_records(FETCH_TIMEOUT_SECONDS)
                await asyncio.sleep(0)
                if records is None or self.should_stop or not records:
                    continue
                if not self.flow_active:
                    # Fetched across a revocation: dropped whole, as Faust does; the recovery
                    # after the assignment seeks the inputs and the changelogs.
                    await self._read_again(tail)
                    continue
                # Fetched across a seek to the committed offsets: our records may be from
                # before it, and are read again after one more seek (below). The changelog
                # records (standby tables) are not: nothing seeks those back, so they take
                # Faust's path as usual, or a standby would skip them for good.
                straddled = self._seeks != seeks
                active = self._get_active_partitions()
                buffered = self._buffered_partitions
                batch: list[tuple[TP, Sequence[Any]]] = []
                paused: dict[TP, int] = {}
                for tp, tp_records in records.items():
                    if active is not None and tp not in active and tp not in buffered:
                        if tp.topic not in ours:
                            paused[tp] = tp_records[0].offset
                        continue
                    if straddled and tp.topic in ours:
                        continue
                    last = read_offset[tp]
                    if last is not None:
                        tp_records = [r for r in tp_records if r.offset >= last]
                    if not tp_records:
                        continue
                    first = tp_records[0].offset
                    if last and first - last > 1 and acks_enabled_for(tp.topic):
                        await self._add_gap(tp, last + 1, first)
                    if tp.topic in ours:
                        read_offset[tp] = tp_records[-1].offset
                        batch.append((tp, tp_records))
                        continue
                    for record in tp_records:  # Faust's own path (table changelogs)
                        await self.wait_first(
                            callback(to_message(tp, record)), self.suspend_flow.wait()
                        )
                        read_offset[tp] = record.offset
                if paused:
                    await self._rewind(paused)
                if straddled:
                    await self._read_again(tail)
                elif batch:
                    if not tail.follows(epoch, seeks):
                        # The rest of a batch from before a rebalance or a seek ends first:
                        # it drops what it holds, which must not reach this batch's work.
                        # Waiting can let a rebalance or a seek through, so it comes before
                        # the checks below: no await may separate them from the handler's own.
                        await tail.wait()
                    if self.epoch == epoch and self._seeks == seeks:
                        await tail.then(await handler(batch, epoch), epoch, seeks)
                    else:
                        # A rebalance and its seek came while the changelog records above
                        # were delivered (or the last rest ended): read offsets set after that
                        # seek are stale.
                        await self._read_again(tail)
                commit_every = self._commit_every
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                self.diag.unset_flag(CONSUMER_FETCHING)
            await tail.wait_quietly()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                await tail.wait_quietly()
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                await tail.wait_quietly()
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the batch consumer (Apache Kafka)."""

    Consumer = cast(Any, BatchConsumer)


class _AtPartition:
    """A changelog as one partition reads and writes it (``BatchedChangelog.at``)."""

    __slots__ = ("changelog", "partition")

    def __init__(self, changelog: BatchedChangelog, partition: int) -> None:
        self.changelog = changelog
        self.partition = partition

    def get(self, key: bytes) -> bytes | None:
        return self.changelog.get(key, self.partition)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.changelog.put(self.partition, key, value)

    def __delitem__(self, key: bytes) -> None:
        self.changelog.delete(self.partition, key)

    def write_many(self, items: list[tuple[bytes, bytes | None]]) -> None:
        self.changelog.write_many(self.partition, items)


class BatchedChangelog:
    """A Faust table written to its store at once and to its changelog in record batches.

    A Faust table sends one changelog record per write, each with its own future, buffer entry
    and callback, a large share of the worker's CPU at its write rates (docs/shell.md). Here
    a write names its partition, goes to the table's store (memory, or that partition's RocksDB
    database: ``streams/kafka/stores.py``) and is kept; ``send`` then produces each partition's
    writes to the same changelog partition as a few record batches, one future each. The offset
    commit stays behind them: Faust flushes the producer before it commits, and the worker acks
    input only after its writes were handed over. RocksDB stores learn the changelog offset
    they hold once a batch is acknowledged, like Faust's own ``_on_changelog_sent``, so a warm
    restart reads only what is newer.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self._table_store: TableStore | None = None  # table.data is made when first used
        self._views: dict[int, _AtPartition] = {}
        self._writes: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self._failure: BaseException | None = None
        self._in_flight: list[asyncio.Future[Any]] = []

    def has_writes(self) -> bool:
        """Whether writes wait for ``send``."""
        return bool(self._writes)

    @property
    def _store(self) -> TableStore:
        store = self._table_store
        if store is None:
            store = self._table_store = TableStore(self.table.data)
        return store

    def get(self, key: bytes, partition: int | None = None) -> bytes | None:
        """The value of ``key`` as ``partition`` holds it (None: any partition's)."""
        return self._store.get(key, partition)

    def items(self) -> Any:
        return self.table.items()

    def at(self, partition: int) -> _AtPartition:
        """This changelog as ``partition`` reads and writes it."""
        view = self._views.get(partition)
        if view is None:
            view = self._views[partition] = _AtPartition(self, partition)
        return view

    def _pending_of(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        writes = self._writes.get(partition)
        if writes is None:
            writes = self._writes[partition] = []
        return writes

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Write ``key`` in ``partition``: to the store now, to the changelog at ``send``."""
        self._store.set(partition, key, value)
        self._pending_of(partition).append((key, value))

    def delete(self, partition: int, key: bytes) -> None:
        """Delete ``key`` in ``partition``: from the store now, in the changelog at ``send``."""
        self._store.delete(key, partition)
        self._pending_of(partition).append((key, None))

    def write_many(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
        """``put`` (a value) or ``delete`` (None) each of ``items`` in ``partition``, in that
        order: to the store now in one write, to the changelog at ``send``."""
        self._store.write_many(partition, items)
        self._pending_of(partition).extend(items)

    async def send(self, producer: Any) -> None:
        """Produce the writes so far to the changelog; raises an earlier batch's failure."""
        if self._failure is not None:
            raise self._failure
        self._in_flight = [future for future in self._in_flight if not future.done()]
        if not self._writes:
            return
        writes, self._writes = self._writes, {}
        topic = self.table.changelog_topic.get_topic_name()
        for partition, records in writes.items():
            batch, count = producer.create_batch(), 0
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await self._send(producer, batch, count, topic, partition)
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
            await self._send(producer, batch, count, topic, partition)

    async def _send(
        self, producer: Any, batch: Any, count: int, topic: str, partition: int
    ) -> None:
        future = await producer.send_batch(batch, topic, partition=partition)
        self._in_flight.append(future)
        store = self.table.data

        def sent(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                return
            failure = done.exception()
            if failure is not None:
                self._failure = failure
                return
            meta = done.result()
            store.set_persisted_offset(TP(topic, partition), meta.offset + count - 1)

        future.add_done_callback(sent)

    async def delivered(self) -> None:
        """Wait until the broker acknowledged every batch sent so far; raises a failure."""
        in_flight, self._in_flight = self._in_flight, []
        for future in in_flight:
            await future


async def send_in_order(
    producer: Any, first: BatchedChangelog, then: Sequence[BatchedChangelog]
) -> None:
    """Produce ``first``'s writes, and ``then``'s only once the broker has all of ``first``'s.

    A changelog's writes of one partition go out as several record batches, and batches of
    different topics travel in separate requests: without an order, a crash can leave the
    due-index or stream-time changelog holding a write whose customer record never arrived.
    The next owner would then restore a record whose due item is missing from the index (it
    fires only at the customer's next event), or a stream time ahead of the records. Customer
    records first, then what is derived from them, makes every crash leave the derived tables
    behind the records, and behind is repaired: replayed input re-derives the due entry, an
    old due entry fires on a record that already fired and is re-derived, stream time moves on.
    """
    await first.send(producer)
    if not any(changelog.has_writes() for changelog in then):
        return
    await first.delivered()
    for changelog in then:
        await changelog.send(producer)
