"""``lifecycle-triggers report``: what each trigger recovers, from the decision outcomes.

Reads outcome records (the ``decision-outcomes`` topic, or a JSON-lines file of them), keeps
one per ``decision_id`` (a replayed topic may repeat one; the content is the same), and prints
per trigger and overall: contacted n and conversion rate, holdout n and rate, the absolute and
relative lift with their 95 % intervals (``streams.tools.lift``), the incremental conversions
and value, and the suppressed arm's rate. Where the holdouts are too few for the interval to
say anything, "not enough holdouts" stands instead of a number. With a global control group,
the "programme" row compares every contacted decision with the decisions of the global control.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.core.errors import ConfigError
from streams.core.timeutil import parse_rfc3339_ms
from streams.tools.lift import Arm, Interval, Lift, lift

ARMS = ("contact", "holdout", "suppressed")
OVERALL = "overall"
PROGRAMME = "programme"
NOT_ENOUGH = "not enough holdouts"


@dataclass
class Row:
    """One line of the report: a trigger, all triggers, or the programme."""

    name: str
    arms: dict[str, Arm] = field(default_factory=lambda: {a: Arm() for a in ARMS})

    def add(self, arm: str, converted: bool, value: float | None) -> None:
        self.arms[arm] = self.arms[arm].add(converted, value)

    def lift(self) -> Lift | None:
        return lift(self.arms["contact"], self.arms["holdout"])


@dataclass
class Report:
    rows: dict[str, Row] = field(default_factory=dict)
    overall: Row = field(default_factory=lambda: Row(OVERALL))
    programme: Row = field(default_factory=lambda: Row(PROGRAMME))
    records: int = 0
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def add(self, outcome: Mapping[str, Any], where: str) -> None:
        problem = _problem(outcome)
        if problem is not None:
            self.skipped.append(f"{where}: {problem}")
            return
        decision_id = outcome["decision_id"]
        if decision_id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(decision_id)
        self.records += 1
        arm, converted = outcome["arm"], bool(outcome["converted"])
        value = outcome.get("value")
        value = float(value) if isinstance(value, int | float) else None
        row = self.rows.setdefault(outcome["trigger"], Row(outcome["trigger"]))
        row.add(arm, converted, value)
        self.overall.add(arm, converted, value)
        # The programme: everything contacted against the global control group only.
        if arm == "contact":
            self.programme.add("contact", converted, value)
        elif arm == "holdout" and outcome.get("global_control") is True:
            self.programme.add("holdout", converted, value)

    def lines(self) -> list[Row]:
        rows = [self.rows[name] for name in sorted(self.rows)]
        rows.append(self.overall)
        if self.programme.arms["holdout"].n:
            rows.append(self.programme)
        return rows


def _problem(outcome: Any) -> str | None:
    if not isinstance(outcome, Mapping):
        return "not a JSON object"
    for name in ("decision_id", "trigger", "arm"):
        if not isinstance(outcome.get(name), str) or not outcome.get(name):
            return f"field {name} missing or not a string"
    if outcome["arm"] not in ARMS:
        return f"arm {outcome['arm']!r} is not one of {', '.join(ARMS)}"
    if not isinstance(outcome.get("converted"), bool):
        return "field converted missing or not true/false"
    return None


def parse_time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    ms = parse_rfc3339_ms(text)
    if ms is None:
        raise ConfigError(f"{option}: {text!r} is not an RFC 3339 time with an offset")
    return ms


def in_range(outcome: Mapping[str, Any], since_ms: int | None, until_ms: int | None) -> bool:
    """Whether the outcome's decision was made in [since, until) (no bound: always)."""
    if since_ms is None and until_ms is None:
        return True
    decided = outcome.get("decided_at")
    if not isinstance(decided, str):
        return False
    t = parse_rfc3339_ms(decided)
    if t is None:
        return False
    return (since_ms is None or t >= since_ms) and (until_ms is None or t < until_ms)


def read_file(path: Path) -> Iterator[tuple[Any, str]]:
    """(parsed record or None, where) for each non-empty line of a JSON-lines file."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line), f"{path.name}:{number}"
            except orjson.JSONDecodeError:
                yield None, f"{path.name}:{number}"


async def read_topic(bootstrap_servers: str, topic: str) -> AsyncIterator[tuple[Any, str]]:
    """Every record of ``topic`` from its start to its end when the read began.

    Read-only: partitions are assigned by hand, no group is joined and nothing is committed.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # the public call has no refresh
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(f"topic {topic}: not found on the brokers {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500, max_records=5_000)
            if not batch:
                done = True
                for tp in tps:
                    high = consumer.highwater(tp)
                    if high is not None and await consumer.position(tp) < high:
                        done = False
                idle = idle + 1 if done else 0
                continue
            idle = 0
            for tp, records in batch.items():
                for rec in records:
                    where = f"{tp.topic}[{tp.partition}]@{rec.offset}"
                    if rec.value is None:
                        continue
                    try:
                        yield orjson.loads(rec.value), where
                    except orjson.JSONDecodeError:
                        yield None, where
    finally:
        await consumer.stop()


def build(records: Iterable[tuple[Any, str]], since_ms: int | None, until_ms: int | None) -> Report:
    report = Report()
    for outcome, where in records:
        if outcome is None:
            report.skipped.append(f"{where}: not JSON")
            continue
        if isinstance(outcome, Mapping) and not in_range(outcome, since_ms, until_ms):
            continue
        report.add(outcome, where)
    return report


# -- formatting -----------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def pct_interval(i: Interval | None) -> str:
    """An interval of rates as the table prints it: ``[+1.23%, +4.56%]``."""
    if i is None:
        return "-"
    high = "inf" if math.isinf(i.high) else f"{100 * i.high:+.2f}%"
    return f"[{100 * i.low:+.2f}%, {high}]"


def as_dict(row: Row) -> dict[str, Any]:
    """One row as plain data: what the json and csv formats print."""
    c, h, s = row.arms["contact"], row.arms["holdout"], row.arms["suppressed"]
    out: dict[str, Any] = {
        "trigger": row.name,
        "contacted": c.n,
        "contacted_conversions": c.converted,
        "contacted_rate": c.rate,
        "holdout": h.n,
        "holdout_conversions": h.converted,
        "holdout_rate": h.rate,
        "suppressed": s.n,
        "suppressed_rate": s.rate,
        "enough_holdouts": False,
        "absolute_lift": None,
        "absolute_lift_low": None,
        "absolute_lift_high": None,
        "relative_lift": None,
        "relative_lift_low": None,
        "relative_lift_high": None,
        "incremental_conversions": None,
        "incremental_conversions_low": None,
        "incremental_conversions_high": None,
        "incremental_value": None,
    }
    result = row.lift()
    if result is not None and result.informative:
        rel = result.relative_interval
        out.update(
            enough_holdouts=True,
            absolute_lift=result.absolute,
            absolute_lift_low=result.absolute_interval.low,
            absolute_lift_high=result.absolute_interval.high,
            relative_lift=result.relative,
            relative_lift_low=None if rel is None else rel.low,
            relative_lift_high=None if rel is None or math.isinf(rel.high) else rel.high,
            incremental_conversions=result.incremental_conversions,
            incremental_conversions_low=result.incremental_interval.low,
            incremental_conversions_high=result.incremental_interval.high,
            incremental_value=result.incremental_value,
        )
    return out


def format_table(report: Report) -> str:
    head = (
        "trigger", "contacted", "rate", "holdout", "rate", "absolute lift [95% CI]",
        "relative lift [95% CI]", "incremental conv.", "incr. value", "suppressed",
    )  # fmt: skip
    table = [head]
    for row in report.lines():
        c, h, s = row.arms["contact"], row.arms["holdout"], row.arms["suppressed"]
        result = row.lift()
        if result is None or not result.informative:
            cells = (NOT_ENOUGH, "", "", "")
        else:
            rel = "-" if result.relative is None else (
                f"{100 * result.relative:+.1f}% {pct_interval(result.relative_interval)}"
            )  # fmt: skip
            inc = result.incremental_interval
            cells = (
                f"{100 * result.absolute:+.2f}% {pct_interval(result.absolute_interval)}",
                rel,
                f"{result.incremental_conversions:.1f} [{inc.low:.1f}, {inc.high:.1f}]",
                f"{result.incremental_value:.2f}",
            )
        table.append(
            (row.name, str(c.n), _pct(c.rate), str(h.n), _pct(h.rate), *cells,
             f"{s.n} ({_pct(s.rate)})")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in table]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    footer = [
        "",
        f"{report.records} decisions ({report.duplicates} repeated records ignored). "
        "Intervals: Newcombe's hybrid score (difference), MOVER-R (ratio), 95 %.",
    ]
    footer.extend(f"skipped {s}" for s in report.skipped[:20])
    if len(report.skipped) > 20:
        footer.append(f"... and {len(report.skipped) - 20} more skipped records")
    return "\n".join(lines + footer) + "\n"


def format_json(report: Report) -> str:
    body = {
        "decisions": report.records,
        "repeated_records": report.duplicates,
        "skipped": report.skipped,
        "method": "Newcombe hybrid score (difference), MOVER-R (ratio), 95 %",
        "rows": [as_dict(r) for r in report.lines()],
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def format_csv(report: Report) -> str:
    rows = [as_dict(r) for r in report.lines()]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


FORMATS = {"table": format_table, "json": format_json, "csv": format_csv}


# -- command line ---------------------------------------------------------------------------


def add_report_command(sub: Any) -> None:
    import os

    p = sub.add_parser(
        "report",
        help="conversion rates and lift per trigger from the decision outcomes",
        description="Read decision outcomes (a topic, or a JSON-lines file) and print per "
        "trigger and overall: contacted and holdout conversion rates, the absolute and "
        "relative lift with 95 %% intervals (Newcombe's hybrid score interval for the "
        "difference, MOVER-R for the ratio), incremental conversions and value.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="a JSON-lines file of outcome records")
    source.add_argument(
        "--topic",
        default=os.environ.get("TRIGGERS_TOPIC_DECISION_OUTCOMES", "decision-outcomes"),
        help="the outcomes topic [env: TRIGGERS_TOPIC_DECISION_OUTCOMES; "
        "default: decision-outcomes]",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
        help="Kafka bootstrap servers [env: KAFKA_BOOTSTRAP_SERVERS; default: localhost:9092]",
    )
    p.add_argument("--since", help="only decisions made at or after this RFC 3339 time")
    p.add_argument("--until", help="only decisions made before this RFC 3339 time")
    p.add_argument("--format", choices=sorted(FORMATS), default="table", help="default table")


def run_report_command(args: Any) -> int:
    import asyncio
    import sys

    since_ms = parse_time(args.since, "--since")
    until_ms = parse_time(args.until, "--until")
    if args.file is not None:
        report = build(read_file(args.file), since_ms, until_ms)
    else:

        async def collect() -> list[tuple[Any, str]]:
            return [r async for r in read_topic(args.bootstrap_servers, args.topic)]

        report = build(asyncio.run(collect()), since_ms, until_ms)
    sys.stdout.write(FORMATS[args.format](report))
    return 0
