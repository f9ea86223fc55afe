"""Two workers share the partitions; one is killed with SIGKILL while scenarios stream.

Given the same input as an uninterrupted single-worker run, when worker A is SIGKILLed in the
middle of the stream, then worker B takes over A's partitions, restores their state and due
items from the changelog and goes on; afterwards every planted decision was made, no decision
id was published with two outcomes, the ledger recorded each decision id once, every decision's
outcome record (decision-outcomes) was published with one content, the reference's, and the
final state equals the uninterrupted run's. The takeover time and the number of re-published
duplicates are printed (figures, not assertions).
"""

from __future__ import annotations

import asyncio
import collections
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

from streams.config import build_config
from streams.core.adapter import build_core
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack
from streams.tools.scenarios import Scenario, all_scenarios
from tests.integration.test_triggers_live import (
    POLICY,
    START_MS,
    _expected,
    _produce,
    _records,
)
from tests.support import (
    WorkerProcess,
    consume,
    decision_id,
    published_decisions,
    read_changelog,
    run,
    unique_topics,
    write_config,
)

PARTITIONS = 8
GROUPS = 6  # six customers per trigger and near-miss


def _scenarios(tag: str) -> list[Scenario]:
    return [s for g in range(GROUPS) for s in all_scenarios(START_MS, prefix=f"load-{tag}-{g}")]


def _worker(
    stack: DevStack, tmp: Path, topics: TopicNames, app_id: str, name: str
) -> WorkerProcess:
    config = write_config(tmp / f"{app_id}.yaml", topics, POLICY)
    return WorkerProcess(stack, config, app_id, tmp / f"{app_id}-{name}", partitions=PARTITIONS)


async def _paced(bootstrap: str, topics: TopicNames, records: list[Any], seconds: float) -> None:
    chunk = max(1, len(records) // 20)
    for i in range(0, len(records), chunk):
        await _produce(bootstrap, topics, records[i : i + chunk])
        await asyncio.sleep(seconds / 20)


def _ledger_ids(stack: DevStack, namespace: str, customers: set[str]) -> dict[str, set[str]]:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return {
            c: {k.decode() for k in client.hkeys(f"{namespace}:{{{c}}}:dec")} for c in customers
        }
    finally:
        client.close()


def _outcomes(stack: DevStack, topics: TopicNames, at_least: int) -> dict[str, set[bytes]]:
    """Every outcome record on the topic, by decision id: the distinct values seen."""
    found: dict[str, set[bytes]] = collections.defaultdict(set)
    for r in run(
        consume(
            stack.bootstrap_servers,
            topics.decision_outcomes,
            until=at_least,
            timeout=60,
            settle=5,
            distinct=decision_id,
        )
    ):
        assert r.value is not None
        found[orjson.loads(r.value)["decision_id"]].add(r.value)
    return dict(found)


def test_sigkill_of_one_of_two_workers_loses_and_doubles_nothing(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    scenarios = _scenarios(tag)
    expected = _expected(scenarios)
    total = sum(expected.values())
    records = _records(scenarios, tag, PARTITIONS)

    # The reference: one worker, no interruption.
    ref_topics = unique_topics("lref")
    ref = _worker(dev_stack, tmp_path, ref_topics, f"lref-{tag}", "a").start()
    try:
        ref.wait_ready()
        run(_produce(dev_stack.bootstrap_servers, ref_topics, records))
        reference = published_decisions(
            dev_stack.bootstrap_servers, ref_topics.contact_decisions, total, 120, 5, distinct=True
        )
        ref_outcomes = _outcomes(dev_stack, ref_topics, 1)
    finally:
        assert ref.stop() == 0
    ref_state = run(read_changelog(dev_stack.bootstrap_servers, f"lref-{tag}-customers-changelog"))

    # Two workers; A dies with SIGKILL while the input streams in.
    topics = unique_topics("load")
    app_id = f"load-{tag}"
    a = _worker(dev_stack, tmp_path, topics, app_id, "a").start()
    b = _worker(dev_stack, tmp_path, topics, app_id, "b").start()
    try:
        a.wait_ready()
        b.wait_ready()
        streamer = threading.Thread(
            target=run, args=(_paced(dev_stack.bootstrap_servers, topics, records, 8.0),)
        )
        streamer.start()
        time.sleep(3)
        rebalances_before = b.metric("lifecycle_rebalances_total")
        killed_at = time.monotonic()
        a.stop(signal.SIGKILL)
        # Takeover: until B has been through a new assignment and processes again.
        while b.metric("lifecycle_rebalances_total") <= rebalances_before:
            assert time.monotonic() - killed_at < 60, "no takeover within 60 s"
            time.sleep(0.1)
        b.wait_ready()
        takeover = time.monotonic() - killed_at
        streamer.join(60)
        published = published_decisions(
            dev_stack.bootstrap_servers, topics.contact_decisions, total, 120, 5, distinct=True
        )
        crash_outcomes = _outcomes(dev_stack, topics, len(ref_outcomes))
    finally:
        assert b.stop() == 0, b.log_text()[-3000:]
    state = run(read_changelog(dev_stack.bootstrap_servers, f"{app_id}-customers-changelog"))

    outcomes: dict[str, set[str]] = collections.defaultdict(set)
    for d in published:
        outcomes[d["decision_id"]].add(d["outcome"])
    duplicates = len(published) - len(outcomes)
    print(
        f"\ntakeover after SIGKILL: {takeover:.1f} s; re-published duplicates: {duplicates} "
        f"of {len(outcomes)} decisions"
    )
    # Every decision id has one outcome; the set of decisions is the reference's.
    assert all(len(o) == 1 for o in outcomes.values())
    key = ("customer_id", "trigger", "instance", "outcome")
    assert {tuple(d[k] for k in key) for d in published} == {
        tuple(d[k] for k in key) for d in reference
    }
    assert (
        collections.Counter(
            (d["customer_id"], d["trigger"])
            for d in {d["decision_id"]: d for d in published}.values()
        )
        == expected
    )
    # The ledger recorded exactly the published decision ids, each once (a hash keyed by id).
    by_customer: dict[str, set[str]] = collections.defaultdict(set)
    for d in published:
        by_customer[d["customer_id"]].add(d["decision_id"])
    recorded = _ledger_ids(dev_stack, app_id, set(by_customer))
    assert {c: ids for c, ids in recorded.items() if ids != by_customer[c]} == {}
    # One outcome per decision with a goal, the same bytes as the uninterrupted run's however
    # often it was re-published.
    converted = sum(orjson.loads(next(iter(v)))["converted"] for v in ref_outcomes.values())
    print(f"outcome records: {len(ref_outcomes)} ({converted} converted)")
    assert len(ref_outcomes) >= 10
    assert {i: v for i, v in crash_outcomes.items() if len(v) != 1} == {}
    assert crash_outcomes == ref_outcomes
    # The final state equals the uninterrupted run's, customer by customer.
    core = build_core(build_config())
    assert set(state) == set(ref_state)
    for customer, raw in state.items():
        assert core.load(raw) == core.load(ref_state[customer]), customer
