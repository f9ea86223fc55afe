"""The lift the simulator planted, against the lift the report measures.

The simulator (``streams.tools.simulator``) makes each planted decision with a goal convert with
a known probability per arm, so every such trigger has a *planted lift*: the contacted minus the
held-out conversion probability. ``planted_report`` builds the report
(``streams.tools.report``) from the outcome records of exactly those decisions (a background
customer's decisions convert as they happen to, with no planted effect, and would blur the
comparison), and ``compare`` says per trigger whether the planted lift lies inside the measured
95 % interval of the absolute lift. Over many triggers about 95 % of them should: fewer, run
after run, means the measurement (or the planting) is biased; all of them always, with wide
intervals, means the intervals say little.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.tools.lift import Interval
from streams.tools.report import Report, build, format_table, pct_interval


@dataclass(frozen=True, slots=True)
class Comparison:
    """One trigger: its planted lift, the measured lift and interval (None: not enough
    holdouts), and whether the interval holds the planted lift."""

    trigger: str
    planted: float
    measured: float | None
    interval: Interval | None

    @property
    def informative(self) -> bool:
        return self.interval is not None

    @property
    def inside(self) -> bool:
        return self.interval is not None and self.interval.contains(self.planted)


def planted_report(outcomes: Iterable[Mapping[str, Any]], planted_ids: Iterable[str]) -> Report:
    """The report over the outcome records of the planted decisions (``planted_ids``)."""
    wanted = set(planted_ids)
    return build(
        ((o, f"outcome {n}") for n, o in enumerate(outcomes) if o.get("decision_id") in wanted),
        None,
        None,
    )


def compare(report: Report, planted_lift: Mapping[str, float]) -> list[Comparison]:
    """Per trigger of ``planted_lift`` (sorted), the planted lift against the report's row."""
    out = []
    for trigger in sorted(planted_lift):
        row = report.rows.get(trigger)
        result = None if row is None else row.lift()
        if result is None or not result.informative:
            out.append(Comparison(trigger, planted_lift[trigger], None, None))
        else:
            out.append(
                Comparison(
                    trigger, planted_lift[trigger], result.absolute, result.absolute_interval
                )
            )
    return out


def coverage_line(comparisons: list[Comparison]) -> str:
    """ "planted lift inside the 95 % interval for N of M triggers", M counting the triggers
    with an informative interval, and how many had too few holdouts for one."""
    informative = [c for c in comparisons if c.informative]
    inside = sum(1 for c in informative if c.inside)
    line = f"planted lift inside the 95 % interval for {inside} of {len(informative)} triggers"
    short = len(comparisons) - len(informative)
    if short:
        line += f" ({short} more with not enough holdouts)"
    return line


def format_comparison(report: Report, planted_lift: Mapping[str, float]) -> str:
    """The report's table, then per trigger the planted lift beside the measured one, then the
    coverage line."""
    comparisons = compare(report, planted_lift)
    lines = [format_table(report).rstrip("\n"), ""]
    width = max([len("trigger"), *(len(c.trigger) for c in comparisons)])
    lines.append(f"{'trigger':<{width}}  {'planted lift':>12}  {'measured [95% CI]':<28}  inside")
    for c in comparisons:
        if c.interval is None or c.measured is None:
            measured, inside = "not enough holdouts", "-"
        else:
            measured = f"{100 * c.measured:+.2f}% {pct_interval(c.interval)}"
            inside = "yes" if c.inside else "no"
        lines.append(f"{c.trigger:<{width}}  {100 * c.planted:>+11.2f}%  {measured:<28}  {inside}")
    lines.append(coverage_line(comparisons))
    return "\n".join(lines) + "\n"
