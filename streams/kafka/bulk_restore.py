"""Table partitions restored from their changelogs in bulk, after the assignment.

Faust restores a table partition record by record: each changelog record goes from the consumer
through its Conductor, an ``Event``, the recovery queue and the recovery loop (offset
bookkeeping, debug lines formatted whether logged or not) before a buffer of 1,000 reaches the
store, which writes them as one RocksDB ``WriteBatch``. Nearly all of the cost per record is in
that loop, not in the store (the store's ``apply_changelog_batch`` is about 1 µs a record), so a
store with a faster ``apply_changelog_batch`` would not help; reading the changelog around that
loop does.

``Recovery`` is Faust's recovery with one step added where it reads the offset each active
partition's database holds (``_build_offsets``, after the assignment and its high watermarks):
it first reads each such RocksDB partition's changelog from that offset to the high watermark
Faust just took, with a plain aiokafka consumer in large fetches, and writes each fetched chunk
of a partition as one ``WriteBatch`` that also carries the partition's offset key (Faust's
``persisted_offset``: the offset of the last record applied). The database and its offset
therefore move together, whatever stops the restore (a new rebalance cancels it, the worker
stops, the broker goes away). Faust's recovery then goes on from that offset as usual and reads
only what is left: nothing when the restore got to the high watermark.

Why here: it restores exactly the partitions this worker was assigned (a worker that lost its
disk restores its own partitions, not all of them; a takeover restores what it took over), like
Kafka Streams, which restores after the assignment. A restore before the worker joins would
have to guess its partitions; one inside the assignment callback (the store's
``assign_partitions``) runs while aiokafka sends no heartbeats, so a restore longer than the
session timeout would cost the member its place in the group. Here the heartbeats go on.

Bounds: Faust runs that step under its ``broker_request_timeout`` (90 s), and a timeout there
stops its recovery. ``Recovery._wait`` lifts that timeout for the active step (a large state
takes longer than that to restore even in bulk), and the restore bounds itself instead: it
stops when ``STALL_SECONDS`` pass without a record, and leaves the rest to Faust's own reading,
from the consistent offset reached. Should the step not be recognised (a tracer wraps it), the
timeout stays and the restore stops after ``BUDGET_SHARE`` of it. Standby partitions, memory
stores and
partitions whose database holds the high watermark already are left to Faust; a partition
whose database claims more than the changelog holds is not touched (Faust's consistency check
judges it, after ``streams/kafka/changelog_repair.py`` repaired what it found before the start).
Tombstones delete; a changelog whose head was compacted or deleted is read from its first
offset, as Faust does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import rocksdb as faust_rocksdb
from faust.tables import recovery as faust_recovery
from faust.tables.manager import TableManager as FaustTableManager
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP

from streams.kafka.tansu import FETCH_MAX_WAIT_MS

log = logging.getLogger(__name__)

# Large fetches: the consumer's own work per record is what a raw read costs anyway, and fewer,
# larger responses spend less on requests (Tansu also lists a partition's batches per fetch).
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 8 * 1024 * 1024
MAX_RECORDS = 50_000
# The share of Faust's broker_request_timeout the bulk restore may take when that timeout
# applies, and how long it waits for records before it leaves the rest to Faust (docstring).
BUDGET_SHARE = 0.5
STALL_SECONDS = 60.0


class Recovery(faust_recovery.Recovery):
    """Faust's table recovery with a bulk restore of the active RocksDB partitions first."""

    _unbounded = False  # the active offsets step runs without Faust's timeout

    async def _wait(self, coro: Any, timeout: Any = None) -> None:
        code, frame = getattr(coro, "cr_code", None), getattr(coro, "cr_frame", None)
        if (
            code is Recovery._build_offsets.__code__
            and frame is not None
            and frame.f_locals.get("title") == "active"
        ):
            # Not yet started: its arguments are its frame's locals.
            self._unbounded = True
            try:
                return await super()._wait(coro, None)
            finally:
                self._unbounded = False
        return await super()._wait(coro, timeout)

    async def _build_offsets(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        if title == "active" and tps:
            await self.restore_in_bulk(tps, destination)
        await super()._build_offsets(consumer, tps, destination, title)

    async def restore_in_bulk(self, tps: Iterable[TP], offsets: Any) -> int:
        """Restore ``tps`` to their high watermarks; ``offsets`` (Faust's offsets to read on
        from) learns where each got to. Returns the records applied."""
        todo: dict[TopicPartition, tuple[Any, int, int]] = {}
        for tp in tps:
            table: Any = self.tp_to_table.get(tp)
            store = None if table is None else table.data
            if not isinstance(store, faust_rocksdb.Store):
                continue  # a memory store: Faust's recovery
            highwater = self.active_highwaters.get(tp)
            persisted = store.persisted_offset(tp)
            start = 0 if persisted is None else persisted + 1
            end = -1 if highwater is None else highwater + 1  # Faust keeps the last offset
            if start < end:
                todo[TopicPartition(tp.topic, tp.partition)] = (store, start, end)
        if not todo:
            return 0
        deadline = None
        if not self._unbounded:
            deadline = time.monotonic() + float(self.app.conf.broker_request_timeout) * BUDGET_SHARE
        applied = await restore(self.app, todo, deadline)
        for tp in todo:
            store = todo[tp][0]
            persisted = store.persisted_offset(TP(tp.topic, tp.partition))
            if persisted is not None:
                offsets[TP(tp.topic, tp.partition)] = persisted
        return applied


class TableManager(FaustTableManager):
    """Faust's table manager with the bulk-restoring ``Recovery``."""

    @property
    def recovery(self) -> Any:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


async def restore(
    app: Any, todo: dict[TopicPartition, tuple[Any, int, int]], deadline: float | None
) -> int:
    """Apply each partition's changelog records in [start, end) to its RocksDB store
    (``todo``: store, start, end), stopping at ``deadline`` or after ``STALL_SECONDS`` without
    a record; returns the records applied."""
    conf = app.conf
    consumer = AIOKafkaConsumer(
        bootstrap_servers=server_list(conf.broker, 9092),
        client_id=f"{conf.broker_client_id}-bulk-restore",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        request_timeout_ms=int(conf.broker_request_timeout * 1000),
        **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
    )
    started = time.monotonic()
    applied = dict.fromkeys(todo, 0)
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, (_, start, _) in todo.items():
            consumer.seek(tp, start)
        left = dict(todo)
        last_records = time.monotonic()
        while left:
            now = time.monotonic()
            if (deadline is not None and now >= deadline) or now - last_records > STALL_SECONDS:
                break
            fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=MAX_RECORDS)
            if fetched:
                last_records = time.monotonic()
            for tp, records in fetched.items():
                store, _, end = todo[tp]
                batch, last = rocksdict.WriteBatch(raw_mode=True), None
                for record in records:
                    if record.offset >= end:
                        break  # beyond the high watermark Faust took: Faust's to read
                    if record.value is None:
                        batch.delete(record.key)
                    else:
                        batch.put(record.key, record.value)
                    last = record.offset
                    applied[tp] += 1
                if last is not None:
                    batch.put(store.offset_key, str(last).encode())
                    store._db_for_partition(tp.partition).write(batch)
            for tp in list(left):
                if await consumer.position(tp) >= left[tp][2]:
                    del left[tp]
        if left:
            log.warning(
                "bulk restore: stopped after %.0f s with %d partitions short of their high "
                "watermark; Faust's recovery reads the rest",
                time.monotonic() - started,
                len(left),
            )
    finally:
        await consumer.stop()
    total = sum(applied.values())
    seconds = time.monotonic() - started
    log.info(
        "bulk restore: %d changelog records of %d partitions in %.2f s (%.0f records/s, %s)",
        total,
        len(applied),
        seconds,
        total / seconds if seconds else 0.0,
        "Faust's timeout applied" if deadline is not None else "without Faust's timeout",
    )
    return total
