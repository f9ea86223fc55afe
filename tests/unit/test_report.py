"""``lifecycle-triggers report`` on files of outcome records."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from streams.cli import main
from streams.tools.lift import Arm, lift
from streams.tools.report import NOT_ENOUGH, build, read_file


def outcome(n: int, trigger: str, arm: str, converted: bool, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "decision_id": f"d-{trigger}-{n}",
        "customer_id": f"c-{n}",
        "trigger": trigger,
        "action": "a",
        "channel": "email",
        "arm": arm,
        "converted": converted,
        "decided_at": f"2026-03-{1 + n % 28:02d}T10:00:00Z",
        "window_end": "2026-05-01T00:00:00Z",
        "schema_version": 1,
    }
    if converted:
        record.update(converted_at="2026-03-29T00:00:00Z", converting_event_id=f"e-{n}")
    record.update(extra)
    return record


def arm_records(trigger: str, arm: str, n: int, conversions: int, start: int = 0) -> list[Any]:
    return [outcome(start + i, trigger, arm, i < conversions) for i in range(n)]


def write(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_counts_each_decision_once_and_skips_what_is_not_an_outcome(tmp_path: Path) -> None:
    records = arm_records("never_activated", "contact", 10, 4)
    records.append(records[0])  # a replayed record: the same decision again
    bad = [{"decision_id": "x", "trigger": "t", "arm": "sideways", "converted": True}, [1, 2]]
    path = write(tmp_path / "o.jsonl", records + bad)
    with path.open("a") as f:
        f.write("{not json\n")
    report = build(read_file(path), None, None)
    assert report.records == 10 and report.duplicates == 1
    assert len(report.skipped) == 3
    assert "arm 'sideways'" in report.skipped[0] and "o.jsonl:12" in report.skipped[0]
    assert report.rows["never_activated"].arms["contact"] == Arm(10, 4, 0.0)


def test_the_time_range_is_on_decided_at(tmp_path: Path) -> None:
    records = arm_records("never_activated", "contact", 28, 0)
    path = write(tmp_path / "o.jsonl", records)
    report = build(read_file(path), 1772359200000 + 86_400_000, 1772359200000 + 3 * 86_400_000)
    # 2026-03-01T10:00Z is 1772359200000: [Mar 2 10:00, Mar 4 10:00) holds Mar 2 and Mar 3.
    assert report.rows["never_activated"].arms["contact"].n == 2


def test_rows_per_trigger_overall_and_programme(tmp_path: Path, capsys: Any) -> None:
    records = (
        arm_records("never_activated", "contact", 400, 80)
        + arm_records("never_activated", "holdout", 400, 40, start=400)
        + arm_records("replacement_due", "contact", 50, 5)
        + arm_records("replacement_due", "holdout", 2, 0, start=50)
        + arm_records("replacement_due", "suppressed", 10, 1, start=60)
        + [outcome(900 + i, "lapsed_revolver", "holdout", i < 3, global_control=True)
           for i in range(300)]
    )  # fmt: skip
    path = write(tmp_path / "o.jsonl", records)
    assert main(["report", "--file", str(path), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    rows = {r["trigger"]: r for r in body["rows"]}
    # Triggers by name, then all triggers together, then the programme (global control).
    assert list(rows) == [
        "lapsed_revolver", "never_activated", "replacement_due", "overall", "programme"
    ]  # fmt: skip
    na = rows["never_activated"]
    expected = lift(Arm(400, 80), Arm(400, 40))
    assert expected is not None
    assert na["enough_holdouts"] is True
    assert na["absolute_lift"] == pytest.approx(0.1)
    assert na["absolute_lift_low"] == pytest.approx(expected.absolute_interval.low)
    assert na["relative_lift"] == pytest.approx(1.0)
    assert na["incremental_conversions"] == pytest.approx(40.0)
    # Two holdouts say nothing: no lift is printed for replacement_due.
    assert rows["replacement_due"]["enough_holdouts"] is False
    assert rows["replacement_due"]["absolute_lift"] is None
    assert rows["replacement_due"]["suppressed"] == 10
    # The programme: all 450 contacted against the 300 of the global control.
    assert rows["programme"]["contacted"] == 450 and rows["programme"]["holdout"] == 300
    assert rows["overall"]["holdout"] == 702

    assert main(["report", "--file", str(path)]) == 0
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if x.startswith("replacement_due"))
    assert NOT_ENOUGH in line
    assert "Newcombe" in table

    assert main(["report", "--file", str(path), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["trigger"] for r in parsed][-1] == "programme"
    by_trigger = {r["trigger"]: r for r in parsed}
    assert float(by_trigger["never_activated"]["absolute_lift"]) == pytest.approx(0.1)
    assert by_trigger["replacement_due"]["absolute_lift"] == ""


def test_value_counts_only_converted_decisions(tmp_path: Path, capsys: Any) -> None:
    records = [outcome(i, "never_activated", "contact", i < 100, value=10.0 if i < 100 else None)
               for i in range(500)]  # fmt: skip
    records += [outcome(500 + i, "never_activated", "holdout", i < 50, value=10.0 if i < 50
                        else None) for i in range(500)]  # fmt: skip
    assert main(["report", "--file", str(write(tmp_path / "o.jsonl", records)),
                 "--format", "json"]) == 0  # fmt: skip
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["trigger"] == "never_activated"
    assert row["incremental_value"] == pytest.approx(500.0)  # (1000 - 500) / 500 * 500


def test_bad_options_are_refused_with_the_reason(tmp_path: Path, capsys: Any) -> None:
    assert main(["report", "--file", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: cannot read" in capsys.readouterr().err
    path = write(tmp_path / "o.jsonl", [])
    assert main(["report", "--file", str(path), "--since", "yesterday"]) == 2
    assert "--since: 'yesterday' is not an RFC 3339 time" in capsys.readouterr().err
