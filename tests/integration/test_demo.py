"""``lifecycle-triggers demo`` end to end, at a small size, through the real command line.

Given a fresh machine state (the demo starts its own dev stack), when the demo runs with a
small simulation, then it exits 0 and its summary says every planted scenario was found and
no near-miss fired, with a row for every trigger of the catalogue, and it stopped what it
started (no worker left behind).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from streams.core.catalogue import builtin_registry
from streams.tools.simulator import load_truth


def _cli() -> list[str]:
    return [sys.executable, "-m", "streams"]  # the real console entry point


def test_demo_finds_every_planted_scenario_and_no_near_miss(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    result = subprocess.run(
        [
            *_cli(),
            "demo",
            "--customers",
            "120",
            "--days",
            "760",
            "--partitions",
            "4",
            "--seed",
            "3",
            "--truth",
            str(truth),
        ],
        capture_output=True,
        text=True,
        timeout=85,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    assert "result: every planted scenario was found and no near-miss fired" in out
    # stdout is not a terminal here: plain progress lines, no cursor movement.
    assert "\x1b[" not in out
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)\s+(\d.*)$", out, re.M)}
    assert set(builtin_registry().names) <= set(rows)
    for trigger in builtin_registry().names:
        planted, found, missed, near, near_fired, *_ = (int(x) for x in rows[trigger].split())
        assert planted >= 1 and found == planted and missed == 0, (trigger, rows[trigger])
        assert near >= 1 and near_fired == 0, (trigger, rows[trigger])
    assert re.search(r"processed in [\d.]+ s: [\d,]+ events/s; demo took [\d.]+ s", out)
    assert "/metrics" in out
    run, expectations = load_truth(truth)
    assert run["customers"] == 120 and expectations
