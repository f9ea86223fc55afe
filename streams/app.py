"""The Faust wiring, all in one place: topics, the agent, health, and the worker's start.

The app is built by a function from a validated, frozen Settings object; there is no
module-level app. Both input topics (co-partitioned, keyed by customer id) feed one agent as
raw bytes; ``streams.pipeline`` does the decoding, so bad input becomes dead letters instead of
Faust's decode errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import faust
import mode

from streams.errors import ConfigError
from streams.http import HttpEndpoints
from streams.ingest import Decoder
from streams.metrics import Metrics
from streams.pipeline import Ingest, Rejected
from streams.settings import Settings
from streams.timeutil import wall_ms
from streams.topics import TopicNames, check_copartitioned, ensure_topics

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """A built app and what runs beside it."""

    app: faust.App
    metrics: Metrics
    http: HttpEndpoints


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
        "consumer_auto_offset_reset": "earliest",
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    if settings.broker_kind == "tansu":
        # Tansu answers ListOffsets(latest) with the last batch's base offset + 1, so changelog
        # recovery would drop the tail of a multi-record batch: one record per batch avoids it.
        conf["producer_max_batch_size"] = 1
    return conf


def build_worker(settings: Settings) -> Worker:
    """Build the Faust app for ``settings``: topics, the processing agent, health endpoints."""
    app = faust.App(settings.app_id, **_faust_settings(settings))
    metrics = Metrics()
    topics = TopicNames.from_config(settings.topics)
    stream_conf = settings.config["stream"]
    ingest = Ingest(
        topics,
        Decoder(stream_conf["max_message_bytes"], stream_conf["max_future_seconds"]),
        metrics,
        wall_ms,
    )
    source = app.topic(*topics.inputs, key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(topics.dead_letters, key_serializer="raw", value_serializer="raw")

    async def process(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            msg = event.message
            result = ingest.accept(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
            if isinstance(result, Rejected):
                # Buffered; Faust flushes the producer before it commits this offset.
                await dead_letters.send(key=result.key, value=result.value)
            yield None

    app.agent(source, name="lifecycle.process", sink=None)(process)

    assigned = {"value": False}

    async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned["value"] = True

    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned["value"] = False

    # faust's signal stubs want a receiver typed with its internal signal class; ours takes Any.
    app.on_partitions_assigned.connect(cast(Any, on_assigned))
    app.on_partitions_revoked.connect(cast(Any, on_revoked))

    def is_ready() -> bool:
        return (
            assigned["value"] and not app.rebalancing and app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        )

    http = HttpEndpoints(metrics, settings.metrics_port, is_ready)
    return Worker(app, metrics, http)


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
    """Create missing contract topics; refuse input topics that are not co-partitioned."""
    topics = TopicNames.from_config(settings.topics)
    counts = await ensure_topics(
        settings.bootstrap_servers, topics.all, settings.partitions, settings.replication_factor
    )
    return check_copartitioned(topics, counts)


def run_worker(settings: Settings) -> int:
    """Run the stream processor until SIGTERM/SIGINT; then leave the group and flush."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        partitions = loop.run_until_complete(prepare_topics(settings))
    except ConfigError:
        loop.close()
        raise
    log.info(
        "starting %s: brokers %s, redis %s, clock %s, %d input partitions, store %s",
        settings.app_id,
        settings.bootstrap_servers,
        settings.redis_url_masked,
        settings.clock,
        partitions,
        settings.store,
    )
    if settings.store == "rocksdb":
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    built = build_worker(settings)
    worker = faust.Worker(
        built.app,
        _HttpService(built.http, loop=loop),
        loop=loop,
        loglevel=settings.log_level.upper(),
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()
    return 0  # pragma: no cover - execute_from_commandline exits
