"""A real Prometheus server scrapes a real worker: the counters move, the histograms fill.

Given a worker on the dev stack and Debian's prometheus scraping its /metrics every second,
when planted scenarios and a malformed record flow through it, then Prometheus's HTTP API
returns the moved counters (events, dead letters, triggers, decisions) and samples in the
ledger-latency and event-to-decision histograms.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from streams.tools.devstack import DevStack, free_port
from streams.tools.scenarios import all_scenarios
from tests.integration.test_triggers_live import START_MS, _expected, _produce, _records, _start
from tests.support import consume, produce, run, unique_topics

PROMETHEUS = shutil.which("prometheus")


def _query(port: int, expr: str) -> float:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local test server
        body = json.load(resp)
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="Debian's prometheus package is not installed (make system-deps installs it)",
)
def test_prometheus_sees_the_worker_move(dev_stack: DevStack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = unique_topics("prom")
    worker = _start(dev_stack, tmp_path, topics, f"prom-{tag}")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: lifecycle-triggers\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{worker.metrics_port}']}}]\n"
    )
    assert PROMETHEUS is not None
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        scenarios = all_scenarios(START_MS, prefix=f"prom-{tag}")
        run(_produce(dev_stack.bootstrap_servers, topics, _records(scenarios, tag)))
        run(produce(dev_stack.bootstrap_servers, topics.account_events, [(b"x", b"not json")]))
        run(
            consume(
                dev_stack.bootstrap_servers,
                topics.contact_decisions,
                until=sum(_expected(scenarios).values()),
                timeout=90,
                settle=1,
            )
        )
        wanted = {
            "sum(lifecycle_events_consumed_total)": 100,
            "sum(lifecycle_dead_letters_total)": 1,
            "sum(lifecycle_triggers_fired_total)": 10,
            'sum(lifecycle_decisions_total{outcome="contact"})': 10,
            "sum(lifecycle_ledger_call_seconds_count)": 10,
            'sum(lifecycle_event_to_decision_seconds_count{clock="processing_time"})': 10,
            "max(lifecycle_worker_ready)": 1,
            "max(lifecycle_redis_up)": 1,
        }
        deadline = time.monotonic() + 60
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                seen = {expr: _query(port, expr) for expr in wanted}
            except OSError:
                seen = {}
            if seen and all(seen[e] >= v for e, v in wanted.items()):
                break
            time.sleep(1)
        assert seen and all(seen[e] >= v for e, v in wanted.items()), seen
    finally:
        prom.terminate()
        prom.wait(10)
        assert worker.stop() == 0
