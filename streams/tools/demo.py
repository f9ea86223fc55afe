"""``lifecycle-triggers demo``: the product working on simulated customers, with ground truth.

Starts the dev stack (Tansu + redis-server on free ports), a real worker process on it (event
clock, memory store), simulates customers with planted scenarios (``streams.tools.simulator``),
produces them, shows progress live, and ends with a summary that compares every published
decision with the ground truth: per trigger, planted found and missed, near-misses that fired,
background agreement, outcomes and suppression reasons, throughput. Then it reads the outcome
records (``decision-outcomes``) and prints the lift per trigger of the planted decisions
(``lifecycle-triggers report``'s table) beside the lift the simulator planted, with how many
triggers' 95 % intervals hold it (``streams.tools.planted``). The exit code is 1 when a
planted scenario was missed or a near-miss fired. Ctrl-C or SIGTERM stops everything it
started (the worker, then the dev stack) and nothing else.

The whole run is produced as fast as the broker takes it, so the worker faces a deep backlog
on both input topics: the case the worker's event-time merge of the two topics exists for.
``max_backlog`` can hold production back (0, the default, does not).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import orjson
import yaml

from streams.core.catalogue import builtin_registry
from streams.core.errors import DevStackError
from streams.core.goals import BUILTIN_GOALS
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack, dev_environment, free_port, stop_process
from streams.tools.planted import format_comparison, planted_report
from streams.tools.report import read_topic
from streams.tools.simulator import Expectation, SimConfig, Simulation, generate, produce

log = logging.getLogger(__name__)

APP_ID = "lifecycle-triggers-demo"
READY_TIMEOUT_SECONDS = 90.0
RECENT_SHOWN = 5


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs: the simulation, the worker's partitions and holdout rate, pacing."""

    sim: SimConfig  # its holdout_rate is replaced by the worker's, ``holdout_rate``
    holdout_rate: float = 0.5
    truth_path: Path | None = None
    pace: str = "fast"
    speed: float = 86_400.0
    settle_seconds: float = 20.0
    # Records produced but not yet taken in by the worker, at most; 0 does not hold back.
    max_backlog: int = 0
    plain: bool | None = None  # None: plain lines unless stdout is a terminal


# --- scraping the worker --------------------------------------------------------------------


def scrape(port: int, path: str = "/metrics", timeout: float = 2.0) -> tuple[int, str]:
    """GET one of the worker's local endpoints: (status, body); (0, "") when it does not answer."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - our own worker on 127.0.0.1
            f"http://127.0.0.1:{port}{path}", timeout=timeout
        ) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def metric_totals(text: str) -> dict[str, float]:
    """Prometheus text -> the sum of every metric's samples over all label sets."""
    totals: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            totals[name] += float(value)
        except ValueError:
            continue
    return totals


# --- the worker process ---------------------------------------------------------------------


class DemoWorker:
    """A ``python -m streams worker`` subprocess on the dev stack, in its own session so that
    the terminal's Ctrl-C reaches the demo, which then stops the worker cleanly itself."""

    def __init__(self, stack: DevStack, config: Path, partitions: int, workdir: Path) -> None:
        self.metrics_port = free_port()
        self.log_path = workdir / "worker.log"
        env = dev_environment(stack)
        env.update(
            {
                "CLOCK": "event",
                "STATE_STORE": "memory",
                "TRIGGERS_CONFIG": str(config),
                "TOPIC_PARTITIONS": str(partitions),
                "METRICS_PORT": str(self.metrics_port),
                "STATE_DIR": str(workdir / "state"),
                "APP_ID": APP_ID,
                "LOG_LEVEL": "warning",
            }
        )
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "streams", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 3_000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DevStackError(
                    f"the worker exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            if scrape(self.metrics_port, "/ready", 1.0)[0] == 200:
                return
            time.sleep(0.2)
        raise DevStackError(f"the worker was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (leave the group, flush), then SIGKILL if it does not exit in time."""
        return stop_process(self.proc, signal.SIGTERM, timeout)


# --- what came out --------------------------------------------------------------------------


@dataclass
class Observed:
    """Decisions read back from ``contact-decisions`` (first outcome per decision id)."""

    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_SHOWN)
    )
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    last_at: float = 0.0  # monotonic time of the last new decision
    stream_time: str = ""

    def add(self, record: dict[str, Any]) -> None:
        if record["decision_id"] in self.decisions:
            return  # re-published after a restart: same id, same outcome
        self.decisions[record["decision_id"]] = record
        self.recent.append(record)
        self.outcomes[record["outcome"]] += 1
        self.last_at = time.monotonic()
        self.stream_time = max(self.stream_time, record["decided_at"])


async def read_decisions(
    bootstrap: str, topic: str, observed: Observed, stop: asyncio.Event
) -> None:
    """Follow the decisions topic from its start until ``stop`` is set."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    observed.add(orjson.loads(rec.value))
    finally:
        await consumer.stop()


async def read_outcomes(bootstrap: str, topic: str, settle_seconds: float = 2.0) -> list[Any]:
    """The outcome records on ``topic``, read to its end again and again until a read finds
    nothing new for ``settle_seconds`` (the worker publishes the last ones with the last
    events; the decisions may be read back a moment before them)."""
    seen: list[Any] = []
    quiet_since = time.monotonic()
    while True:
        records = [r async for r, _ in read_topic(bootstrap, topic) if r is not None]
        if len(records) > len(seen):
            seen, quiet_since = records, time.monotonic()
        elif time.monotonic() - quiet_since >= settle_seconds:
            return seen
        await asyncio.sleep(0.5)


def render_lift(
    sim: Simulation, decisions: Iterable[dict[str, Any]], outcomes: list[Any], out: TextIO
) -> None:
    """The lift of the planted decisions as the report measures it, beside the planted lift,
    and how many decisions with a goal have no outcome yet."""
    planted = {c.decision_id for c in sim.conversions}
    report = planted_report(outcomes, planted)
    c = sim.config
    print(
        f"\nlift: the outcomes of the {len(planted):,} planted decisions with a goal "
        f"(converting with probability {c.conversion_contact:g} contacted, "
        f"{c.conversion_holdout:g} held out; holdout rate {c.holdout_rate:g}); "
        "`lifecycle-triggers report` reads every outcome",
        file=out,
    )
    print(format_comparison(report, sim.planted_lift), end="", file=out)
    with_goal = {d["decision_id"] for d in decisions if d["trigger"] in BUILTIN_GOALS}
    resolved = {o.get("decision_id") for o in outcomes if isinstance(o, dict)}
    missing = len(with_goal - resolved)
    print(
        f"{len(resolved & with_goal):,} of {len(with_goal):,} published decisions with a goal "
        f"have an outcome; {missing:,} have none yet (their window and the allowed lateness "
        "had not passed when the stream ended)",
        file=out,
        flush=True,
    )


# --- the summary ----------------------------------------------------------------------------


@dataclass
class TriggerRow:
    planted: int = 0
    found: int = 0
    missed: int = 0
    near_misses: int = 0
    near_miss_fired: int = 0
    background: int = 0
    background_fired: int = 0
    unexpected: int = 0
    contact: int = 0
    suppressed: int = 0
    holdout: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class Summary:
    """Published decisions judged against the ground truth."""

    rows: dict[str, TriggerRow]
    problems: list[str]

    @property
    def planted_missed(self) -> int:
        return sum(r.missed for r in self.rows.values())

    @property
    def near_misses_fired(self) -> int:
        return sum(r.near_miss_fired for r in self.rows.values())

    @property
    def ok(self) -> bool:
        return self.planted_missed == 0 and self.near_misses_fired == 0


def judge(expectations: Iterable[Expectation], decisions: Iterable[dict[str, Any]]) -> Summary:
    """Compare decisions with expectations, (customer, trigger) by (customer, trigger).

    Planted scenarios count as found up to their expected number; a near-miss's own trigger
    fires never; anything beyond expectations, for any customer, is unexpected.
    """
    rows = {t: TriggerRow() for t in builtin_registry().names}
    got: collections.Counter[tuple[str, str]] = collections.Counter()
    for d in decisions:
        got[(d["customer_id"], d["trigger"])] += 1
        row = rows.setdefault(d["trigger"], TriggerRow())
        outcome = d["outcome"]
        setattr(row, outcome, getattr(row, outcome) + 1)
        row.reasons.update(d["reasons"])
    roles: dict[str, str] = {}
    problems: list[str] = []
    expected: dict[tuple[str, str], Expectation] = {}
    for e in expectations:
        expected[(e.customer_id, e.trigger)] = e
        roles[e.customer_id] = e.role
        row, n = rows[e.trigger], got[(e.customer_id, e.trigger)]
        if e.role == "near_miss" and e.scenario == f"near_miss_{e.trigger}":
            row.near_misses += 1
            if n:
                row.near_miss_fired += n
                problems.append(f"near-miss {e.customer_id} fired {e.trigger} {n}x")
            continue
        if e.role == "background":
            row.background += e.expected
            row.background_fired += min(n, e.expected)
        else:
            row.planted += e.expected
            row.found += min(n, e.expected)
            if n < e.expected:
                row.missed += e.expected - n
                problems.append(
                    f"planted {e.customer_id} ({e.scenario}): {e.trigger} {n} of {e.expected}"
                )
        if n > e.expected:
            row.unexpected += n - e.expected
    for (customer, trigger), n in got.items():
        if (customer, trigger) not in expected:
            rows[trigger].unexpected += n
            problems.append(f"unexpected {trigger} for {customer} ({n}x)")
    return Summary(rows, problems)


def render_summary(
    summary: Summary, sim: Simulation, elapsed: float, processing: float, out: TextIO
) -> None:
    """The final table: per trigger, ground truth against what was published."""
    header = (
        f"{'trigger':<29}{'planted':>8}{'found':>6}{'missed':>7}{'near-miss':>10}{'fired':>6}"
        f"{'backgr.':>8}{'fired':>6}{'unexp.':>7}{'contact':>8}{'suppr.':>7}{'holdout':>8}"
    )
    print("\nsummary: ground truth against the decisions the worker published", file=out)
    print(header, file=out)
    print("-" * len(header), file=out)
    total = TriggerRow()
    for name, r in summary.rows.items():
        print(
            f"{name:<29}{r.planted:>8}{r.found:>6}{r.missed:>7}{r.near_misses:>10}"
            f"{r.near_miss_fired:>6}{r.background:>8}{r.background_fired:>6}{r.unexpected:>7}"
            f"{r.contact:>8}{r.suppressed:>7}{r.holdout:>8}",
            file=out,
        )
        for attr in vars(total):
            if attr != "reasons":
                setattr(total, attr, getattr(total, attr) + getattr(r, attr))
        total.reasons.update(r.reasons)
    print("-" * len(header), file=out)
    t = total
    print(
        f"{'total':<29}{t.planted:>8}{t.found:>6}{t.missed:>7}{t.near_misses:>10}"
        f"{t.near_miss_fired:>6}{t.background:>8}{t.background_fired:>6}{t.unexpected:>7}"
        f"{t.contact:>8}{t.suppressed:>7}{t.holdout:>8}",
        file=out,
    )
    print("\nsuppressed by reason (a decision can have several):", file=out)
    for name, r in summary.rows.items():
        if r.reasons:
            reasons = ", ".join(f"{k} {v}" for k, v in r.reasons.most_common())
            print(f"  {name:<29}{reasons}", file=out)
    if not total.reasons:
        print("  (none)", file=out)
    valid = sim.valid_records
    print(
        f"\n{len(sim.records):,} records ({valid:,} valid events, {sim.malformed_records:,} "
        f"malformed) for {sim.config.customers:,} customers over {sim.config.days} days; "
        f"processed in {processing:.1f} s: {valid / max(processing, 1e-9):,.0f} events/s; "
        f"demo took {elapsed:.1f} s in all",
        file=out,
    )
    if sim.skipped:
        skipped = ", ".join(sim.skipped)
        print(f"not planted (longer than {sim.config.days} days): {skipped}", file=out)
    for line in summary.problems[:20]:
        print(f"  ! {line}", file=out)
    if len(summary.problems) > 20:
        print(f"  ! ... and {len(summary.problems) - 20} more", file=out)
    verdict = (
        "every planted scenario was found and no near-miss fired"
        if summary.ok
        else f"{summary.planted_missed} planted decisions missed, "
        f"{summary.near_misses_fired} near-miss decisions fired"
    )
    print(f"result: {verdict}", file=out, flush=True)


# --- the live view ----------------------------------------------------------------------------


class LiveView:
    """Progress in the terminal: redrawn in place on a TTY, a line every few seconds if not."""

    def __init__(self, out: TextIO, plain: bool) -> None:
        self.out = out
        self.plain = plain
        self._drawn = 0
        self._last_plain = 0.0

    def show(self, lines: list[str], force: bool = False) -> None:
        if self.plain:
            now = time.monotonic()
            if force or now - self._last_plain >= 5.0:
                self._last_plain = now
                print(lines[1], file=self.out, flush=True)
            return
        width = shutil.get_terminal_size((100, 20)).columns
        text = "".join(f"\x1b[2K{line[: width - 1]}\n" for line in lines)
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(up + text)
        self.out.flush()
        self._drawn = len(lines)


def _bar(done: int, total: int, width: int = 30) -> str:
    share = min(1.0, done / total) if total else 1.0
    filled = int(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:5.1f}%"


def _recent_line(d: dict[str, Any], roles: dict[str, str]) -> str:
    why = f": {', '.join(d['reasons'])}" if d["reasons"] else ""
    role = roles.get(d["customer_id"], "background").replace("_", "-")
    return (
        f"  {d['decided_at'][:10]} {d['customer_id']:<8} {d['trigger']:<28} -> "
        f"{d['outcome']}{why} ({d['channel']}) [{role}]"
    )


# --- the run ------------------------------------------------------------------------------------


def _write_config(path: Path, holdout_rate: float) -> Path:
    path.write_text(yaml.safe_dump({"policy": {"holdout_rate": holdout_rate}}))
    return path


async def _drive(
    opts: DemoOptions,
    sim: Simulation,
    stack: DevStack,
    topics: TopicNames,
    worker: DemoWorker,
    view: LiveView,
) -> tuple[Observed, float]:
    """Produce, follow decisions and metrics, redraw; return what was seen and how long the
    processing took (first record sent to last decision)."""
    observed = Observed()
    stop = asyncio.Event()
    sent = {"n": 0}
    began = time.monotonic()
    reader = asyncio.create_task(
        read_decisions(stack.bootstrap_servers, topics.contact_decisions, observed, stop)
    )

    def progress(n: int) -> None:
        sent["n"] = n

    taken = {"n": 0}  # records the worker has taken in (valid + dead-lettered), from /metrics

    async def throttle(n: int) -> None:
        while opts.max_backlog and n - taken["n"] > opts.max_backlog and not stop.is_set():
            await asyncio.sleep(0.05)

    producer = asyncio.create_task(
        produce(
            sim,
            stack.bootstrap_servers,
            topics,
            pace=opts.pace,
            speed=opts.speed,
            on_progress=progress,
            stop=stop,
            throttle=throttle,
        )
    )
    expected = sim.expected_decisions
    valid = sim.valid_records
    port = worker.metrics_port
    totals: dict[str, float] = {}
    consumed_at: float | None = None
    try:
        while True:
            await asyncio.sleep(0.25)
            if worker.proc.poll() is not None:
                raise DevStackError(
                    f"the worker exited with code {worker.proc.returncode}:\n{worker.log_tail()}"
                )
            status, text = await asyncio.to_thread(scrape, port)
            if status == 200:
                totals = metric_totals(text)
            consumed = int(totals.get("lifecycle_events_consumed_total", 0))
            dead = int(totals.get("lifecycle_dead_letters_total", 0))
            taken["n"] = consumed + dead
            fired = int(totals.get("lifecycle_triggers_fired_total", 0))
            rate = consumed / max(time.monotonic() - began, 1e-9)
            o = observed.outcomes
            lines = [
                f"metrics: http://127.0.0.1:{port}/metrics   stream time "
                f"{observed.stream_time[:10] or '-'}",
                f"{_bar(consumed + dead, len(sim.records))} events in {consumed:,}/{valid:,}, "
                f"dead letters {dead:,}, {rate:,.0f}/s; produced {sent['n']:,}; triggers "
                f"{fired:,}; decisions {len(observed.decisions):,}/{expected:,} (contact "
                f"{o['contact']:,}, suppressed {o['suppressed']:,}, holdout {o['holdout']:,})",
                "recent decisions:",
                *(_recent_line(d, sim.roles) for d in reversed(observed.recent)),
            ]
            view.show(lines)
            if producer.done():
                producer.result()  # raise a producer error here
                if consumed_at is None and consumed >= valid:
                    consumed_at = time.monotonic()
                idle = time.monotonic() - max(observed.last_at, consumed_at or 0.0)
                complete = consumed >= valid and len(observed.decisions) >= expected
                if complete and idle >= 1.0:
                    break  # all in, all expected out (a second more for anything unexpected)
                if consumed_at is not None and idle >= opts.settle_seconds:
                    break  # decisions stopped short of the expectation: report what is missing
        view.show(lines, force=True)
        last = observed.last_at or time.monotonic()
        return observed, last - began
    finally:
        stop.set()
        if not producer.done():
            producer.cancel()
        await asyncio.gather(reader, producer, return_exceptions=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the whole demo; returns the exit code (0 all found, 1 missed/near-miss, 130 Ctrl-C)."""
    started = time.monotonic()
    plain = opts.plain if opts.plain is not None else not out.isatty()
    view = LiveView(out, plain)
    # SIGTERM must run the finally blocks below (stop what we started), like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    stack = DevStack()
    worker: DemoWorker | None = None
    try:
        # The simulator plants conversions by the arm the worker will give: same holdout rate.
        c = dataclasses.replace(opts.sim, holdout_rate=opts.holdout_rate)
        print(
            f"lifecycle-triggers demo: {c.customers:,} simulated customers over {c.days} days "
            f"and {c.trail_days} more for the last goal windows (seed {c.seed}), "
            f"{c.partitions} partitions, holdout {opts.holdout_rate:g}",
            file=out,
            flush=True,
        )
        stack.start()
        topics = TopicNames.from_config(
            {
                "account_events": "account-events",
                "usage_events": "usage-events",
                "contact_decisions": "contact-decisions",
                "dead_letters": "dead-letters",
            }
        )
        stack.create_topics(topics.all, c.partitions)
        config = _write_config(stack.workdir / "demo-policy.yaml", opts.holdout_rate)
        worker = DemoWorker(stack, config, c.partitions, stack.workdir)
        print(
            f"dev stack: broker {stack.bootstrap_servers}, redis {stack.redis_url}; worker "
            f"pid {worker.proc.pid} (event clock, memory store), log {worker.log_path}; "
            f"metrics http://127.0.0.1:{worker.metrics_port}/metrics",
            file=out,
            flush=True,
        )
        # The simulation is built while the worker joins its group (both take seconds).
        built: dict[str, Simulation] = {}
        failure: list[BaseException] = []

        def build() -> None:
            try:
                built["sim"] = generate(c)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                failure.append(exc)

        builder = threading.Thread(target=build, name="simulator", daemon=True)
        builder.start()
        worker.wait_ready()
        builder.join()
        if failure:
            raise failure[0]
        sim = built["sim"]
        if opts.truth_path is not None:
            sim.write_truth(opts.truth_path)
        print(
            f"simulated {len(sim.records):,} records ({sim.malformed_records:,} malformed); "
            f"ground truth: {sim.expected_decisions:,} decisions ("
            + ", ".join(
                f"{n} {role.replace('_', '-')}"
                for role, n in collections.Counter(sim.roles.values()).items()
            )
            + f" customers) in {time.monotonic() - started:.1f} s; producing "
            + ("as fast as the broker takes it" if opts.pace == "fast" else f"at {opts.speed:g}x"),
            file=out,
            flush=True,
        )
        observed, processing = asyncio.run(_drive(opts, sim, stack, topics, worker, view))
        summary = judge(sim.expectations, observed.decisions.values())
        render_summary(summary, sim, time.monotonic() - started, processing, out)
        outcomes = asyncio.run(read_outcomes(stack.bootstrap_servers, topics.decision_outcomes))
        render_lift(sim, observed.decisions.values(), outcomes, out)
        if not summary.ok:
            # The stack's directory goes away with it: keep the worker's log for the diagnosis.
            fd, kept = tempfile.mkstemp(prefix="lifecycle-demo-worker-", suffix=".log")
            os.close(fd)
            shutil.copyfile(worker.log_path, kept)
            print(f"the worker's log is kept in {kept}", file=out, flush=True)
        return 0 if summary.ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the worker and the dev stack", file=out, flush=True)
        return 130
    finally:
        # Further signals must not cut the clean-up short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if worker is not None:
                worker.stop()
        finally:
            stack.stop()
            signal.signal(signal.SIGTERM, previous)
