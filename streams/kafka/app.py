"""The Faust wiring, all in one place: topics, the agent, health, and the worker's start.

The app is built by a function from a validated, frozen Settings object; there is no
module-level app. Both input topics (co-partitioned, keyed by customer id) and the clock ticks
reach the worker as raw bytes, a fetch at a time (``streams/kafka/fastpath.py``: Faust keeps the
group, the tables, recovery and commits; its per-record stream is bypassed), and go to the
batch driver (``streams/kafka/driver.py``). ``streams.kafka.pipeline`` does the decoding, so bad
input becomes dead letters instead of Faust's decode errors.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import faust
import mode
import orjson

from streams.config import PRODUCER_MAX_REQUEST_BYTES, policy_of
from streams.core.adapter import build_core
from streams.core.catalogue import registry_for
from streams.core.clock import Clock
from streams.core.decisions import Decision
from streams.core.errors import BrokerUnavailable, ConfigError, ReplacedLogError
from streams.core.ingest import Decoder
from streams.core.policy import Policy
from streams.core.timeutil import wall_ms
from streams.kafka import bulk_restore, fastpath, tansu
from streams.kafka.changelog_repair import repair_changelogs
from streams.kafka.containment import Contained, DeadLetterOut
from streams.kafka.copartition import Router
from streams.kafka.driver import BatchDriver
from streams.kafka.pipeline import Ingest
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
REDIS_PROBE_SECONDS = 5.0
# A probe that has no answer within this is a failed probe: shorter than the interval, so a
# hung Redis turns /ledger and lifecycle_redis_up within two intervals and probes never overlap.
REDIS_PROBE_TIMEOUT_SECONDS = 2.0
# Each owned input partition's end offset is read from the broker at this interval, whether or
# not the stream fetches: while the stream is paused (a Redis outage holds it) the fetch
# responses stop, and a lag computed from them would freeze exactly when it matters.
END_OFFSETS_SECONDS = 5.0
PRODUCER_LINGER_SECONDS = 0.005
PRODUCER_MAX_BATCH_BYTES = 256 * 1024
# Records per fetch, so per batch (streams/kafka/fastpath.py): a batch's decisions and state wait
# for its end, and the event loop (health, metrics, timers) runs between batches. aiokafka
# hands a fetch out one topic-partition after the other, so a small batch is nearly always one
# topic of one partition; this size still keeps a batch's work well under a second and was the
# faster on a backlog (docs/shell.md). A live stream's fetches are smaller.
MAX_BATCH = 4_000
# The garbage collector's generation thresholds (CPython's default: 700, 10, 10). A worker
# allocates tracked objects on every event, so the default collected very often, and its full
# passes over every tracked object of Faust, aiokafka and the worker were the tail of the
# event-to-decision latency; these about halve its p99 with throughput and RSS unchanged
# (docs/shell.md).
GC_THRESHOLDS = (50_000, 20, 10)


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
    """The app with the batch consumer (``streams/kafka/fastpath.py``).

    ``_new_transport`` and ``_new_producer_transport`` are Faust's (test_faust_privates:
    test_app_transports)."""

    def _new_transport(self) -> Any:
        return fastpath.Transport(self.conf.broker_consumer, self)


class _TansuApp(faust.App):
    """The app on the Tansu broker: exact changelog ends for recovery (``kafka/tansu.py``)."""

    def _new_transport(self) -> Any:
        return tansu.Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return tansu.Transport(self.conf.broker_producer, self)


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


def _table(app: faust.App, settings: Settings, name: str, partitions: int) -> Any:
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


def _publisher(decisions: Any) -> Callable[[Decision], Awaitable[Any]]:
    async def publish(decision: Decision) -> Any:
        return await decisions.send(
            key=decision.candidate.customer_id.encode(),
            value=orjson.dumps(decision.to_record()),
        )

    return publish


def _ledger_gate(
    app: faust.App, settings: Settings, policy: Policy, metrics: Metrics, gate: Gate | None
) -> tuple[Gate, Callable[[], bool]]:
    """The gate (the Redis ledger unless one is given) and whether the ledger is up, probed by
    a task of ``app``."""
    if gate is None:
        ledger = ContactLedger(
            settings.redis_url,
            policy,
            namespace=settings.ledger_namespace,
            wait_replicas=settings.ledger_wait_replicas,
        )
        gate = LedgerGate(ledger, metrics)
    if not isinstance(gate, LedgerGate):
        return gate, lambda: True
    ledger_gate = gate

    @app.task
    async def probe_redis() -> None:
        # A loop, not a timer: each probe is bounded by its timeout and the next starts an
        # interval later, so a hung Redis cannot pile probes up.
        while True:
            await ledger_gate.ping(REDIS_PROBE_TIMEOUT_SECONDS)
            await asyncio.sleep(REDIS_PROBE_SECONDS)

    return gate, lambda: ledger_gate.up


def _run_driver(
    app: faust.App, driver: BatchDriver, source: Any, tick_topic: Any
) -> Callable[[], bool]:
    """The agent, timers, tasks and rebalance signals that drive ``driver`` in ``app``;
    returns the readiness check."""

    async def process(stream: Any) -> AsyncIterator[None]:
        # Subscribes Faust to the inputs and ticks; their records reach the driver instead.
        async for _ in stream.noack():
            yield None

    app.agent(source, name="lifecycle.process", sink=None)(process)

    @app.timer(interval=TICK_INTERVAL_SECONDS)
    async def tick() -> None:
        # Time reaches the driver as a tick per owned partition, in that partition's fetches:
        # in wall mode it fires due items within a second; in both modes it releases records
        # held for event-time ordering.
        for p in sorted(driver.owned):
            await tick_topic.send(value=b"", partition=p)

    @app.timer(interval=GAUGE_INTERVAL_SECONDS)
    async def update_gauges() -> None:
        driver.update_gauges()

    @app.task
    async def read_log_ends() -> None:
        while True:
            await asyncio.sleep(END_OFFSETS_SECONDS)
            await driver.read_log_ends()

    # faust's signal stubs want a receiver typed with its internal signal class; ours takes Any.
    app.on_partitions_assigned.connect(cast(Any, driver.on_partitions_assigned))
    app.on_partitions_revoked.connect(cast(Any, driver.on_partitions_revoked))

    def is_ready() -> bool:
        # Not Redis: a worker that cannot reach the ledger is no reason to keep its pod from
        # being moved (docs/operations.md, "Readiness and the ledger"); /ledger and
        # lifecycle_redis_up say it.
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        return driver.assigned and not app.rebalancing and recovered

    return is_ready


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
    metrics.preset(topics.inputs, registry_for(settings.config).names)
    stream_conf = settings.config["stream"]
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    ticks, repartition = ticks_topic_name(settings), repartition_topic_name(settings)
    dead_letters = app.topic(topics.dead_letters, **raw)
    changelogs = [
        fastpath.BatchedChangelog(_table(app, settings, name, partitions))
        for name in ("customers", "due-index", "stream-time")
    ]

    core = build_core(settings.config)
    # The ledger keeps each decision as long as its goal can resolve (its arm is read then).
    policy = policy_of(settings.config, core.params)
    gate, ledger_ok = _ledger_gate(app, settings, policy, metrics, gate)
    outcomes = app.topic(topics.decision_outcomes, **raw)
    processor = Processor(
        core,
        Stores(customers=changelogs[0], due=changelogs[1], clock=changelogs[2]),
        Clock(settings.clock),
        gate,
        _publisher(app.topic(topics.contact_decisions, **raw)),
        metrics,
        quiet_hours=policy.quiet_hours,
        publish_outcome=(
            (lambda k, v: outcomes.send(key=k, value=v)) if core.tracks_goals() else None
        ),
    )
    limit = stream_conf["dead_letter_max_value_bytes"]
    # Poison records are contained (streams/kafka/containment.py): a record that fails processing
    # is dead-lettered, and a dead letter that can never be sent is skipped, counted.
    contained = Contained(
        processor.step_event_nowait,
        metrics,
        wall_ms,
        stream_conf["processing_error_max_share"],
        stream_conf["processing_error_window"],
        limit,
    )
    decoder = Decoder(stream_conf["max_message_bytes"], stream_conf["max_future_seconds"])
    consumer = cast(fastpath.BatchConsumer, app.consumer)
    driver = BatchDriver(
        consumer=consumer,
        processor=processor,
        ingest=Ingest(topics, decoder, metrics, wall_ms, limit),
        contained=contained,
        dead_letters=DeadLetterOut(lambda k, v: dead_letters.send(key=k, value=v), metrics),
        router=_router(settings, topics, partitions, metrics),
        topics=topics,
        ticks=ticks,
        repartition=repartition,
        forward=app.topic(repartition, **raw).send,
        changelogs=changelogs,
        # faust Producer._ensure_producer (test_faust_privates: test_producer_ensure_producer)
        producer=lambda: app.producer._ensure_producer(),  # type: ignore[attr-defined]
        metrics=metrics,
        cluster=cluster,
        wall_clock=settings.clock == "wall",
        max_order_wait_ms=stream_conf["max_order_wait_ms"],
        order_grace_ms=int(stream_conf["order_grace_ms"]),
        on_replaced=str(stream_conf["on_replaced_log"]),
    )
    consumer.use_batches(driver.topics_fetched, driver.handle, driver.held_back)
    source = app.topic(*driver.applied_from, ticks, **raw, partitions=partitions)
    is_ready = _run_driver(app, driver, source, app.topic(ticks, **raw))
    http = HttpEndpoints(
        metrics, settings.metrics_port, is_ready, ledger_ok=ledger_ok, host=settings.metrics_host
    )
    return Worker(app, metrics, http, processor, changelogs=[c.table for c in changelogs])


class _Worker(faust.Worker):
    """Faust's worker with a bounded stop: SIGTERM or SIGINT arms a watchdog.

    Leaving the group and flushing need the broker; when it went away first, Faust's stop waits
    for it for ever. The crash guarantee makes an exit at any point safe (decisions before
    state, state before offsets: ``streams/kafka/checkpoint.py``), so after
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

    # mode's signal handlers (test_faust_privates: test_worker_signal_handlers)
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
        policy_of(settings.config),
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
