"""The Faust wiring, all in one place: topics, the agent, health, and the worker's start.

The app is built by a function from a validated, frozen Settings object; there is no
module-level app. Both input topics (co-partitioned, keyed by customer id) and the clock ticks
reach the worker as raw bytes, a fetch at a time (``streams/kafka/fastpath.py``: Faust keeps the
group, the tables, recovery and commits; its per-record stream is bypassed).
``streams.kafka.pipeline``
does the decoding, so bad input becomes dead letters instead of Faust's decode errors.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import faust
import mode
import orjson
from faust.streams import _current_event  # faust has no public setter
from faust.types import TP

from streams.config import PRODUCER_MAX_REQUEST_BYTES
from streams.core.adapter import build_core
from streams.core.clock import Clock
from streams.core.decisions import Decision
from streams.core.errors import BrokerUnavailable, ConfigError, ReplacedLogError
from streams.core.events import Event
from streams.core.ingest import Decoder
from streams.core.log_identity import LANE_PREFIX, REPARTITION
from streams.core.ordering import EventTimeMerger
from streams.core.policy import Policy
from streams.core.timeutil import wall_ms
from streams.kafka import bulk_restore, fastpath, tansu
from streams.kafka.changelog_repair import repair_changelogs
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
from streams.kafka.processor import Gate, Processor, Stores
from streams.kafka.security import faust_credentials
from streams.kafka.topics import (
    TopicNames,
    check_copartitioned,
    cluster_id,
    ensure_topics,
    wait_for_brokers,
)
from streams.ledger import ContactLedger, LedgerRefused, LedgerUnavailable
from streams.ledger.gate import LedgerGate
from streams.ops.http import HttpEndpoints
from streams.ops.logs import logging_config
from streams.ops.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)


TICK_INTERVAL_SECONDS = 1.0
# faust opens one RocksDB per table partition with 64 MiB memtables (up to 3) and a 2 GiB block
# cache each: with 3 tables x 8 partitions that is gigabytes of RSS for a few MB of state.
# Our records are small (about 2 KB a customer); these sizes bound a worker's RocksDB memory
# to the low hundreds of MiB.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
    "block_cache_compressed_size": 1024 * 1024,
}
GAUGE_INTERVAL_SECONDS = 5.0
# A topic-partition whose high watermark says "more" but that delivered nothing for this long
# is not waited for by the event-time merge (its remaining offsets are not data).
STALLED_TOPIC_MS = 30_000
REDIS_PROBE_SECONDS = 5.0
# A probe that has no answer within this is a failed probe: shorter than the interval, so a
# hung Redis turns /ledger and lifecycle_redis_up within two intervals and probes never overlap.
REDIS_PROBE_TIMEOUT_SECONDS = 2.0
# Each owned input partition's end offset is read from the broker at this interval, whether or
# not the stream fetches: while the stream is paused (a Redis outage holds it) the fetch
# responses stop, and a lag computed from them would freeze exactly when it matters.
END_OFFSETS_SECONDS = 5.0
END_OFFSETS_TIMEOUT_SECONDS = 30.0
PRODUCER_LINGER_SECONDS = 0.005
PRODUCER_MAX_BATCH_BYTES = 256 * 1024
# Records per fetch, so per batch (streams/kafka/fastpath.py): a batch's decisions and state wait
# for its end, and the event loop (health, metrics, timers) runs between batches. aiokafka
# hands a fetch out one topic-partition after the other, so a batch of 1,000 was nearly always
# one topic of one partition; 4,000 (about 250 ms of work at full speed) measured 6-11 % more
# events/s on a backlog. A live stream's fetches are smaller than either.
MAX_BATCH = 4_000
# Records the event-time merge may hold of one topic-partition before the fetches leave that
# topic-partition out (back-pressure, streams/kafka/fastpath.py). Below the merge's own bound
# (10,000 per partition, beyond which it releases out of order) by more than a batch.
HOLD_BACK_AT = 2_000
# The garbage collector's generation thresholds (CPython's default: 700, 10, 10). A worker
# allocates tracked objects on every event, so the default collected very often, and its full
# passes over every tracked object of Faust, aiokafka and the worker were the tail of the
# event-to-decision latency. At a fixed 2,500 events/s (`bench/throughput_bench.py --quick
# --repeat 0 --latency-rate 2500`): p99 571 / 608 / 715 / 602 ms with the default, 302 / 372 /
# 257 / 282 ms with these; throughput unchanged (6,014 / 6,385 vs 5,924 / 6,882 events/s),
# RSS unchanged.
GC_THRESHOLDS = (50_000, 20, 10)
# The event time a dead letter stands in the event-time merge with: it has none, and goes as
# soon as it is the first of its topic-partition.
DEAD_LETTER_TIME = -1
# Stands for the record of a forwarded input in the event-time merge (its copy is applied at
# the partition its key belongs to: ``streams/kafka/copartition.py``).
FORWARDED = "forwarded"


@dataclass
class Worker:
    """A built app and what runs beside it."""

    app: faust.App
    metrics: Metrics
    http: HttpEndpoints
    processor: Processor
    changelogs: list[Any]  # the Faust tables, customers first


def _faust_settings(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker": [f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")],
        "store": "rocksdb://" if settings.store == "rocksdb" else "memory://",
        "datadir": str(settings.state_dir),
        "processing_guarantee": "at_least_once",
        "autodiscover": False,
        "web_enabled": False,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": settings.heartbeat_interval,
        "broker_commit_interval": settings.commit_interval,
        "consumer_auto_offset_reset": "earliest",
        # Records held for event-time ordering are unacked by design: a rebalance must not wait
        # for them (the new owner reads them again from the committed offset).
        "stream_wait_empty": False,
        "key_serializer": "raw",
        "value_serializer": "raw",
        # Changelog records and decisions go out in batches: the agent awaits acks once per
        # batch of input (processor.flush), so a short linger costs no throughput.
        "producer_linger": PRODUCER_LINGER_SECONDS,
        "producer_max_batch_size": PRODUCER_MAX_BATCH_BYTES,
        # stream.max_message_bytes is bounded by it (a dead letter carries the value).
        "producer_max_request_size": PRODUCER_MAX_REQUEST_BYTES,
        "broker_max_poll_records": MAX_BATCH,
    }
    if settings.store == "rocksdb" and settings.state_restore == "bulk":
        # Faust's recovery with a bulk restore of assigned partitions (kafka/bulk_restore.py).
        conf["TableManager"] = bulk_restore.TableManager
    credentials = faust_credentials(settings.kafka_security)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    if settings.group_instance_id:
        conf["consumer_group_instance_id"] = settings.group_instance_id
    return conf


class _App(faust.App):
    """The app with the batch consumer (``streams/kafka/fastpath.py``)."""

    def _new_transport(self) -> Any:
        return fastpath.Transport(self.conf.broker_consumer, self)


class _TansuApp(faust.App):
    """The app on the Tansu broker: exact changelog ends for recovery (``kafka/tansu.py``)."""

    def _new_transport(self) -> Any:
        return tansu.Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return tansu.Transport(self.conf.broker_producer, self)


@dataclass(frozen=True)
class _Where:
    topic: str
    partition: int


class _PartitionContext:
    """Stands for a Faust event where tables look for one: they read its message's topic and
    partition (the changelog partition to write, the RocksDB partition to read)."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Where(topic, partition)


def ticks_topic_name(settings: Settings) -> str:
    """The internal topic that carries wall-clock ticks, co-partitioned with the inputs."""
    return f"{settings.app_id}-clock-ticks"


def repartition_topic_name(settings: Settings) -> str:
    """The internal topic that carries misrouted input records to their partition
    (``streams/kafka/copartition.py``), co-partitioned with the inputs."""
    return f"{settings.app_id}-repartition"


def _router(settings: Settings, topics: TopicNames, partitions: int, metrics: Metrics) -> Router:
    stream_conf = settings.config["stream"]
    chosen = stream_conf["topic_partitioners"]
    names = {
        topics.account_events: chosen.get("account_events", stream_conf["partitioner"]),
        topics.usage_events: chosen.get("usage_events", stream_conf["partitioner"]),
    }
    # A series per topic from the start: increase() sees the first misrouted record.
    counters = {topic: metrics.misrouted_records.labels(topic) for topic in topics.inputs}
    return Router(names, partitions, str(stream_conf["repartition"]), lambda t: counters[t].inc())


def build_worker(
    settings: Settings,
    partitions: int,
    gate: Gate | None = None,
    cluster: str | None = None,
) -> Worker:
    """Build the Faust app for ``settings``: topics, tables, the agent, ticks and health.

    ``partitions`` is the input topics' partition count; every table and the tick topic use it
    so that one customer's events, state and due items share a partition number. ``cluster`` is
    the brokers' cluster id, part of each input partition's log identity.
    """
    app_class = _TansuApp if settings.broker_kind == "tansu" else _App
    app = app_class(settings.app_id, **_faust_settings(settings))
    metrics = Metrics()
    topics = TopicNames.from_config(settings.topics)
    metrics.preset(topics.inputs)
    stream_conf = settings.config["stream"]
    ingest = Ingest(
        topics,
        Decoder(stream_conf["max_message_bytes"], stream_conf["max_future_seconds"]),
        metrics,
        wall_ms,
        stream_conf["dead_letter_max_value_bytes"],
    )
    wall_clock = settings.clock == "wall"
    ticks = ticks_topic_name(settings)
    router = _router(settings, topics, partitions, metrics)
    repartition = repartition_topic_name(settings)
    # The repartition topic is a third input of the event-time merge where records may be
    # forwarded; with stream.repartition: off it is not read at all.
    applied_from = (*topics.inputs, repartition) if router.forwards else topics.inputs
    source = app.topic(
        *applied_from, ticks, key_serializer="raw", value_serializer="raw", partitions=partitions
    )
    repartition_topic = app.topic(repartition, key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(topics.dead_letters, key_serializer="raw", value_serializer="raw")
    decisions_topic = app.topic(
        topics.contact_decisions, key_serializer="raw", value_serializer="raw"
    )
    tick_topic = app.topic(ticks, key_serializer="raw", value_serializer="raw")

    def table(name: str) -> Any:
        # bytes keys and values make faust use the "raw" codec for the changelog (else "json",
        # which writes our bytes but cannot read them back in recovery).
        return app.Table(
            name,
            default=None,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            options=dict(ROCKSDB_OPTIONS) if settings.store == "rocksdb" else None,
        )

    changelogs = [
        fastpath.BatchedChangelog(table(name)) for name in ("customers", "due-index", "stream-time")
    ]
    stores = Stores(customers=changelogs[0], due=changelogs[1], clock=changelogs[2])

    async def publish(decision: Decision) -> Any:
        return await decisions_topic.send(
            key=decision.candidate.customer_id.encode(),
            value=orjson.dumps(decision.to_record()),
        )

    policy = Policy.from_config(settings.config["policy"])
    if gate is None:
        ledger = ContactLedger(
            settings.redis_url,
            policy,
            namespace=settings.ledger_namespace,
            wait_replicas=settings.ledger_wait_replicas,
        )
        gate = LedgerGate(ledger, metrics)
    processor = Processor(
        build_core(settings.config),
        stores,
        Clock(settings.clock),
        gate,
        publish,
        metrics,
        quiet_hours=policy.quiet_hours,
    )
    # Poison records are contained (streams/kafka/containment.py): a record that fails processing
    # is dead-lettered, and a dead letter that can never be sent is skipped, counted.
    contained = Contained(
        processor.step_event_nowait,
        metrics,
        wall_ms,
        stream_conf["processing_error_max_share"],
        stream_conf["processing_error_window"],
        stream_conf["dead_letter_max_value_bytes"],
    )
    dead_letter_out = DeadLetterOut(
        lambda key, value: dead_letters.send(key=key, value=value), metrics
    )
    if isinstance(gate, LedgerGate):
        ledger_gate = gate

        @app.task
        async def probe_redis() -> None:
            # A loop, not a timer: each probe is bounded by its timeout and the next starts an
            # interval later, so a hung Redis cannot pile probes up.
            while True:
                await ledger_gate.ping(REDIS_PROBE_TIMEOUT_SECONDS)
                await asyncio.sleep(REDIS_PROBE_SECONDS)

        def ledger_ok() -> bool:
            return ledger_gate.up
    else:

        def ledger_ok() -> bool:
            return True

    owned: dict[str, Any] = {
        "partitions": set(),
        "stale": True,
        "assigned": False,
        "assigned_at": time.monotonic(),
        "assigned_wall": wall_ms(),
        "seeks": None,
    }
    # The last input offset acked per topic-partition (its state written), and each owned
    # input partition's end offset as the broker last told it (END_OFFSETS_SECONDS).
    processed: dict[tuple[str, int], int] = {}
    log_ends: dict[tuple[str, int], int] = {}
    # Items: (topic-partition, offset, the event; None for a dead letter or a forwarded record,
    # acked in its turn; the record, for a dead letter should its processing fail; the
    # applied-offset mark it counts under).
    merger: EventTimeMerger[tuple[TP, int, Event | None, Any, str]] = EventTimeMerger(
        applied_from, wait_unknown_ms=stream_conf["max_order_wait_ms"]
    )
    # The applied-offset marks of a customer record are kept per input: the repartition topic
    # has offsets of its own.
    mark_kinds = {topic: topics.kind_of(topic) for topic in topics.inputs}
    alignment = Alignment(router.mode == "all", STALLED_TOPIC_MS)
    in_order = InOrderAcks()

    def unread_since(since_ms: int) -> Callable[[str, int], bool]:
        # Whether a topic-partition may hold records not read yet that were there by
        # ``since_ms``: the event-time merge's own question, unknown counted as yes.
        def unread(topic: str, partition: int) -> bool:
            return pending_for(partition, count=False)(topic, since_ms) is not False

        return unread

    order_grace_ms = int(stream_conf["order_grace_ms"])
    on_replaced = str(stream_conf["on_replaced_log"])
    last_seen: dict[tuple[str, int], int] = {}
    last_delivery: dict[tuple[str, int], int] = {}

    def fetch_state(topic: str, partition: int) -> tuple[int, int, int] | None:
        """(high watermark, fetch position, when the high watermark came) of a topic-partition
        in the consumer, if known.

        The high watermark comes from fetch responses (reliable on Kafka and Tansu, unlike
        ListOffsets), and with it the wall-clock time of that response; the position is the
        next offset aiokafka will hand out, past any transaction markers.
        """
        state = consumer.partition_state(TP(topic, partition))
        if state is None or state.highwater is None or not state.has_valid_position:
            return None
        return int(state.highwater), int(state.position), int(state.timestamp or 0)

    def highwater_of(topic: str, partition: int) -> int | None:
        known = fetch_state(topic, partition)
        return None if known is None else known[0]

    def pending_for(partition: int, count: bool = True) -> Callable[[str, int], bool | None]:
        def pending(topic: str, since_ms: int) -> bool | None:
            # Whether this topic-partition holds records the worker has not received yet that
            # were on the broker by ``since_ms``.
            known = fetch_state(topic, partition)
            if known is None:
                if count:
                    metrics.order_forced.labels("unknown").inc()
                return None
            highwater, position, answered_ms = known
            if highwater > position:
                return True  # on the broker or in aiokafka's buffer, not handed out yet
            if answered_ms < since_ms + order_grace_ms:
                # That high watermark is not news enough: aiokafka leaves a partition with
                # buffered records out of its next fetches, so it can be older than the
                # waiting record's fetch; and producers do not keep order across topics, so
                # an earlier event of this topic can reach the broker a little after the
                # waiting record (stream.order_grace_ms). Wait for news (bounded).
                return None
            seen = last_seen.get((topic, partition))
            # faust's read offset: the committed position after an assignment, then the last
            # record faust handed to the stream.
            read = app.consumer._read_offset.get(TP(topic, partition))  # type: ignore[attr-defined]
            if seen is not None and read is not None and read > seen:
                return True  # handed to the stream, on its way to us
            handed_out = position - 1  # the last offset aiokafka gave to faust
            if handed_out <= (seen if seen is not None else (read or 0) - 1):
                return False  # everything handed out has reached us
            # aiokafka handed out more than reached us: either faust is still putting it into
            # the stream (the channel is full), or the rest are transaction markers, which
            # never arrive. Wait while the topic keeps delivering.
            quiet_since = last_delivery.get((topic, partition), owned["assigned_wall"])
            if wall_ms() - quiet_since < STALLED_TOPIC_MS:
                return True
            if count:
                metrics.order_forced.labels("stalled").inc()
            return False

        return pending

    # Tables write to the partition of Faust's current event; the batch path has no Faust
    # events, so each partition gets a stand-in that carries what tables read of one.
    contexts: dict[int, _PartitionContext] = {}

    def enter(partition: int) -> None:
        where = contexts.get(partition)
        if where is None:
            where = contexts[partition] = _PartitionContext(topics.inputs[0], partition)
        _current_event.set(weakref.ref(where))  # type: ignore[arg-type]

    def ends_key(kind: str) -> str:
        return REPARTITION if kind.startswith(LANE_PREFIX) else kind

    def topic_of(kind: str) -> str:
        found = [t for t, k in mark_kinds.items() if k == kind]
        return found[0] if found else repartition

    async def check_logs(partitions: set[int]) -> None:
        """Compare the restored log marks of ``partitions`` with the broker's logs; a replaced
        log is reset (or stops the worker): ``streams/core/log_identity.py``."""
        if not partitions:
            return
        checked = {topic: mark_kinds[topic] for topic in topics.inputs}
        if router.forwards:
            checked[repartition] = REPARTITION
        wanted = [TP(topic, p) for p in sorted(partitions) for topic in checked]
        ends = await consumer.highwaters(*wanted)
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
                f"{marks.cluster}, the log ends at {by_kind.get(ends_key(kind))} in cluster "
                f"{cluster})"
                for kind, why in replaced.items()
            )
            if on_replaced == "fail":
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
                metrics.log_resets.labels(topic_of(kind), str(p), why).inc()
            marks.reset(replaced, cluster)
            processor.marks_changed(p)
            # The group's offsets belong to the old logs: the new ones are read from their start.
            await consumer.read_from_beginning(
                [
                    TP(topic, p)
                    for topic, kind in checked.items()
                    if kind in replaced
                    or (kind == REPARTITION and any(k.startswith(LANE_PREFIX) for k in replaced))
                ]
            )

    def abandon(reason: str) -> None:
        """Forget everything unwritten: its input was not acked and is read again."""
        pending = processor.pending_partitions()
        merged = set(merger.partitions())
        held = sum(len(merger.drop(p)) for p in merged)
        in_order.drop()
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
        processor.drop_partitions(set(owned["partitions"]) | pending | merged)
        owned["stale"] = True

    async def handle(batch: fastpath.Batch, epoch: int) -> Awaitable[None] | None:
        """One fetch of the inputs and ticks: ingest, merge by event time and apply; returns the
        rest (wait for the decisions' acks, write state and changelogs, ack the input), which
        runs while the next fetch is applied (``streams/kafka/fastpath.py``).

        Acks come last: an input record is acked once its state is written (decisions before
        state, see ``streams/kafka/processor.py``), so no offset commit overtakes unwritten state.
        Records held for event-time order stay unacked until a later batch releases them.
        """
        if epoch != consumer.epoch:
            return None  # fetched before a rebalance: read again from the committed offsets
        seeks = consumer.seeks
        if owned["seeks"] != seeks:
            # The consumer went back to the committed offsets: every record not acked comes
            # again, so records held for event-time order and unwritten state would be applied
            # twice, out of order (the stream time runs ahead with the first copies).
            if owned["seeks"] is not None:
                abandon("seek")
            owned["seeks"] = seeks
        if owned["stale"]:
            owned["stale"] = False
            _current_event.set(None)  # restore reads every partition's store
            await processor.restore_partitions(set(owned["partitions"]))
            await check_logs(set(owned["partitions"]))
            # Faust resumes the inputs only once table recovery is done: this is the first
            # moment the worker processes again after an assignment.
            metrics.recovery_seconds.set(time.monotonic() - owned["assigned_at"])
        now = wall_ms()
        apply, apply_time = contained.apply, processor.apply_time_nowait
        failed: list[tuple[Rejected, Position]] = []
        handed_on = 0  # forwarded inputs released (acked) in this batch
        done: list[tuple[TP, int]] = []
        touched: set[int] = set()
        ticked: set[int] = set()
        for tp, records in batch:
            partition = tp.partition
            touched.add(partition)
            if tp.topic == ticks:
                ticked.add(partition)
                done.extend((tp, r.offset) for r in records)
                continue
            topic = tp.topic
            # When these records came: the fetch response that brought them (aiokafka leaves a
            # partition with buffered records out of later fetches, so its last response is
            # theirs). The other topic must have news at least as recent to count as caught up.
            known = fetch_state(topic, partition)
            came = min(now, known[2]) if known is not None and known[2] else now
            forwarded, forwards = topic == repartition, router.forwards
            mark = mark_kinds.get(topic, "")
            for r in records:
                lane = None
                if forwarded:
                    # A lane per source topic-partition: each keeps its own order, and its own
                    # applied-offset mark (offsets of one lane only grow).
                    kind, source = source_kind(r.headers), source_of(r.headers)
                    alignment.arrived(partition, source)
                    lane = lane_of(kind, source)
                    mark = LANE_PREFIX + lane
                    in_order.fetched(tp, r.offset)
                    result = ingest.accept(topic, partition, r.offset, r.key, r.value, kind=kind)
                else:
                    result = ingest.accept(topic, partition, r.offset, r.key, r.value)
                    if not isinstance(result, Rejected):
                        target = router.target(topic, partition, r.offset, r.key)
                        if forwards:
                            alignment.fetched(topic, partition, result.occurred_at_ms)
                        if target is not None:
                            headers = forward_headers(topic, mark, partition, r.offset)
                            await repartition_topic.send(
                                key=r.key, value=r.value, partition=target, headers=headers
                            )
                            alignment.forwarded(
                                target,
                                source_of(headers),
                                result.occurred_at_ms,
                                now,
                                target in owned["partitions"],
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
                    await dead_letter_out.send(result, Position(topic, partition, r.offset))
                    # Acked in its topic-partition's offset order, behind the records the merge
                    # still holds: Faust commits up to the first gap it sees in the acked
                    # offsets, and does not check the gap before the first of them (on a fresh
                    # partition, or one offset wide), so an early ack could commit past them.
                    merger.add(
                        partition,
                        topic,
                        DEAD_LETTER_TIME,
                        came,
                        (tp, r.offset, None, None, mark),
                        lane,
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
            last_seen[(topic, partition)] = records[-1].offset
            last_delivery[(topic, partition)] = now
        aligned = alignment.active()
        if aligned:
            # A partition held back for another's sake goes as soon as that one catches up,
            # not at its own next fetch.
            touched.update(merger.partitions())
        for partition in sorted(touched):
            enter(partition)
            forced = merger.forced
            limit = None
            if aligned:
                since = merger.first_arrival(partition)
                if since is not None:
                    limit = alignment.limit(
                        partition, owned["partitions"], topics.inputs, unread_since(since), now
                    )
            ready = merger.release(partition, wall_ms(), pending_for(partition), limit)
            if merger.forced > forced:
                metrics.order_forced.labels("buffer_full").inc(merger.forced - forced)
            for tp, offset, typed, r, mark in ready:
                if r is FORWARDED:
                    handed_on += 1  # done once its copy is applied (a repartition record)
                elif typed is not None:  # else a dead letter, already sent
                    topic = tp.topic
                    rejected = apply(mark, topic, partition, offset, typed, r.key, r.value)
                    if rejected is not None:
                        failed.append((rejected, Position(topic, partition, offset)))
                    apply_time(partition)
                if tp.topic == repartition:
                    # Lanes release this topic-partition out of offset order: acked in order.
                    done.extend(in_order.release(tp, offset))
                    continue
                done.append((tp, offset))
            if partition in ticked and wall_clock:
                enter(partition)
                processor.apply_time_nowait(partition)

        sealed = processor.seal()
        for rejected, where in failed:
            await dead_letter_out.send(rejected, where)
        letters = dead_letter_out.seal()

        def write_to(partition: int) -> bool:
            if consumer.epoch != epoch or consumer.seeks != seeks:
                return False
            if partition not in owned["partitions"]:
                return False
            enter(partition)
            return True

        async def rest() -> None:
            await processor.finish(sealed, write_to)
            # What was written belongs to partitions still ours (write_to): its changelog goes
            # out even if a rebalance starts now.
            producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
            await fastpath.send_in_order(producer, changelogs[0], changelogs[1:])
            await dead_letter_out.settle(letters)
            if consumer.epoch != epoch or consumer.seeks != seeks:
                abandon("rebalance" if consumer.epoch != epoch else "seek")
                return
            ack = consumer.ack_offset
            inputs = -handed_on
            for tp, offset in done:
                ack(tp, offset)
                if tp.topic == repartition:
                    inputs += 1
                elif tp.topic in inputs_of_ours:
                    inputs += 1
                    where = (tp.topic, tp.partition)
                    if offset > processed.get(where, -1):
                        processed[where] = offset
            metrics.records_done.inc(inputs)

        return rest()

    consumer = cast(fastpath.BatchConsumer, app.consumer)

    def held_back() -> set[TP]:
        # A topic that ran ahead of the other in its partition (a backlog: aiokafka hands a
        # fetch out one topic-partition at a time, and the topics' records span different
        # stretches of event time) waits in aiokafka's buffer, not in the merge.
        held = {
            TP(topic, partition)
            for partition, topic in merger.crowded(HOLD_BACK_AT)
            if topic != repartition  # forwards must come back for the alignment to move
        }
        if alignment.in_flight() > HOLD_BACK_AT:
            # Forwarding runs ahead of what comes back: the inputs wait in aiokafka's buffer.
            # (Not on what the merge holds: a partition's records wait there for its other
            # input topic, which must then still be fetched.)
            held.update(
                TP(topic, partition) for partition in owned["partitions"] for topic in topics.inputs
            )
        return held

    inputs_of_ours = frozenset(topics.inputs)
    consumer.use_batches(frozenset((*applied_from, ticks)), handle, held_back)

    async def process(stream: Any) -> AsyncIterator[None]:
        # Subscribes Faust to the inputs and ticks; their records reach ``handle`` instead.
        async for _ in stream.noack():
            yield None

    app.agent(source, name="lifecycle.process", sink=None)(process)

    @app.timer(interval=TICK_INTERVAL_SECONDS)
    async def tick() -> None:
        # Faust writes tables only inside a stream event: time reaches the agent as a tick per
        # owned partition, in that partition. In wall mode it fires due items within a second;
        # in both modes it releases records held for event-time ordering.
        for p in sorted(owned["partitions"]):
            await tick_topic.send(value=b"", partition=p)

    def lag_of(topic: str, partition: int) -> int | None:
        """Records between the last input offset done with (or, before any since the
        assignment, the group's committed position) and the end of the partition's log."""
        tp = TP(topic, partition)
        known = (log_ends.get((topic, partition)), highwater_of(topic, partition))
        ends = [e for e in known if e is not None]
        if not ends:
            return None
        end = max(ends)
        done_up_to = processed.get((topic, partition))
        if done_up_to is None:
            # faust's read offset right after an assignment: the committed position.
            read = app.consumer._read_offset.get(tp)  # type: ignore[attr-defined]
            if read is None:
                return 0 if end == 0 else None
            done_up_to = int(read) - 1
        return max(0, end - done_up_to - 1)

    @app.timer(interval=GAUGE_INTERVAL_SECONDS)
    async def update_gauges() -> None:
        for p in sorted(owned["partitions"]):
            metrics.due_items.labels(str(p)).set(processor.due_index.size(p))
            for topic in topics.inputs:
                lag = lag_of(topic, p)
                if lag is not None:
                    metrics.consumer_lag.labels(topic, str(p)).set(lag)

    @app.task
    async def read_log_ends() -> None:
        while True:
            await asyncio.sleep(END_OFFSETS_SECONDS)
            wanted = [TP(t, p) for p in sorted(owned["partitions"]) for t in topics.inputs]
            if not wanted or not owned["assigned"]:
                continue
            try:
                # On Tansu the transport's exact ends (streams/kafka/tansu.py), not ListOffsets.
                ends = await asyncio.wait_for(
                    consumer.highwaters(*wanted), END_OFFSETS_TIMEOUT_SECONDS
                )
            except Exception as exc:  # noqa: BLE001 - lag stays as it was; try again later
                log.debug("end offsets of %d partitions not read: %r", len(wanted), exc)
                continue
            for tp, end in ends.items():
                if end is not None and tp.partition in owned["partitions"]:
                    where = (tp.topic, tp.partition)
                    log_ends[where] = int(end)
                    done_to = processed.get(where)
                    if done_to is not None and int(end) <= done_to:
                        shrunk(tp.topic, tp.partition, done_to, int(end))

    def shrunk(topic: str, partition: int, done_to: int, end: int) -> None:
        """An input log now ends before an offset this worker applied from it: the topic was
        deleted and created again, or lost its data, while the worker ran. No rebalance need
        follow (none did on the test broker), and the consumer waits past the new log's end
        for ever; the check at assignment (``check_logs``) is what recognises a replaced log,
        so the worker stops and its restart makes that check (a supervisor restarts it)."""
        message = (
            f"replaced input log: {topic}[{partition}] ends at offset {end} but this worker "
            f"applied offset {done_to} from it (deleted and created again, or its data lost, "
            "while the worker ran): stopping, so that the restart checks the state against "
            "the new log (stream.on_replaced_log)"
        )
        log.error("%s", message)
        metrics.log_resets.labels(topic, str(partition), "shrunk").inc()
        raise ReplacedLogError(message)

    async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        metrics.rebalances.inc()
        owned["assigned_at"] = time.monotonic()
        owned["assigned_wall"] = wall_ms()
        alignment.assigned(owned["assigned_wall"])
        assigned = kwargs.get("assigned", args[0] if args else set())
        owned["partitions"] = {tp.partition for tp in assigned if tp.topic in topics.inputs}
        owned["stale"] = True
        owned["assigned"] = True
        forget(owned["partitions"])

    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        owned["assigned"] = False
        revoked = kwargs.get("revoked", args[0] if args else set())
        gone = {tp.partition for tp in revoked if tp.topic in topics.inputs}
        owned["partitions"] = set(owned["partitions"]) - gone
        # Unwritten state and held records of revoked partitions: their input was not acked,
        # the next owner reads it again. A batch in progress sees the epoch and drops the rest.
        processor.drop_partitions(gone)
        for tp in revoked:
            merger.drop(tp.partition)
            alignment.drop(tp.partition)
            in_order.drop({tp.partition})
            last_seen.pop((tp.topic, tp.partition), None)
            last_delivery.pop((tp.topic, tp.partition), None)
        forget(owned["partitions"])

    def forget(keep: set[int]) -> None:
        """Drop what is known of partitions not in ``keep``, their series first: another
        worker exports them now."""
        metrics.owned_partitions(keep, topics.inputs)
        for known in (processed, log_ends):
            for where in [w for w in known if w[1] not in keep]:
                del known[where]

    # faust's signal stubs want a receiver typed with its internal signal class; ours takes Any.
    app.on_partitions_assigned.connect(cast(Any, on_assigned))
    app.on_partitions_revoked.connect(cast(Any, on_revoked))

    def is_ready() -> bool:
        # Not Redis: a worker that cannot reach the ledger is no reason to keep its pod from
        # being moved (README: "Readiness and the ledger"); /ledger and lifecycle_redis_up say it.
        return (
            bool(owned["assigned"])
            and not app.rebalancing
            and app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        )

    http = HttpEndpoints(
        metrics,
        settings.metrics_port,
        is_ready,
        ledger_ok=ledger_ok,
        host=settings.metrics_host,
    )
    return Worker(app, metrics, http, processor, changelogs=[c.table for c in changelogs])


class _Worker(faust.Worker):
    """Faust's worker with a bounded stop: SIGTERM or SIGINT arms a watchdog.

    Leaving the group and flushing need the broker; when it went away first, Faust's stop waits
    for it for ever (seen: a worker still there 90 s after SIGTERM). The crash guarantee makes
    an exit at any point safe (decisions before state, state before offsets), so after
    ``shutdown_timeout`` the process exits 1, as a SIGKILL would end it.
    """

    shutdown_timeout: float = 30.0
    _watchdog: threading.Timer | None = None

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            return

        def expire() -> None:
            log.error(
                "the worker did not stop within %.0f s of the signal (is the broker gone?): "
                "exiting now; what it had not written is read again, as after a crash",
                self.shutdown_timeout,
            )
            logging.shutdown()
            os._exit(1)

        self._watchdog = threading.Timer(self.shutdown_timeout, expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _on_sigterm(self) -> None:
        self._arm_watchdog()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_watchdog()
        super()._on_sigint()


class _HttpService(mode.Service):
    """Runs the health and metrics endpoints for the life of the worker."""

    def __init__(self, endpoints: HttpEndpoints, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.endpoints = endpoints

    async def on_start(self) -> None:
        await self.endpoints.start()

    async def on_stop(self) -> None:
        await self.endpoints.stop()


async def prepare_topics(settings: Settings) -> int:
    """Wait for a broker (``--broker-wait-seconds``), create missing contract topics, refuse
    input topics that are not co-partitioned.

    Returns the input partition count; the internal tick topic is created with it.
    """
    topics = TopicNames.from_config(settings.topics)
    await wait_for_brokers(
        settings.bootstrap_servers, settings.broker_wait_seconds, settings.kafka_security
    )
    counts = await ensure_topics(
        settings.bootstrap_servers,
        topics.all,
        settings.partitions,
        settings.replication_factor,
        settings.kafka_security,
    )
    partitions = check_copartitioned(topics, counts, settings.partitions)
    internal = {
        ticks_topic_name(settings): "it holds only clock ticks",
        repartition_topic_name(settings): "stop every worker first: it holds forwarded records "
        "not yet applied",
    }
    got = await ensure_topics(
        settings.bootstrap_servers,
        tuple(internal),
        partitions,
        settings.replication_factor,
        settings.kafka_security,
    )
    for name, why in internal.items():
        if got[name] != partitions:
            raise ConfigError(
                f"topic {name!r} has {got[name]} partitions, the inputs {partitions}: "
                f"delete it ({why}) so that the worker recreates it"
            )
    return partitions


async def check_ledger(settings: Settings) -> None:
    """Refuse to start when Redis refuses our credentials or permissions; a Redis that is
    merely down is waited for once the stream needs it (fail closed, resume by itself)."""
    ledger = ContactLedger(
        settings.redis_url,
        Policy.from_config(settings.config["policy"]),
        namespace=settings.ledger_namespace,
    )
    try:
        await ledger.ping()
    except LedgerRefused as exc:
        raise ConfigError(f"--redis-url (REDIS_URL): {exc}") from None
    except LedgerUnavailable as exc:
        log.warning("contact ledger not reachable at start, the stream will wait for it: %s", exc)
    finally:
        await ledger.aclose()


def run_worker(settings: Settings) -> int:
    """Run the stream processor until SIGTERM/SIGINT; then leave the group and flush."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(check_ledger(settings))
        partitions = loop.run_until_complete(prepare_topics(settings))
    except (ConfigError, BrokerUnavailable):
        loop.close()
        raise
    log.info(
        "starting %s: brokers %s (%s), redis %s, clock %s, %d input partitions, store %s",
        settings.app_id,
        settings.bootstrap_servers,
        settings.kafka_security.describe(),
        settings.redis_url_masked,
        settings.clock,
        partitions,
        settings.store,
    )
    if settings.store == "rocksdb":
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        cluster = loop.run_until_complete(
            cluster_id(settings.bootstrap_servers, settings.kafka_security)
        )
        built = build_worker(settings, partitions, cluster=cluster)
        if settings.store == "rocksdb":
            repairs = loop.run_until_complete(
                repair_changelogs(
                    built.changelogs,
                    partitions,
                    bootstrap_servers=settings.bootstrap_servers,
                    security=settings.kafka_security,
                    replication_factor=settings.replication_factor,
                    exact_on_tansu=settings.broker_kind == "tansu",
                    on_replaced=str(settings.config["stream"]["on_replaced_log"]),
                )
            )
            for repair in repairs:
                built.metrics.log_resets.labels(
                    repair.topic, str(repair.partition), repair.verdict.value
                ).inc()
    except (ConfigError, ReplacedLogError):
        loop.close()
        raise
    worker = _Worker(
        built.app,
        _HttpService(built.http, loop=loop),
        loop=loop,
        loglevel=settings.log_level.upper(),
        # Our handler and format for Faust's lines too (else a second, coloured one on stdout).
        logging_config=logging_config(settings.log_level, settings.log_format),
        redirect_stdouts=False,
    )
    # At WARNING and above faust's worker installs a terminal spinner that sets the root logger
    # to DEBUG, so every library debug call (aiokafka logs each send) builds a record.
    worker.spinner = None
    worker.shutdown_timeout = settings.shutdown_timeout_seconds
    worker.execute_from_commandline()
    return 0  # pragma: no cover - execute_from_commandline exits
