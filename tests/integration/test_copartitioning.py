"""Producers that disagree on the partitioner do not split a customer.

Given the planted scenarios with account events produced by librdkafka (confluent-kafka, whose
default partitioner hashes keys with CRC32) and usage events by aiokafka (murmur2, as Kafka's
Java producer), when a worker expecting murmur2 reads them, then it makes exactly the planted
decisions, as a correctly partitioned run does: the misrouted account events are counted and
forwarded to their customers' partitions. With ``stream.repartition: off`` they are counted and
nothing is repaired (decisions go missing), and a SIGKILL in the middle of a misrouted run loses
and doubles nothing. Input topics whose partition counts differ from each other or from
``--partitions`` stop the worker at start.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka import Producer

from streams.kafka.copartition import crc32_partition, murmur2_partition
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack, dev_environment
from streams.tools.scenarios import all_scenarios
from tests.integration.test_triggers_live import PARTITIONS, START_MS, _expected, _records
from tests.support import (
    WorkerProcess,
    published_decisions,
    run,
    unique_topics,
    write_config,
)

Records = list[tuple[str, int | None, str, bytes]]


async def _produce_mixed(bootstrap: str, topics: TopicNames, records: Records) -> None:
    """Account events through librdkafka (its default partitioner: CRC32 of the key), usage
    events through aiokafka (murmur2), in event-time order: each producer's records are on the
    broker before the other producer's next ones are sent, as two systems emitting events as
    they happen would have them (two producers racing each other would reorder the topics far
    more than the worker's event-time merge waits for, partitioner or not)."""
    crc32_producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    murmur2_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await murmur2_producer.start()
    try:
        futures: list[Any] = []
        last_kind = None
        for kind, partition, key, value in records:
            if kind != last_kind:
                assert crc32_producer.flush(30) == 0
                for f in futures:
                    await f
                futures, last_kind = [], kind
            if kind == "account":
                assert partition is None  # the scenarios' account events: hashed by librdkafka
                crc32_producer.produce(topics.account_events, value, key=key.encode())
                crc32_producer.poll(0)
            else:
                futures.append(
                    await murmur2_producer.send(
                        topics.usage_events, value, key=key.encode(), partition=partition
                    )
                )
        assert crc32_producer.flush(30) == 0
        for f in futures:
            await f
    finally:
        await murmur2_producer.stop()


def _misrouted(records: Records) -> int:
    """Account events whose CRC32 partition is not their murmur2 partition."""
    return sum(
        1
        for kind, _, key, _ in records
        if kind == "account"
        and crc32_partition(key.encode(), PARTITIONS) != murmur2_partition(key.encode(), PARTITIONS)
    )


def _worker(
    stack: DevStack,
    tmp: Path,
    topics: TopicNames,
    app_id: str,
    stream: dict[str, Any] | None = None,
) -> WorkerProcess:
    extra: dict[str, Any] = {"policy": {"holdout_rate": 0}}
    if stream:
        extra["stream"] = stream
    config = write_config(tmp / f"{app_id}.yaml", topics, extra)
    # RocksDB keeps each partition's records apart, as separate workers would: a split
    # customer really has two records (a memory store on one worker shares one dict).
    worker = WorkerProcess(
        stack, config, app_id, tmp / f"{app_id}-state", partitions=PARTITIONS, store="rocksdb"
    )
    worker.start()
    worker.wait_ready()
    return worker


def _decided(stack: DevStack, topics: TopicNames, until: int, timeout: float = 120) -> list[Any]:
    return published_decisions(
        stack.bootstrap_servers,
        topics.contact_decisions,
        until,
        timeout=timeout,
        settle=5,
        distinct=True,
    )


def _scenarios(tag: str) -> tuple[Records, collections.Counter[tuple[str, str]]]:
    scenarios = all_scenarios(START_MS, prefix=f"copart-{tag}")
    return _records(scenarios, tag), _expected(scenarios)


@pytest.mark.parametrize("mode", ["misrouted", "all"])
def test_account_events_hashed_by_crc32_get_exactly_the_planted_decisions(
    dev_stack: DevStack, tmp_path: Path, mode: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    records, expected = _scenarios(tag)
    misrouted = _misrouted(records)
    assert misrouted > 0  # the two partitioners disagree on some of these customers
    topics = unique_topics("copart")
    worker = _worker(dev_stack, tmp_path, topics, f"copart-{tag}", {"repartition": mode})
    try:
        run(_produce_mixed(dev_stack.bootstrap_servers, topics, records))
        published = _decided(dev_stack, topics, sum(expected.values()))
        counted = worker.metric("lifecycle_misrouted_records_total", topic=topics.account_events)
        usage_counted = worker.metric(
            "lifecycle_misrouted_records_total", topic=topics.usage_events
        )
        log = worker.log_text()
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    got = collections.Counter((d["customer_id"], d["trigger"]) for d in published)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, f"missing {dict(missing)}, unexpected {dict(extra)}"
    # Every misrouted record was seen and counted, and said so in the log; none of the usage
    # events (murmur2, as the worker expects) was.
    assert counted == misrouted
    assert usage_counted == 0
    assert "misrouted input record" in log


def _split(tag: str, scenario: str) -> bool:
    """Whether the planted customer of ``scenario`` lands on two partitions (account events by
    CRC32, usage events by murmur2)."""
    key = f"copart-{tag}-{scenario}".encode()
    return crc32_partition(key, PARTITIONS) != murmur2_partition(key, PARTITIONS)


def test_with_repartition_off_misrouted_records_are_counted_not_repaired(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    # A run in which the renewal pitch's customer (a contract, then a positive visit) is split.
    split = "hit-renewal_after_positive_visit"
    tag = next(t for t in (uuid.uuid4().hex[:8] for _ in range(1000)) if _split(t, split))
    records, expected = _scenarios(tag)
    assert (f"copart-{tag}-{split}", "renewal_after_positive_visit") in expected
    topics = unique_topics("copart-off")
    worker = _worker(dev_stack, tmp_path, topics, f"copart-off-{tag}", {"repartition": "off"})
    try:
        run(_produce_mixed(dev_stack.bootstrap_servers, topics, records))
        deadline = time.monotonic() + 90
        while worker.metric("lifecycle_input_records_done_total") < len(records):
            assert time.monotonic() < deadline, worker.log_text()[-3000:]
            time.sleep(0.2)
        published = _decided(dev_stack, topics, sum(expected.values()), timeout=10)
        counted = worker.metric("lifecycle_misrouted_records_total", topic=topics.account_events)
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    assert counted == _misrouted(records)
    got = collections.Counter((d["customer_id"], d["trigger"]) for d in published)
    # The split customer's visit met no contract on its partition: the pitch is missed (the
    # silent fault of the issue), only the counter tells.
    assert (f"copart-{tag}-{split}", "renewal_after_positive_visit") not in got


def test_a_sigkill_during_a_misrouted_run_loses_and_doubles_nothing(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    records, expected = _scenarios(tag)
    topics = unique_topics("copart-kill")
    app_id = f"copart-kill-{tag}"
    first = _worker(dev_stack, tmp_path, topics, app_id)
    run(_produce_mixed(dev_stack.bootstrap_servers, topics, records))
    deadline = time.monotonic() + 60
    # Killed once some misrouted records were forwarded and some decisions made.
    while (
        first.metric("lifecycle_misrouted_records_total", topic=topics.account_events) < 1
        or first.metric(
            "lifecycle_decisions_total", trigger="auto_renew_confirmation", outcome="contact"
        )
        < 1
    ):
        assert time.monotonic() < deadline, first.log_text()[-3000:]
        time.sleep(0.05)
    first.stop(signal.SIGKILL)
    second = _worker(dev_stack, tmp_path, topics, app_id)
    try:
        published = _decided(dev_stack, topics, sum(expected.values()))
    finally:
        assert second.stop() == 0, second.log_text()[-3000:]
    outcomes: dict[str, set[str]] = collections.defaultdict(set)
    for d in published:
        outcomes[d["decision_id"]].add(d["outcome"])
    assert all(len(o) == 1 for o in outcomes.values()), outcomes  # re-published: same outcome
    got = collections.Counter(
        (d["customer_id"], d["trigger"]) for d in {d["decision_id"]: d for d in published}.values()
    )
    missing, extra = expected - got, got - expected
    assert not missing and not extra, f"missing {dict(missing)}, unexpected {dict(extra)}"


async def _create(bootstrap: str, counts: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in counts.items()])
    finally:
        await admin.close()


def _refusal(stack: DevStack, tmp: Path, topics: TopicNames, partitions: int) -> tuple[int, str]:
    config = write_config(tmp / "refused.yaml", topics)
    env = dev_environment(stack)
    env.update(
        {
            "TRIGGERS_CONFIG": str(config),
            "TOPIC_PARTITIONS": str(partitions),
            "METRICS_PORT": "0",
            "APP_ID": f"refused-{uuid.uuid4().hex[:8]}",
            "STATE_DIR": str(tmp / "refused-state"),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "streams", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr.decode()


@pytest.mark.parametrize(
    ("account", "usage", "flag", "says"),
    [
        (4, 6, 4, "must be co-partitioned"),
        (6, 6, 4, "--partitions (TOPIC_PARTITIONS) is 4 but the input topics"),
    ],
    ids=["inputs-differ", "flag-differs"],
)
def test_partition_counts_that_cannot_work_stop_the_worker_at_start(
    dev_stack: DevStack, tmp_path: Path, account: int, usage: int, flag: int, says: str
) -> None:
    topics = unique_topics("copart-refused")
    asyncio.run(
        _create(
            dev_stack.bootstrap_servers,
            {topics.account_events: account, topics.usage_events: usage},
        )
    )
    code, stderr = _refusal(dev_stack, tmp_path, topics, flag)
    assert code == 2, stderr
    assert says in stderr, stderr
    assert "Traceback" not in stderr
