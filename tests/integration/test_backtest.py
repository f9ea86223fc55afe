"""``lifecycle-triggers backtest``: replays history in a ledger namespace of its own.

Given a production ledger key in the dev stack's Redis (namespace ``lt``) and a JSON-lines file
of simulated history, when the back-test replays the file against that Redis, then the
production key is byte-identical afterwards, the back-test's own keys are gone, and its report
counts exactly the decisions the in-process core predicts, with cap hits and conflicts.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from streams.config import build_config
from streams.core.errors import ConfigError
from streams.tools.backtest import BacktestReport, read_jsonl, run_backtest
from streams.tools.devstack import DevStack
from streams.tools.simulator import SimConfig, generate


def _history(path: Path) -> int:
    """A JSON-lines file of a small simulation's valid events (what a bank would export)."""
    sim = generate(SimConfig(customers=60, days=400, seed=5, partitions=8, malformed_rate=0))
    lines = [r.value for r in sim.records if r.valid]
    path.write_bytes(b"\n".join(lines) + b"\n" + b'{"not": "an event"}\n')
    return sim.expected_decisions


def test_backtest_leaves_the_production_ledger_alone(dev_stack: DevStack, tmp_path: Path) -> None:
    client = redis.Redis.from_url(dev_stack.redis_url)
    production = "lt:{c-00007}:mk"  # a production ledger key of a customer in the history
    client.zadd(production, {"renewal_reminder|d-123": 1_700_000_000_000})
    before = client.dump(production)
    keys_before = set(client.keys("lt:*"))
    events = tmp_path / "history.jsonl"
    expected = _history(events)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "backtest",
            "--events",
            str(events),
            "--redis-url",
            dev_stack.redis_url,
            "--namespace",
            "bt-test",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    # Isolation: the production key is untouched, and nothing else appeared under "lt".
    assert client.dump(production) == before
    assert set(client.keys("lt:*")) == keys_before
    assert client.keys("bt-test:*") == []  # its own keys are deleted afterwards
    # Sane numbers: every candidate the core fires is decided once, with some outcome.
    assert report["namespace"] == "bt-test"
    assert report["invalid"] == 1 and report["customers"] > 60
    assert report["decisions_total"] == expected
    outcomes = {o for counts in report["decisions"].values() for o, n in counts.items() if n}
    assert "contact" in outcomes
    assert sum(report["cap_hits_by_reason"].values()) >= sum(
        counts["suppressed"] for counts in report["decisions"].values()
    )
    assert report["conflicts"] == sum(report["conflict_sets"].values())
    client.close()


def test_backtest_keeps_its_namespace_on_request_and_refuses_production(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    events = tmp_path / "history.jsonl"
    _history(events)
    config = build_config({"policy": {"holdout_rate": 0}})
    report = BacktestReport("")

    async def go(namespace: str, keep: bool) -> BacktestReport:
        return await run_backtest(
            read_jsonl(events, report),
            redis_url=dev_stack.redis_url,
            config=config,
            namespace=namespace,
            keep_ledger=keep,
            report=report,
        )

    kept = asyncio.run(go("bt-kept", True))
    assert kept.decisions and not any(o == "holdout" for _, o in kept.decisions)
    client = redis.Redis.from_url(dev_stack.redis_url)
    assert client.keys("bt-kept:*")
    for key in client.scan_iter("bt-kept:*"):
        client.delete(key)
    client.close()
    with pytest.raises(ConfigError, match="production"):
        asyncio.run(go("lt", False))
    assert orjson.dumps(kept.to_json())  # the JSON report serializes
