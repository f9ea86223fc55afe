"""A processing error the worker cannot wait out stops it; nothing past it is lost.

Given a worker deciding planted scenarios, when one customer's ledger key holds a value of the
wrong type (Redis answers WRONGTYPE: not an outage, so not retried), then the worker stops
with a non-zero exit and a log line naming the error, instead of running on without that
input. Once the key is repaired, a restart over the same group decides everything that was
planted, each decision id with one outcome.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import redis

from streams.ledger import customer_keys
from streams.tools.devstack import DevStack
from streams.tools.scenarios import all_scenarios
from tests.integration.test_triggers_live import START_MS, _expected, _produce, _records, _start
from tests.support import consume, decision_id, run, unique_topics


def test_a_ledger_error_stops_the_worker_and_a_restart_decides_everything(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    assert dev_stack.redis is not None
    tag = uuid.uuid4().hex[:8]
    scenarios = all_scenarios(START_MS, prefix=f"poison-{tag}")
    expected = _expected(scenarios)
    victim = next(s for s in scenarios if s.expected).customer_id
    topics = unique_topics("poison")
    app_id = f"poison-{tag}"
    r = redis.Redis(port=dev_stack.redis.port)
    poisoned = customer_keys(app_id, victim)[0]  # the decision hash
    r.set(poisoned, "not a hash")
    worker = _start(dev_stack, tmp_path, topics, app_id)
    try:
        run(_produce(dev_stack.bootstrap_servers, topics, _records(scenarios, tag)))
        assert worker.proc is not None
        code = worker.proc.wait(timeout=90)
    finally:
        worker.stop()
    assert code != 0
    log = worker.log_text()
    assert "WRONGTYPE" in log, log[-3000:]

    r.delete(poisoned)
    again = _start(dev_stack, tmp_path, topics, app_id)
    try:
        published = run(
            consume(
                dev_stack.bootstrap_servers,
                topics.contact_decisions,
                until=sum(expected.values()),
                timeout=120,
                settle=3,
                distinct=decision_id,
            )
        )
    finally:
        again.stop()
    outcomes: dict[str, set[str]] = {}
    decided: set[tuple[str, str]] = set()
    for record in published:
        d = orjson.loads(record.value)
        outcomes.setdefault(d["decision_id"], set()).add(d["outcome"])
        decided.add((d["customer_id"], d["trigger"]))
    assert all(len(o) == 1 for o in outcomes.values())
    assert set(expected) <= decided
    assert any(customer == victim for customer, _ in decided)
