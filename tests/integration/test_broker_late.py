"""A worker started before its broker waits for it, then works.

Given a port where no broker listens yet, when a worker is started with
``KAFKA_BOOTSTRAP_SERVERS`` pointing there, then it logs one line naming the option, the
address and the wait, and keeps running; when a real broker (Tansu) then starts on that port,
the worker creates its topics, becomes ready, and the planted scenarios produced to it get
exactly their decisions.
"""

from __future__ import annotations

import collections
import time
import uuid
from pathlib import Path

from streams.tools.devstack import DevStack, TansuBroker, free_port
from streams.tools.scenarios import all_scenarios
from tests.integration.test_triggers_live import (
    PARTITIONS,
    POLICY,
    START_MS,
    _decisions,
    _expected,
    _produce,
    _records,
)
from tests.support import WorkerProcess, consume, run, unique_topics, write_config

WAIT_SECONDS = 120


def _wait_for_line(worker: WorkerProcess, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log_text():
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in:\n{worker.log_text()[-3000:]}"
        time.sleep(0.1)


def test_a_worker_started_before_its_broker_waits_then_decides(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    scenarios = all_scenarios(START_MS, prefix=f"late-{tag}")
    expected = _expected(scenarios)
    topics = unique_topics("late")
    app_id = f"late-{tag}"
    port = free_port()
    address = f"127.0.0.1:{port}"
    broker = TansuBroker(tmp_path)
    worker = WorkerProcess(
        dev_stack,
        write_config(tmp_path / f"{app_id}.yaml", topics, POLICY),
        app_id,
        tmp_path / f"{app_id}-state",
        partitions=PARTITIONS,
        extra_env={"KAFKA_BOOTSTRAP_SERVERS": address, "BROKER_WAIT_SECONDS": str(WAIT_SECONDS)},
    )
    worker.start()
    try:
        waiting = (
            f"--bootstrap-servers (KAFKA_BOOTSTRAP_SERVERS): no broker answers at {address}; "
            f"retrying for up to {WAIT_SECONDS} s"
        )
        _wait_for_line(worker, waiting)
        time.sleep(2)  # a few retries while the broker is still absent
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_text()[-3000:]
        assert worker.log_text().count("no broker answers") == 1  # one line, not one per retry
        assert "Traceback" not in worker.log_text()

        broker.start(port=port)
        worker.wait_ready(timeout=90)
        run(_produce(address, topics, _records(scenarios, tag)))
        published = _decisions(
            run(
                consume(
                    address,
                    topics.contact_decisions,
                    until=sum(expected.values()),
                    timeout=90,
                    settle=5,
                )
            )
        )
        assert worker.stop() == 0, worker.log_text()[-3000:]
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.stop()
        broker.stop()
    got = collections.Counter((d["customer_id"], d["trigger"]) for d in published)
    assert got == expected, f"missing {dict(expected - got)}, unexpected {dict(got - expected)}"
    assert "a broker answers at" in worker.log_text()
