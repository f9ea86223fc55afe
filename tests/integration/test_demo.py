"""``lifecycle-triggers demo`` end to end, at a small size, through the real command line.

Given a fresh machine state (the demo starts its own dev stack), when the demo runs with a
small simulation, then it exits 0 and its summary says every planted scenario was found and
no near-miss fired, with a row for every trigger of the catalogue; it ends with the lift of the
planted decisions (read from decision-outcomes) beside the planted lift and the coverage line;
and it stopped what it started (no worker left behind).
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
    # The summary's rows (the lift table further down has rows of the same names).
    summary = out[out.index("summary: ground truth") : out.index("suppressed by reason")]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)\s+(\d.*)$", summary, re.M)}
    assert set(builtin_registry().names) <= set(rows)
    for trigger in builtin_registry().names:
        planted, found, missed, near, near_fired, *_ = (int(x) for x in rows[trigger].split())
        assert planted >= 1 and found == planted and missed == 0, (trigger, rows[trigger])
        assert near >= 1 and near_fired == 0, (trigger, rows[trigger])
    assert re.search(r"processed in [\d.]+ s: [\d,]+ events/s; demo took [\d.]+ s", out)
    assert "/metrics" in out
    run, expectations = load_truth(truth)
    assert run["customers"] == 120 and expectations
    # The lift of the planted decisions, read back from decision-outcomes, beside the planted
    # lift: the report's table with a row per planted marketing trigger with a goal, then the
    # comparison and the coverage line. At this size most intervals say nothing; the coverage
    # itself is tested at scale in tests/unit/test_planted_lift.py.
    lift = out[out.index("\nlift: the outcomes of the ") :]
    assert re.search(r"^trigger\s+contacted\s+rate\s+holdout\s+rate\s+absolute lift", lift, re.M)
    assert re.search(r"^overall\s+\d+", lift, re.M), lift
    planted = run["planted_lift"]
    assert planted and all(p["lift"] == 0.2 for p in planted.values())
    for trigger in planted:
        assert re.search(rf"^{trigger}\s+\+20\.00%\s+(not enough holdouts|[+-]\d)", lift, re.M), (
            trigger,
            lift,
        )
    coverage = re.search(
        r"^planted lift inside the 95 % interval for (\d+) of (\d+) triggers"
        r"(?: \((\d+) more with not enough holdouts\))?$",
        lift,
        re.M,
    )
    assert coverage, lift
    inside, informative, short = (int(g or 0) for g in coverage.groups())
    assert inside <= informative and informative + short == len(planted)
    without = re.search(r"^([\d,]+) of ([\d,]+) published decisions with a goal have an outcome; "
                        r"([\d,]+) have none yet", lift, re.M)  # fmt: skip
    assert without, lift
    have, total, missing = (int(g.replace(",", "")) for g in without.groups())
    assert have + missing == total and have > 0
