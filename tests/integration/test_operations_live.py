"""Monitoring that stays true during an outage, on the real broker with two workers.

Given two workers sharing four partitions (the second joined after the first had them all),
then each partition's series (lag, due items) is exported by exactly one worker. When Redis
hangs (SIGSTOP) and records keep arriving, then /ledger and lifecycle_redis_up turn within two
probe intervals while /ready stays 200 (a worker that cannot decide may still be moved), and the
summed consumer lag grows with the records produced although the stream is paused; after
SIGCONT it drains to 0. The first worker logs JSON, every line of it, Faust's included.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from streams.core.timeutil import format_ms
from streams.tools.devstack import DevStack
from tests.integration.test_triggers_live import POLICY
from tests.support import WorkerProcess, produce, run, unique_topics, write_config

PARTITIONS = 4
PROBE_SECONDS = 5.0  # streams/kafka/app.py: REDIS_PROBE_SECONDS


def _series(worker: WorkerProcess, name: str) -> dict[tuple[str, ...], float]:
    """Every sample of ``name`` on the worker's /metrics: label values (sorted by label name)
    to value."""
    _, text = worker.get("/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1 :].rpartition("} ")
            pairs = sorted(p.split("=", 1) for p in labels.split(","))
            out[tuple(v.strip('"') for _, v in pairs)] = float(value)
    return out


def _owned(worker: WorkerProcess) -> set[str]:
    return {partition for (partition,) in _series(worker, "lifecycle_due_items")}


def _summed_lag(workers: list[WorkerProcess]) -> float:
    return sum(sum(_series(w, "lifecycle_consumer_lag_records").values()) for w in workers)


def _wait(what: str, check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s")


def _events(tag: str, n: int, kind: str) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000) - 3_600_000
    out = []
    for i in range(n):
        cid = f"ops-{tag}-{i % 40}"
        body = {
            "event_id": f"{tag}-{kind}-{i}",
            "customer_id": cid,
            "type": kind,
            "occurred_at": format_ms(now + i),
        }
        body.update(
            {
                "complaint": {"category": "billing"},
                "visit": {"venue": "Main St", "sentiment": "neutral"},
                "account_opened": {"account_id": f"{cid}-sav", "account_type": "savings"},
            }[kind]
        )
        out.append((cid.encode(), orjson.dumps(body)))
    return out


def test_series_follow_ownership_and_lag_and_health_stay_true_while_redis_hangs(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    assert dev_stack.redis is not None and dev_stack.redis.proc is not None
    tag = uuid.uuid4().hex[:8]
    topics = unique_topics("ops")
    config = write_config(tmp_path / "ops.yaml", topics, POLICY)
    app_id = f"ops-{tag}"

    def make(name: str, env: dict[str, str]) -> WorkerProcess:
        return WorkerProcess(
            dev_stack,
            config,
            app_id,
            tmp_path / f"state-{name}",
            partitions=PARTITIONS,
            extra_env=env,
        )

    a = make("a", {"LOG_FORMAT": "json"}).start()
    workers = [a]
    redis_pid = dev_stack.redis.proc.pid
    stopped = False
    try:
        a.wait_ready()
        _wait("a owns every partition", lambda: len(_owned(a)) == PARTITIONS, 60)
        b = make("b", {}).start()
        workers.append(b)
        b.wait_ready(90)

        def split() -> bool:
            mine, theirs = _owned(a), _owned(b)
            return bool(mine) and bool(theirs) and len(mine) + len(theirs) == PARTITIONS

        _wait("the two workers share the partitions", split, 90)
        # Then: every partition's series on exactly one worker (a's revoked ones are gone).
        for name in ("lifecycle_consumer_lag_records", "lifecycle_due_items"):
            seen = [p for w in workers for p in {k[0] for k in _series(w, name)}]
            assert sorted(seen) == [str(p) for p in range(PARTITIONS)], (name, seen)

        # Both input topics: the event-time merge waits for news of the other one.
        run(produce(dev_stack.bootstrap_servers, topics.usage_events, _events(tag, 40, "visit")))
        opened = _events(tag, 40, "account_opened")
        run(produce(dev_stack.bootstrap_servers, topics.account_events, opened))
        _wait(
            "records are done with", lambda: a.metric("lifecycle_input_records_done_total") > 0, 60
        )
        _wait("the first records are done with", lambda: _summed_lag(workers) == 0, 60)

        # When Redis hangs ...
        os.kill(redis_pid, signal.SIGSTOP)
        stopped = True
        hung_at = time.monotonic()
        # ... records that need the ledger (complaints) come first, then more records.
        run(
            produce(dev_stack.bootstrap_servers, topics.usage_events, _events(tag, 40, "complaint"))
        )
        run(produce(dev_stack.bootstrap_servers, topics.usage_events, _events(tag, 400, "visit")))
        more = _events(f"{tag}x", 200, "account_opened")
        run(produce(dev_stack.bootstrap_servers, topics.account_events, more))

        def ledger_down() -> bool:
            return all(
                w.get("/ledger")[0] == 503 and w.metric("lifecycle_redis_up") == 0 for w in workers
            )

        _wait("/ledger 503 and redis_up 0", ledger_down, 2 * PROBE_SECONDS + 5)
        assert time.monotonic() - hung_at <= 2 * PROBE_SECONDS + 1, "turned too late"
        assert all(w.get("/ready")[0] == 200 for w in workers)
        # The lag grows while the stream is paused: ends are read from the broker.
        try:
            _wait("the lag shows the records produced", lambda: _summed_lag(workers) >= 600, 40)
        except AssertionError:
            raise AssertionError(
                [_series(w, "lifecycle_consumer_lag_records") for w in workers]
                + [w.metric("lifecycle_input_records_done_total") for w in workers]
                + [_series(w, "lifecycle_events_consumed_total") for w in workers]
            ) from None
    finally:
        if stopped:
            os.kill(redis_pid, signal.SIGCONT)
    try:
        _wait("the lag drains after Redis is back", lambda: _summed_lag(workers) == 0, 90)
        assert all(w.get("/ledger")[0] == 200 for w in workers)
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]

    # The JSON log: every line an object, Faust's lines included, the metrics URL as bound.
    lines = [line for line in a.log_text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "message"} <= set(docs[0])
    loggers = {d["logger"] for d in docs}
    assert any(name.startswith(("faust", "aiokafka")) for name in loggers), loggers
    assert any(
        d["message"].startswith(f"metrics on http://127.0.0.1:{a.metrics_port}/metrics")
        for d in docs
    )
    # Faust's start-up tables and per-service lines are at DEBUG, not in an INFO log.
    assert not [d for d in docs if d["message"].startswith("[^") and "Starting" in d["message"]]
