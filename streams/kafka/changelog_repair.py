"""Local table state against its changelog, checked before the worker starts.

A RocksDB store remembers the last changelog offset it holds. When the changelog holds less
(a fresh broker, a recreated or emptied changelog topic, a broker that lost data), Faust's
recovery stops the worker with ``ConsistencyError`` ("persisted offset ... is higher than the
last offset in that topic"), and a restart meets the same state: the worker never starts. Kafka
Streams treats such a store as a corrupted task. Here, per table partition found on disk:

- the changelog is **empty** (``ChangelogVerdict.EMPTIED``): the local state is all there is of
  it, so it is written back to the changelog (every key, in batches) and the store's offset is
  set to the end of what was written. Nothing is thrown away, and whoever owns the partition
  next restores it from the changelog.
- the changelog **ends before** the store's offset (``ChangelogVerdict.BEHIND``): the two
  disagree about history, and only the changelog is shared with the other workers, so the
  local partition is dropped and restored from the changelog, as Kafka Streams wipes a
  corrupted task. The input behind it is read again from the committed offsets.

Each is an ERROR line and a ``lifecycle_log_resets_total`` sample; with
``stream.on_replaced_log: fail`` the worker refuses to start instead.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from streams.core.errors import ReplacedLogError
from streams.core.log_identity import ChangelogVerdict, judge_changelog
from streams.kafka import tansu
from streams.kafka.security import KafkaSecurity, aiokafka_kwargs
from streams.kafka.topics import ensure_topics

log = logging.getLogger(__name__)

WRITE_BACK_BATCH = 1_000


@dataclass(frozen=True)
class Repair:
    """What was found (and done) for one table partition."""

    topic: str
    partition: int
    verdict: ChangelogVerdict
    persisted: int | None
    end: int
    written: int = 0


async def changelog_ends(
    bootstrap_servers: str,
    security: KafkaSecurity,
    partitions: Iterable[TP],
    exact_on_tansu: bool,
) -> dict[TP, int]:
    """The end offset (next offset to be written) of each partition; 0 for a missing topic."""
    wanted = list(partitions)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, **aiokafka_kwargs(security)
    )
    await consumer.start()
    try:
        existing = await consumer.topics()
        present = [tp for tp in wanted if tp.topic in existing]
        ends = {tp: 0 for tp in wanted}
        if not present:
            return ends
        listed = await consumer.end_offsets(
            [TopicPartition(tp.topic, tp.partition) for tp in present]
        )
        answers = {tp: int(end) for tp, end in listed.items()}
        if exact_on_tansu:
            # ListOffsets on the test broker stops short of the last batch's tail.
            nonzero = {tp: end for tp, end in answers.items() if end > 0}
            answers.update(
                await tansu.fetch_highwaters(consumer, nonzero, tansu.PROBE_TIMEOUT_SECONDS)
            )
        ends.update({TP(tp.topic, tp.partition): end for tp, end in answers.items()})
        return ends
    finally:
        await consumer.stop()


async def _write_back(
    producer: AIOKafkaProducer, topic: str, partition: int, items: Iterable[tuple[bytes, bytes]]
) -> tuple[int, int]:
    """Produce every item to the changelog partition; returns (count, last offset)."""
    count, last, pending = 0, -1, []
    for key, value in items:
        pending.append(await producer.send(topic, value, key=key, partition=partition))
        count += 1
        if len(pending) >= WRITE_BACK_BATCH:
            for future in pending:
                last = max(last, (await future).offset)
            pending = []
    for future in pending:
        last = max(last, (await future).offset)
    return count, last


async def repair_changelogs(
    tables: Iterable[Any],
    partitions: int,
    *,
    bootstrap_servers: str,
    security: KafkaSecurity,
    replication_factor: int,
    exact_on_tansu: bool,
    on_replaced: str,
) -> list[Repair]:
    """Check every RocksDB table partition on disk against its changelog, and repair it (see
    the module docstring). Returns what was not OK; raises ``ReplacedLogError`` when
    ``on_replaced`` is ``fail`` and something was not OK."""
    found: list[tuple[Any, int, str, int | None]] = []
    for table in tables:
        store = table.data
        topic = table.changelog_topic.get_topic_name()
        for p in range(partitions):
            path = store.partition_path(p)
            if not path.exists():
                continue
            db = store.rocksdb_options.open(path)
            try:
                raw = db.get(store.offset_key)
            finally:
                db.close()
            found.append((table, p, topic, None if raw is None else int(raw)))
    if not found:
        return []
    ends = await changelog_ends(
        bootstrap_servers,
        security,
        {TP(topic, p) for _, p, topic, _ in found},
        exact_on_tansu,
    )
    repairs: list[Repair] = []
    todo: list[tuple[Any, Repair]] = []
    for table, p, topic, persisted in found:
        end = ends[TP(topic, p)]
        verdict = judge_changelog(persisted, end)
        if verdict is not ChangelogVerdict.OK:
            todo.append((table, Repair(topic, p, verdict, persisted, end)))
    if not todo:
        return []
    if on_replaced == "fail":
        described = "; ".join(
            f"{r.topic}[{r.partition}]: local state holds offset {r.persisted}, the changelog "
            f"ends at {r.end}"
            for _, r in todo
        )
        raise ReplacedLogError(
            f"local state is ahead of its changelog ({described}); stream.on_replaced_log is "
            "'fail': set it to 'reset' to write the state back (empty changelog) or restore it "
            "from the changelog, or remove the state directory"
        )
    emptied = tuple({r.topic for _, r in todo if r.verdict is ChangelogVerdict.EMPTIED})
    if emptied:
        # Faust declares its changelogs compacted; one made for a write-back must be the same.
        await ensure_topics(
            bootstrap_servers,
            emptied,
            partitions,
            replication_factor,
            security,
            topic_configs={"cleanup.policy": "compact"},
        )
    producer: AIOKafkaProducer | None = None
    try:
        for table, found_repair in todo:
            store, topic, p = table.data, found_repair.topic, found_repair.partition
            path = store.partition_path(p)
            if found_repair.verdict is ChangelogVerdict.BEHIND:
                shutil.rmtree(path)
                log.error(
                    "%s[%d]: local state holds changelog offset %s but the changelog ends at %d "
                    "(it lost records, or was recreated and written again): the local partition "
                    "is dropped and restored from the changelog; its input is read again from "
                    "the committed offsets",
                    topic,
                    p,
                    found_repair.persisted,
                    found_repair.end,
                )
                repairs.append(found_repair)
                continue
            if producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=bootstrap_servers, **aiokafka_kwargs(security)
                )
                await producer.start()
            db = store.rocksdb_options.open(path)
            try:
                items = [(k, v) for k, v in db.items() if k != store.offset_key]
                written, last = await _write_back(producer, topic, p, items)
                if last >= 0:
                    db.put(store.offset_key, str(last).encode())
                else:
                    db.delete(store.offset_key)
            finally:
                db.close()
            log.error(
                "%s[%d]: the changelog is empty but local state holds it up to offset %s (a "
                "fresh broker or a recreated topic): %d local records written back to it",
                topic,
                p,
                found_repair.persisted,
                written,
            )
            repairs.append(
                Repair(topic, p, found_repair.verdict, found_repair.persisted, 0, written)
            )
    finally:
        if producer is not None:
            await producer.stop()
    return repairs
