"""Redis down means fail closed: the stream holds, nothing is published, then it resumes.

Given a worker deciding planted scenarios (event clock), when redis-server is stopped in the
middle of the stream and started again a few seconds later, then no decision was published
while Redis was down, the worker resumed by itself, and afterwards every expected decision was
published exactly once per decision id with outcome contact.
"""

from __future__ import annotations

import collections
import time
import uuid
from pathlib import Path

import orjson

from streams.core.timeutil import MS_PER_DAY, parse_rfc3339_ms
from streams.tools.devstack import DevStack
from streams.tools.scenarios import all_scenarios
from tests.integration.test_triggers_live import (
    START_MS,
    _expected,
    _produce,
    _records,
    _start,
)
from tests.support import consume, run, unique_topics


def test_decisions_wait_for_redis_and_none_is_lost_or_doubled(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    assert dev_stack.redis is not None
    tag = uuid.uuid4().hex[:8]
    scenarios = all_scenarios(START_MS, prefix=f"outage-{tag}")
    expected = _expected(scenarios)
    records = _records(scenarios, tag)
    # Split the input in event time: the first 100 days before the outage, the rest during it.
    cut = START_MS + 100 * MS_PER_DAY
    first_half = [
        r for r in records if (parse_rfc3339_ms(orjson.loads(r[3])["occurred_at"]) or 0) < cut
    ]
    second_half = records[len(first_half) :]
    topics = unique_topics("outage")
    worker = _start(dev_stack, tmp_path, topics, f"outage-{tag}")
    port = dev_stack.redis.port
    try:
        run(_produce(dev_stack.bootstrap_servers, topics, first_half))
        before = run(
            consume(
                dev_stack.bootstrap_servers, topics.contact_decisions, until=1, timeout=60, settle=2
            )
        )
        assert before, "the first half decides something (savings drops, visits)"
        dev_stack.redis.stop()
        down_from = time.time() * 1000
        try:
            run(_produce(dev_stack.bootstrap_servers, topics, second_half))
            time.sleep(6)  # time for the worker to reach the ledger and find Redis gone
            during = run(
                consume(
                    dev_stack.bootstrap_servers,
                    topics.contact_decisions,
                    until=len(before),
                    timeout=10,
                    settle=1,
                )
            )
            assert worker.metric("lifecycle_redis_up") == 0
            assert worker.metric("lifecycle_ledger_errors_total", kind="unavailable") > 0
        finally:
            down_until = time.time() * 1000
            dev_stack.redis.start(port=port)
        published = run(
            consume(
                dev_stack.bootstrap_servers,
                topics.contact_decisions,
                until=sum(expected.values()),
                timeout=90,
                settle=5,
            )
        )
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]

    # Then: nothing was published while Redis was down (fail closed) ...
    assert len(during) == len(before)
    assert not [r for r in published if down_from < r.timestamp < down_until]
    # ... and afterwards every expected decision exactly once, decided by the ledger.
    decisions = [orjson.loads(r.value) for r in published]
    got = collections.Counter((d["customer_id"], d["trigger"]) for d in decisions)
    assert got == expected
    ids = collections.Counter(d["decision_id"] for d in decisions)
    assert max(ids.values()) == 1
    assert {d["outcome"] for d in decisions} == {"contact"}
