"""Faust's aiokafka transport, adjusted for the Tansu broker of the dev stack and the tests.

Tansu answers ``ListOffsets(latest)`` with the last record batch's base offset + 1, not the end
of the log. Faust's table recovery reads each changelog's end from it, so with batching
producers it stopped short of the last batch's tail. The fetch response's high watermark is
right on Tansu: this transport asks ListOffsets first, then fetches from just before that
answer (the last batch's base) and takes the high watermark the broker returns, so the producer
can batch normally.

Tansu also holds a fetch that finds no data for the whole of the consumer's
``fetch_max_wait_ms`` (Apache Kafka answers as soon as ``fetch_min_bytes`` arrive), and Faust
hard-codes that wait to 1,500 ms, which is most of the worker's event-to-decision latency on
Tansu. A short wait is not safe there, though: Tansu needs longer to answer a fetch the more
record batches the partition holds, and answers empty when the wait runs out first, so a
consumer with a very short wait can starve on a large partition (a cold recovery never ends).
The worker waits ``FETCH_MAX_WAIT_MS``: the shortest wait that still read a large partition
whole (the measurements: docs/shell.md). Never used against Apache Kafka
(``BROKER_KIND=kafka``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.kafka.fastpath import BatchConsumer

FETCH_MAX_WAIT_MS = 200  # see the module docstring: shorter waits starve large partitions
PROBE_FETCH_WAIT_MS = 10
PROBE_TIMEOUT_SECONDS = 30.0


async def fetch_highwaters(consumer: Any, ends: Mapping[TP, int], timeout: float) -> dict[TP, int]:
    """The end offset of each partition, from fetch responses of a started group-less consumer.

    ``ends`` are ListOffsets(latest) answers (on Tansu: at most one batch short); the consumer
    fetches from one before each and reports the broker's high watermark.
    """
    partitions = list(ends)
    if not partitions:
        return {}
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, max(int(ends[tp]) - 1, 0))
    deadline = time.monotonic() + timeout
    while True:
        missing = [tp for tp in partitions if consumer.highwater(tp) is None]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no fetch response for {sorted(missing)} in {timeout:.0f} s")
        # Records are not needed, only the responses' high watermarks.
        await consumer.getmany(*missing, timeout_ms=100, max_records=1)
    return {tp: max(int(ends[tp]), int(consumer.highwater(tp))) for tp in partitions}


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The consumer thread with exact end offsets on Tansu."""

    # test_faust_privates: test_consumer_thread_methods
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka takes it from here when the consumer starts (no public setter;
        # test_faust_privates: test_aiokafka_fetch_settings_are_read_at_start).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    # test_faust_privates: test_consumer_thread_methods (_highwaters, _create_client_consumer),
    # test_aiokafka_fetch_settings_are_read_at_start (_fetch_max_wait_ms, _enable_auto_commit)
    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        ends = dict(await super()._highwaters(partitions))
        wanted = {tp: end for tp, end in ends.items() if end is not None and end > 0}
        if not wanted:
            return ends
        probe = self._create_client_consumer(cast(Any, self.transport))
        probe._fetch_max_wait_ms = PROBE_FETCH_WAIT_MS
        probe._enable_auto_commit = False
        await probe.start()
        try:
            exact = await asyncio.wait_for(
                fetch_highwaters(probe, wanted, PROBE_TIMEOUT_SECONDS),
                PROBE_TIMEOUT_SECONDS + 5,
            )
        finally:
            await probe.stop()
        ends.update(exact)
        return ends


class Consumer(BatchConsumer):
    """The batch consumer (``streams/kafka/fastpath.py``) with the Tansu consumer thread."""

    # test_faust_privates: test_consumer_methods_the_batch_loop_calls
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """``faust.transport.drivers.aiokafka.Transport`` with the Tansu consumer."""

    Consumer = Consumer
