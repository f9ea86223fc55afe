"""Table partitions restored from their changelogs in bulk, when they are assigned.

Faust restores a table partition record by record: each changelog record goes from the consumer
through its Conductor, an ``Event``, the recovery queue and the recovery loop (offset
bookkeeping, debug lines formatted whether logged or not) before a buffer of 1,000 reaches the
store, which then writes them as one RocksDB ``WriteBatch``. Nearly all of the cost per record is
in that loop, not in the store, so a store with a faster ``apply_changelog_batch`` would not
help; reading the changelog around that loop does.

``Store`` is Faust's RocksDB store with one addition: when a rebalance assigns it active
partitions (not standbys), it first opens their databases as Faust does, then reads each one's
changelog from the offset the database holds to the end with a plain aiokafka consumer in large
fetches, and writes every fetched chunk of a partition as one ``WriteBatch`` that also carries
the partition's offset key (Faust's ``persisted_offset``: the offset of the last record
applied). The database and its offset therefore move together, also when the worker stops
in the middle. Faust's own recovery then starts from that offset and reads only what was
written since (the tail). Restoring after the assignment, like Kafka Streams, restores exactly
the partitions this worker owns: a worker that lost its disk restores its own partitions, not
all of them, and a takeover after a failover restores the partitions taken over.

What does not change: standby partitions are left to Faust (record by record, as before); a
partition whose database already holds the changelog's end, or claims more than the changelog
holds (``streams/kafka/changelog_repair.py`` handles that before the worker starts; Faust raises
on what is left), is not touched; tombstones delete; a changelog whose head was compacted or
deleted is read from its first offset, as Faust does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP

from streams.kafka.tansu import FETCH_MAX_WAIT_MS

log = logging.getLogger(__name__)

SCHEME = "rocksdb-bulk"
"""The store URL scheme (``rocksdb-bulk://``) that selects ``Store``."""

# Large fetches: the consumer's per-record work is what a raw read costs anyway, and fewer,
# larger responses spend less of it on requests (Tansu also lists a partition's batches on
# every fetch).
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 8 * 1024 * 1024
MAX_RECORDS = 50_000
# Without a fetch response for this long the restore stops and leaves the rest to Faust's
# recovery (which then reads more, but from a consistent offset).
STALL_SECONDS = 60.0

_began: dict[int, float] = {}


def restore_began(app: Any) -> float | None:
    """When the last assignment's bulk restore began (``time.monotonic()``), once; None when
    none ran since the last call. The recovery gauge counts from there: the restore runs
    before Faust announces the assignment."""
    return _began.pop(id(app), None)


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store that restores newly assigned active partitions in bulk."""

    async def assign_partitions(self, table: Any, tps: set[TP], generation_id: int = 0) -> None:
        began = time.monotonic()
        await super().assign_partitions(table, tps, generation_id)
        standbys = self.app.assignor.assigned_standbys()
        topics = table.changelog_topic.topics
        mine = sorted(
            tp
            for tp in tps
            if tp.topic in topics and tp not in standbys and tp.partition in self._dbs
        )
        if not mine:
            return
        _began.setdefault(id(self.app), began)
        await self.restore(mine)

    async def restore(self, tps: Collection[TP]) -> int:
        """Bring each partition's database up to its changelog's end; returns records applied."""
        conf = self.app.conf
        consumer = AIOKafkaConsumer(
            bootstrap_servers=server_list(conf.broker, 9092),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            request_timeout_ms=int(conf.broker_request_timeout * 1000),
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )
        started = time.monotonic()
        await consumer.start()
        try:
            return await self._restore(consumer, tps, started)
        finally:
            await consumer.stop()

    async def _restore(
        self, consumer: AIOKafkaConsumer, tps: Collection[TP], started: float
    ) -> int:
        existing = await consumer.topics()
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps if tp.topic in existing]
        if not wanted:
            return 0
        firsts = await consumer.beginning_offsets(wanted)
        # On Tansu ListOffsets may stop short of the last batch's tail: that only makes a
        # partition look one batch shorter, and what is left is Faust's tail to read.
        ends = await consumer.end_offsets(wanted)
        todo: dict[TopicPartition, int] = {}
        for tp in wanted:
            persisted = self.persisted_offset(TP(tp.topic, tp.partition))
            start = 0 if persisted is None else persisted + 1
            if start >= ends[tp]:
                continue  # up to date (or ahead: not ours to judge, see the module docstring)
            todo[tp] = max(start, firsts[tp])
        if not todo:
            return 0
        consumer.assign(list(todo))
        for tp, offset in todo.items():
            consumer.seek(tp, offset)
        applied: dict[TopicPartition, int] = dict.fromkeys(todo, 0)
        offset_key = self.offset_key
        last_data = time.monotonic()
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=1000, max_records=MAX_RECORDS)
            for tp, records in fetched.items():
                if not records:
                    continue
                batch = rocksdict.WriteBatch(raw_mode=True)
                for record in records:
                    if record.value is None:
                        batch.delete(record.key)
                    else:
                        batch.put(record.key, record.value)
                batch.put(offset_key, str(records[-1].offset).encode())
                self._db_for_partition(tp.partition).write(batch)
                applied[tp] += len(records)
            if fetched:
                last_data = time.monotonic()
            for tp in list(todo):
                # The fetch response's high watermark: exact on Tansu too.
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    del todo[tp]
            if todo and time.monotonic() - last_data > STALL_SECONDS:
                log.warning(
                    "bulk restore: no records from %s for %.0f s; Faust's recovery reads the rest",
                    sorted(f"{tp.topic}[{tp.partition}]" for tp in todo),
                    STALL_SECONDS,
                )
                break
        total = sum(applied.values())
        seconds = time.monotonic() - started
        log.info(
            "bulk restore: %d changelog records of %d partitions of %s in %.2f s (%.0f records/s)",
            total,
            len(applied),
            ", ".join(sorted({tp.topic for tp in applied})),
            seconds,
            total / seconds if seconds else 0.0,
        )
        return total


STORES.aliases[SCHEME] = f"{__name__}:Store"
