"""Shared pieces of the benchmarks: the event mix, loading it, worker processes, /proc figures.

Not a benchmark itself (``make bench`` runs ``*_bench.py`` only). The worker is always the real
``lifecycle-triggers worker`` in a subprocess, configured by environment variables like
tests/support.py's WorkerProcess; nothing here changes how it works.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer

from streams.core.events import ACCOUNT_EVENT_TYPES
from streams.core.timeutil import MS_PER_DAY, format_ms, wall_ms
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack, dev_environment, free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

ACCOUNT_TYPES = frozenset(ACCOUNT_EVENT_TYPES)  # the types of account-events

# The mix: mostly money movement and usage, some contracts and renewals, a little engagement,
# consent and complaints (those three also go to the Redis ledger). Weights, not percentages.
MIX: tuple[tuple[str, int], ...] = (
    ("transaction", 34),
    ("balance", 12),
    ("product_usage", 11),
    ("visit", 8),
    ("purchase", 8),
    ("engagement", 5),
    ("statement", 4),
    ("profile", 3),
    ("contract", 3),
    ("complaint", 2),
    ("account_opened", 2),
    ("auto_renew_charged", 1),
    ("consent", 1),
    ("account_closed", 1),
)
_TYPES = [t for t, _ in MIX]
_WEIGHTS = [w for _, w in MIX]
_ACCOUNTS = (("sav", "savings"), ("chk", "checking"), ("cc", "credit_card"))
_RAILS = ("internal", "wire", "ach", "card", "card", "card")
_PRODUCTS = ("annual_pass", "software_license", "auto_insurance", "streaming")
_CATEGORIES = ("water_filter", "air_filter", "coffee", "printer_ink", "pet_food")
_CHANNELS = ("email", "sms", "push", "phone")
_ACTIONS = ("delivered", "opened", "clicked")
SOURCE = "core-banking-eu-west"


def customer_id(c: int) -> str:
    return f"cust-{c:07d}"


class EventMix:
    """Contract-valid events of every type for a population of customers, in the order made."""

    def __init__(self, customers: int, seed: int = 7) -> None:
        self.customers = customers
        self.rng = random.Random(seed)
        self.seen: set[int] = set()
        self.seq = 0

    def event(self, c: int, at_ms: int, type_: str | None = None) -> tuple[str, bytes, bytes]:
        """(kind, key, value) of one event of customer ``c`` at ``at_ms``."""
        rng = self.rng
        cid = customer_id(c)
        if type_ is None:
            type_ = rng.choices(_TYPES, _WEIGHTS)[0]
        self.seen.add(c)
        self.seq += 1
        body: dict[str, Any] = {
            "event_id": f"{cid}-{self.seq}",
            "customer_id": cid,
            "type": type_,
            "occurred_at": format_ms(at_ms),
        }
        if rng.random() < 0.3:
            body["source"] = SOURCE
        acc, acc_type = _ACCOUNTS[c % 3] if type_ != "statement" else ("cc", "credit_card")
        if type_ in ("account_opened", "account_closed", "balance", "transaction"):
            body["account_id"] = f"{cid}-{acc}"
            body["account_type"] = acc_type
        if type_ == "balance":
            body["balance"] = round(rng.uniform(-500, 40_000), 2)
        elif type_ == "transaction":
            body["direction"] = "debit" if rng.random() < 0.6 else "credit"
            body["amount"] = round(rng.uniform(1, 3_000), 2)
            body["rail"] = rng.choice(_RAILS)
            if rng.random() < 0.5:
                body["balance_after"] = round(rng.uniform(0, 40_000), 2)
        elif type_ == "statement":
            body["account_id"] = f"{cid}-cc"
            balance = round(rng.uniform(0, 4_000), 2)
            body["statement_balance"] = balance
            body["amount_paid"] = round(balance * rng.choice((0, 0.1, 1)), 2)
            body["minimum_due"] = round(balance * 0.03, 2)
        elif type_ == "contract":
            body["contract_id"] = f"{cid}-k{c % 2}"
            body["product"] = _PRODUCTS[c % 4]
            body["status"] = "active"
            body["expires_at"] = format_ms(at_ms + rng.randint(10, 400) * MS_PER_DAY)
            body["auto_renew"] = rng.random() < 0.5
        elif type_ == "auto_renew_charged":
            body["contract_id"] = f"{cid}-k{c % 2}"
            body["amount"] = round(rng.uniform(5, 300), 2)
            body["expires_at"] = format_ms(at_ms + 365 * MS_PER_DAY)
        elif type_ == "visit":
            body["venue"] = "north gate"
            body["sentiment"] = rng.choice(("positive", "neutral", "negative"))
        elif type_ == "product_usage":
            body["product"] = _PRODUCTS[c % 4]
            body["activity"] = "login"
        elif type_ == "purchase":
            body["product_category"] = rng.choice(_CATEGORIES)
            body["amount"] = round(rng.uniform(5, 120), 2)
        elif type_ == "engagement":
            body["channel"] = rng.choice(_CHANNELS)
            body["action"] = rng.choice(_ACTIONS)
        elif type_ == "consent":
            body["channel"] = rng.choice(_CHANNELS)
            body["status"] = "opted_in" if rng.random() < 0.9 else "opted_out"
        elif type_ == "complaint":
            body["category"] = "queue"
        elif type_ == "profile":
            body["segment"] = rng.choice(("mass", "affluent", "student"))
            body["timezone"] = "Europe/Berlin"
        kind = "account" if type_ in ACCOUNT_TYPES else "usage"
        return kind, cid.encode(), orjson.dumps(body)

    def backlog(self, n: int, start_ms: int, span_ms: int) -> list[tuple[str, bytes, bytes]]:
        """``n`` events of random customers, evenly spread over ``span_ms``: event-time order."""
        step = span_ms / max(n, 1)
        return [
            self.event(self.rng.randrange(self.customers), start_ms + int(i * step))
            for i in range(n)
        ]


def backlog_start(span_days: int = 120) -> tuple[int, int]:
    """A window of event time that ends a day before now (the decoder refuses the future)."""
    end = wall_ms() - MS_PER_DAY
    return end - span_days * MS_PER_DAY, span_days * MS_PER_DAY


async def load(
    bootstrap: str, topics: TopicNames, records: Iterable[tuple[str, bytes, bytes]]
) -> float:
    """Produce in the given order (default partitioner: the inputs stay co-partitioned)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for kind, key, value in records:
            topic = topics.account_events if kind == "account" else topics.usage_events
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def bench_topics(tag: str) -> TopicNames:
    return TopicNames(
        account_events=f"bench-{tag}-account-events",
        usage_events=f"bench-{tag}-usage-events",
        contact_decisions=f"bench-{tag}-contact-decisions",
        dead_letters=f"bench-{tag}-dead-letters",
    )


def with_outputs(inputs: TopicNames, tag: str) -> TopicNames:
    """The same input topics with fresh output topics (one pair per worker run)."""
    return TopicNames(
        account_events=inputs.account_events,
        usage_events=inputs.usage_events,
        contact_decisions=f"bench-{tag}-contact-decisions",
        dead_letters=f"bench-{tag}-dead-letters",
    )


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a live process (its threads included)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the peak resident set size of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(x) for x in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def dir_size_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total / (1024 * 1024)


# --- the worker -----------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Sum of every sample per metric name (labels summed away)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name = key.partition("{")[0]
        try:
            sums[name] = sums.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return sums


@dataclass
class Worker:
    """A real ``lifecycle-triggers worker`` process on the dev stack (optionally under py-spy)."""

    stack: DevStack
    topics: TopicNames
    app_id: str
    workdir: Path
    clock: str = "event"
    store: str = "memory"
    partitions: int = 8
    state_dir: Path | None = None
    profile: Path | None = None
    profile_format: str = "speedscope"
    policy: dict[str, Any] = field(default_factory=dict)
    metrics_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # more environment, e.g. STATE_RESTORE

    def start(self) -> Worker:
        self.metrics_port = free_port()
        config = self.workdir / f"{self.app_id}.yaml"
        document: dict[str, Any] = {
            "topics": {
                "account_events": self.topics.account_events,
                "usage_events": self.topics.usage_events,
                "contact_decisions": self.topics.contact_decisions,
                "dead_letters": self.topics.dead_letters,
            },
            **self.policy,
        }
        config.write_text(yaml.safe_dump(document))
        state_dir = self.state_dir or self.workdir / f"{self.app_id}-state"
        env = dev_environment(self.stack)
        env.update(
            {
                "CLOCK": self.clock,
                "TRIGGERS_CONFIG": str(config),
                "TOPIC_PARTITIONS": str(self.partitions),
                "METRICS_PORT": str(self.metrics_port),
                "STATE_DIR": str(state_dir),
                "STATE_STORE": self.store,
                "APP_ID": self.app_id,
                "LEDGER_NAMESPACE": f"ns-{self.app_id}",
                "LOG_LEVEL": "warning",
            }
        )
        env.update(self.env)
        argv = [sys.executable, "-m", "streams", "worker"]
        if self.profile is not None:
            argv = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--nonblocking",
                "--rate",
                os.environ.get("BENCH_PROFILE_RATE", "97"),  # samples per second
                "--format",
                self.profile_format,
                "-o",
                str(self.profile),
                "--",
                *argv,
            ]
        self.log_path = self.workdir / f"{self.app_id}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        """The worker's own pid (py-spy's child when profiled)."""
        assert self.proc is not None
        if self.profile is None:
            return self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = children_of(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.05)
        raise RuntimeError("py-spy did not start the worker")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own local endpoint
                f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2
            ) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics")[1])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path else ""

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Seconds from process start to /ready answering 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited early:\n{self.log_tail()}")
            try:
                if self.get("/ready")[0] == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready in {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (to py-spy too, which then writes its profile), and wait."""
        if self.proc is None:
            return None
        if self.profile is None:
            return stop_process(self.proc, signal.SIGTERM, timeout)
        if self.proc.poll() is None:
            # Under py-spy: stop the worker it samples; py-spy then writes its profile and exits.
            try:
                os.kill(self.pid, signal.SIGTERM)
            except (OSError, RuntimeError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


@dataclass
class Consumption:
    """What a worker did between its first and its last consumed event."""

    events: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    decisions: float
    ready_seconds: float
    forced_releases: float = 0.0  # records the event-time merge let go before their turn
    early_rate: float = 0.0  # events/s from the first record done (``measure_consumption``)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


def measure_consumption(
    worker: Worker,
    expect: int,
    timeout: float = 900.0,
    poll: float = 0.05,
    poll_running: float = 0.2,
) -> Consumption:
    """Poll /metrics until ``expect`` input records are done with (applied or dead-lettered,
    state written, acked: ``lifecycle_input_records_done_total``).

    The window starts at the last poll that saw no input record begun (none accepted or
    dead-lettered, none done), as the ceiling's and the peer's windows start at their first
    record, and ends at the first poll that sees all of them done; its CPU comes from the same
    polls, so start-up is excluded. Records fetched before the window would be counted without
    the work done on them before it: a window from the first record *done* (an earlier way)
    left out the fetching, decoding, merging and applying of every record in flight then (a
    batch handler takes 4,000 records, the event-time merge holds more), which overstated the
    rate (``early_rate``, kept for comparison). If the first poll already sees records begun,
    only the records begun after it count.

    Polls every ``poll`` seconds until the window starts, then every ``poll_running``: each
    scrape costs the worker a few milliseconds of the CPU the window measures (Prometheus
    scrapes every 15 s or so; 20 scrapes a second took 4 % of the worker's CPU), and the end
    of the window, a poll late at most, then understates the rate by 2 % at most.
    """
    pid = worker.pid
    ready = worker.wait_ready()
    deadline = time.monotonic() + timeout
    start: tuple[float, float, float] | None = None  # (time, CPU, records begun before it)
    first_done: tuple[float, float] | None = None  # (time, records done)
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        try:
            m = worker.metrics()
        except (TimeoutError, OSError):
            # A worker busy with a large batch on a loaded machine can leave a poll
            # unanswered for its 2 s; the next poll counts.
            continue
        now, cpu = time.monotonic(), cpu_seconds(pid)
        done = m.get("lifecycle_input_records_done_total", 0)
        begun = m.get("lifecycle_events_consumed_total", 0) + m.get(
            "lifecycle_dead_letters_total", 0
        )
        if begun == 0 and done == 0:
            start = (now, cpu, 0.0)
        elif start is None:
            start = (now, cpu, max(begun, done))
        if first_done is None and done > 0:
            first_done = (now, done)
        if first_done is not None and done >= expect:
            early = (done - first_done[1]) / (now - first_done[0]) if now > first_done[0] else 0.0
            return Consumption(
                events=int(done - start[2]),
                seconds=now - start[0],
                cpu_seconds=cpu - start[1],
                peak_rss_mb=peak_rss_mb(pid),
                decisions=m.get("lifecycle_decisions_total", 0),
                ready_seconds=ready,
                forced_releases=m.get("lifecycle_order_forced_releases_total", 0),
                early_rate=early,
            )
        time.sleep(poll if begun == 0 and done == 0 else poll_running)
    raise RuntimeError(f"worker consumed too little in {timeout} s:\n{worker.log_tail()}")


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
