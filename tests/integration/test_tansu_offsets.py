"""The Tansu transport's end offsets (streams/kafka/tansu.py) are the log's end, batches or not.

Tansu answers ListOffsets(latest) with the last batch's base offset + 1; table recovery needs
the true end, which the transport takes from a fetch's high watermark. With it the worker's
producer batches normally and recovery still restores every changelog record (the restart
tests in test_triggers_live.py, test_crash_under_load.py and test_rolling_restart.py).
"""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka.tansu import fetch_highwaters
from streams.tools.devstack import DevStack
from tests.support import run


async def _produce_batches(bootstrap: str, topic: str, batches: dict[int, list[int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, sizes in batches.items():
            for size in sizes:
                batch = producer.create_batch()
                for i in range(size):
                    batch.append(key=None, value=f"v{i}".encode(), timestamp=None)
                batch.close()
                fut = await producer.send_batch(batch, topic, partition=partition)
                await fut
    finally:
        await producer.stop()


async def _ends(bootstrap: str, topic: str, partitions: int) -> tuple[dict[int, int], ...]:
    listed = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await listed.start()
    await probe.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        answered = await listed.end_offsets(tps)
        exact = await fetch_highwaters(probe, {tp: answered[tp] for tp in tps}, timeout=20)
        return (
            {tp.partition: answered[tp] for tp in tps},
            {tp.partition: exact[tp] for tp in tps},
        )
    finally:
        await probe.stop()
        await listed.stop()


def test_fetch_highwaters_are_the_end_of_multi_record_batches(dev_stack: DevStack) -> None:
    topic = f"tansu-ends-{uuid.uuid4().hex[:8]}"
    dev_stack.create_topics((topic,), 3)
    # partition 0: batches of 5, 5 and 7 records; 1: one record; 2: empty
    run(_produce_batches(dev_stack.bootstrap_servers, topic, {0: [5, 5, 7], 1: [1]}))
    _, exact = run(_ends(dev_stack.bootstrap_servers, topic, 3))
    assert exact == {0: 17, 1: 1, 2: 0}
