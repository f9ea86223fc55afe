"""Worker throughput against a raw aiokafka ceiling, a Faust and a quix-streams peer in one run.

Starts a dev stack (Tansu, memory storage, and redis-server) in a temporary directory, generates
a realistic event mix once (contract-valid events of every type, in event-time order, keyed by
customer id, ~200 bytes each) into the two input topics, then measures against that same data:

- ceiling: a raw aiokafka loop (its own process) that consumes both topics, decodes each value
  with orjson and produces one small record per input event;
- peer:    the plain Faust way (bench/faust_peer.py: one agent, a faust.Record per event, a
  table read and write per event, occasional output), a Faust worker process;
- quix:    the same job the quix-streams way (bench/quix_peer.py: a StreamingDataFrame per
  topic, concatenated, a stateful apply per event, to_topic for the acted-on events), run with
  an interpreter that has quixstreams (.venv-quix from `make bench`); skipped, with the reason
  printed, when there is none;
- worker:  ``lifecycle-triggers worker`` end to end (ingest, merge, state, triggers, Redis
  ledger, publish, changelog) with CLOCK=event, STATE_STORE=memory, then rocksdb;
- latency: a fresh wall-clock worker fed by a paced producer at half the measured worker rate;
  every 20th event is an auto_renew_charged of a new customer, which always decides at once
  (a service confirmation); latency = the decision record's timestamp (set when the worker
  publishes it) minus the input record's produce timestamp, matched by evidence event id.

Each rate is events / seconds between the first and the last consumed event of that process
(start-up, group join and recovery excluded); CPU is user + system of that process in the same
window; RSS is its peak (VmHWM). Ratios are the figures to quote: the machine is shared.

    python bench/throughput_bench.py                 # 200,000 events, 100,000 customers
    python bench/throughput_bench.py --quick         # 30,000 events, 20,000 customers
    python bench/throughput_bench.py --repeat 3 --profile /tmp/worker-profile.txt

Environment: BENCH_EVENTS, BENCH_CUSTOMERS, BENCH_QUICK=1, BENCH_REPEAT override the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from benchlib import (
    REPO,
    Consumption,
    EventMix,
    Worker,
    backlog_start,
    bench_topics,
    customer_id,
    load,
    measure_consumption,
    peak_rss_mb,
    with_outputs,
)

from streams.core.timeutil import wall_ms
from streams.kafka.app import PRODUCER_LINGER_SECONDS
from streams.kafka.copartition import REPARTITION_MODES
from streams.kafka.tansu import FETCH_MAX_WAIT_MS
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack

HERE = Path(__file__).resolve().parent
PROBE_EVERY = 20  # every 20th paced event is a decision probe
WARMUP_SECONDS = 2.0  # probes of the first seconds of the paced phase are not counted


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    extra: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_seconds / self.events if self.events else 0.0


# --- the ceiling: a raw aiokafka loop, run as its own process ---------------------------------


async def assign_from_beginning(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> None:
    """Assign every partition of ``topics`` (waiting for their metadata) from the beginning."""
    tps = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)


async def ceiling_loop(bootstrap: str, topics: Sequence[str], output: str, expect: int) -> dict:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    try:
        await assign_from_beginning(consumer, topics)
        count, t0, cpu0 = 0, 0.0, 0.0
        while count < expect:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if batch and count == 0:
                t0, cpu0 = time.monotonic(), _cpu()
            for records in batch.values():
                for rec in records:
                    event = orjson.loads(rec.value)
                    await producer.send(
                        output,
                        orjson.dumps({"event_id": event["event_id"], "type": event["type"]}),
                        key=rec.key,
                    )
                    count += 1
        await producer.flush()
        return {
            "events": count,
            "seconds": time.monotonic() - t0,
            "cpu_seconds": _cpu() - cpu0,
            "peak_rss_mb": peak_rss_mb(os.getpid()),
        }
    finally:
        await producer.stop()
        await consumer.stop()


async def echo_loop(bootstrap: str, topics: Sequence[str], output: str) -> None:
    """The latency baseline: a raw aiokafka loop that answers every input record at once with
    one output record naming it (``{"evidence": [event_id]}``), with the worker's fetch wait and
    producer linger. Prints "ready" once it is assigned; runs until it is terminated."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=int(PRODUCER_LINGER_SECONDS * 1000)
    )
    await consumer.start()
    await producer.start()
    try:
        await assign_from_beginning(consumer, topics)
        print("ready", flush=True)
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=1_000)
            for records in batch.values():
                for rec in records:
                    event = orjson.loads(rec.value)
                    await producer.send(
                        output, orjson.dumps({"evidence": [event["event_id"]]}), key=rec.key
                    )
    finally:
        await producer.stop()
        await consumer.stop()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ceiling(stack: DevStack, inputs: TopicNames, output: str, expect: int) -> Result:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        "ceiling",
        "--bootstrap",
        stack.bootstrap_servers,
        "--inputs",
        f"{inputs.account_events},{inputs.usage_events}",
        "--output",
        output,
        "--events",
        str(expect),
    ]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=900, cwd=REPO)
    got = orjson.loads(done.stdout.splitlines()[-1])
    return Result("ceiling: raw aiokafka", **got)


# --- the peers: plain Faust, quix-streams -----------------------------------------------------

FAUST_PEER = "peer: plain Faust"
QUIX_PEER = "peer: quix-streams"
QUIX_VENV_PYTHON = REPO / ".venv-quix" / "bin" / "python"


def run_peer(stack: DevStack, inputs: TopicNames, tag: str, expect: int, workdir: Path) -> Result:
    argv = [sys.executable, str(HERE / "faust_peer.py"), "worker", "-l", "warn", "--without-web"]
    return _run_peer_process(FAUST_PEER, argv, stack, inputs, f"peer-{tag}", expect, workdir)


def quix_python() -> tuple[str | None, str]:
    """An interpreter that can import quixstreams (BENCH_QUIX_PYTHON, this one, or the
    .venv-quix that `make bench` creates), or why there is none."""
    candidates = [os.environ.get("BENCH_QUIX_PYTHON"), sys.executable, str(QUIX_VENV_PYTHON)]
    for exe in dict.fromkeys(filter(None, candidates)):
        if not Path(exe).exists():
            continue
        probe = subprocess.run(
            [exe, "-c", "import quixstreams"], capture_output=True, check=False, timeout=60
        )
        if probe.returncode == 0:
            return exe, ""
    return None, (
        f"quixstreams is not installed (not importable by {sys.executable}, no "
        f"{QUIX_VENV_PYTHON.relative_to(REPO)}; `make bench` installs it there, or set "
        "BENCH_QUIX_PYTHON to an interpreter that has it)"
    )


def run_quix_peer(
    stack: DevStack, inputs: TopicNames, tag: str, expect: int, workdir: Path, python: str
) -> Result:
    argv = [python, str(HERE / "quix_peer.py")]
    extra_env = {"PEER_STATE_DIR": str(workdir / f"quix-state-{tag}")}
    return _run_peer_process(
        QUIX_PEER, argv, stack, inputs, f"quix-{tag}", expect, workdir, extra_env
    )


def _run_peer_process(
    name: str,
    argv: list[str],
    stack: DevStack,
    inputs: TopicNames,
    app_id: str,
    expect: int,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Result:
    output = f"bench-{app_id}-output"
    stack.create_topics((output,), 8)
    result = workdir / f"{app_id}.json"
    env = dict(os.environ)
    env.update(
        {
            "PEER_BROKER": stack.bootstrap_servers,
            "PEER_APP_ID": app_id,
            "PEER_TOPICS": f"{inputs.account_events},{inputs.usage_events}",
            "PEER_OUTPUT": output,
            "PEER_EXPECT": str(expect),
            "PEER_RESULT": str(result),
            **(extra_env or {}),
        }
    )
    log_path = workdir / f"{app_id}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while not result.exists():
            failed = b"Crashed reason" in log_path.read_bytes()
            if failed or proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} failed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(0.1)
        got = orjson.loads(result.read_bytes())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return Result(
        name,
        events=got["events"],
        seconds=got["t1"] - got["t0"],
        cpu_seconds=got["cpu"],
        peak_rss_mb=got["peak_rss_mb"],
    )


# --- the worker ------------------------------------------------------------------------------


def run_worker(
    stack: DevStack,
    inputs: TopicNames,
    tag: str,
    expect: int,
    workdir: Path,
    store: str,
    profile: Path | None = None,
    repartition: str | None = None,
) -> Result:
    topics = with_outputs(inputs, tag)
    stack.create_topics((topics.contact_decisions, topics.dead_letters), 8)
    worker = Worker(
        stack,
        topics,
        f"bench-{tag}",
        workdir,
        clock="event",
        store=store,
        profile=profile,
        profile_format="raw",
        policy={"stream": {"repartition": repartition}} if repartition else {},
    )
    worker.start()
    try:
        got: Consumption = measure_consumption(worker, expect)
    finally:
        code = worker.stop()
    if code not in (0, None) and profile is None:
        print(f"warning: worker exited with {code}:\n{worker.log_tail(1500)}", file=sys.stderr)
    return Result(
        f"worker: {store}"
        + (" (py-spy)" if profile else "")
        + (f", repartition {repartition}" if repartition else ""),
        events=got.events,
        seconds=got.seconds,
        cpu_seconds=got.cpu_seconds,
        peak_rss_mb=got.peak_rss_mb,
        extra=f"ready {got.ready_seconds:.1f} s, {got.decisions:.0f} decisions, "
        f"{got.forced_releases:.0f} forced releases, {got.early_rate:,.0f} events/s from the "
        "first record done",
    )


# --- latency at half the peak rate -----------------------------------------------------------


async def paced(
    bootstrap: str,
    topics: TopicNames,
    rate: float,
    seconds: float,
    customers: int,
    linger_ms: int,
) -> tuple[list[float], int, int]:
    """Produce at ``rate`` for ``seconds``; returns probe latencies (ms), probes, events sent."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)  # batches: below
    await consumer.start()
    await producer.start()
    probes: dict[str, int] = {}
    counted: set[str] = set()
    latencies: list[float] = []
    mix = EventMix(customers, seed=11)
    stop = asyncio.Event()

    async def collect() -> None:
        await assign_from_beginning(consumer, (topics.contact_decisions,))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for rec in records:
                    for evidence in orjson.loads(rec.value).get("evidence", ()):
                        sent_at = probes.get(evidence)
                        if sent_at is not None and evidence not in counted:
                            counted.add(evidence)
                            if sent_at >= 0:
                                latencies.append(float(rec.timestamp - sent_at))

    collector = asyncio.create_task(collect())
    sent = 0
    # The source builds its own record batches, one per topic-partition and linger interval
    # (the default partitioner's choice of partition), and hands each over whole: a producer
    # as a core-banking bus runs it, at a fraction of the CPU of a send() per record, which
    # on 2 cores would otherwise come out of the measured worker's share.
    partitions = len(await producer.partitions_for(topics.account_events))
    open_batches: dict[tuple[str, int], Any] = {}

    async def hand_over() -> None:
        batches = list(open_batches.items())
        open_batches.clear()
        for (topic, partition), builder in batches:
            await producer.send_batch(builder, topic, partition=partition)

    try:
        await asyncio.sleep(1.0)  # let the collector assign its partitions
        t0 = time.monotonic()
        next_hand_over = t0 + linger_ms / 1000
        while (elapsed := time.monotonic() - t0) < seconds:
            while sent < int(rate * elapsed):
                now = wall_ms()
                if sent % PROBE_EVERY == 0:
                    c = customers + sent  # a new customer: the charge decides at once
                    kind, key, value = mix.event(c, now, "auto_renew_charged")
                    # Warm-up probes are matched but not counted (a negative marker).
                    probes[f"{customer_id(c)}-{mix.seq}"] = now if elapsed >= WARMUP_SECONDS else -1
                else:
                    kind, key, value = mix.event(mix.rng.randrange(customers), now)
                topic = topics.account_events if kind == "account" else topics.usage_events
                partition = (murmur2(key) & 0x7FFFFFFF) % partitions
                builder = open_batches.get((topic, partition))
                if builder is None:
                    builder = open_batches[(topic, partition)] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=now) is None:  # full
                    await producer.send_batch(builder, topic, partition=partition)
                    builder = open_batches[(topic, partition)] = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=now)
                sent += 1
            if time.monotonic() >= next_hand_over:
                await hand_over()
                next_hand_over = time.monotonic() + linger_ms / 1000
            await asyncio.sleep(0.002)
        await hand_over()
        await producer.flush()
        deadline = time.monotonic() + 20
        while len(counted) < len(probes) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await collector
        await producer.stop()
        await consumer.stop()
    return latencies, sum(1 for v in probes.values() if v >= 0), sent


def _quantiles(latencies: list[float], rate: float, seconds: float, sent: int) -> dict[str, Any]:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "rate": rate,
        "achieved_rate": sent / seconds,
        "matched": len(latencies),
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "max_ms": max(latencies),
    }


def run_raw_latency(
    stack: DevStack, rate: float, seconds: float, customers: int, workdir: Path, linger_ms: int
) -> dict[str, Any]:
    """The same paced run answered by the raw loop (``echo_loop``): what the broker, aiokafka
    and the benchmark's own producer and consumer take before any processing."""
    tag = f"raw-{uuid.uuid4().hex[:8]}"
    topics = bench_topics(tag)
    stack.create_topics(topics.all, 8)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        "echo",
        "--bootstrap",
        stack.bootstrap_servers,
        "--inputs",
        f"{topics.account_events},{topics.usage_events}",
        "--output",
        topics.contact_decisions,
    ]
    log_path = workdir / f"echo-{tag}.log"
    with open(log_path, "ab") as log:
        echo = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log)
    try:
        assert echo.stdout is not None
        if echo.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the raw loop did not start:\n{log_path.read_text()[-3000:]}")
        latencies, probes, sent = asyncio.run(
            paced(stack.bootstrap_servers, topics, rate, seconds, customers, linger_ms)
        )
    finally:
        echo.terminate()
        echo.wait(timeout=30)
    if len(latencies) < 2:
        raise RuntimeError(f"only {len(latencies)} answers of the raw loop matched")
    return _quantiles(latencies, rate, seconds, sent) | {
        "probes": probes,
        "source_linger_ms": linger_ms,
    }


def run_latency(
    stack: DevStack,
    rate: float,
    seconds: float,
    customers: int,
    workdir: Path,
    linger_ms: int,
    order_wait_ms: int | None = None,
    order_grace_ms: int | None = None,
    repartition: str | None = None,
) -> dict[str, Any]:
    tag = f"lat-{uuid.uuid4().hex[:8]}"
    topics = bench_topics(tag)
    stack.create_topics(topics.all, 8)
    stream: dict[str, int | str] = {}
    if repartition is not None:
        stream["repartition"] = repartition
    if order_wait_ms is not None:
        stream["max_order_wait_ms"] = order_wait_ms
    if order_grace_ms is not None:
        stream["order_grace_ms"] = order_grace_ms
    extra = {"stream": stream} if stream else {}
    worker = Worker(
        stack, topics, f"bench-{tag}", workdir, clock="wall", store="memory", policy=extra
    )
    worker.start()
    try:
        worker.wait_ready()
        latencies, probes, sent = asyncio.run(
            paced(stack.bootstrap_servers, topics, rate, seconds, customers, linger_ms)
        )
    finally:
        worker.stop()
    if len(latencies) < 2:
        raise RuntimeError(f"only {len(latencies)} decisions matched:\n{worker.log_tail()}")
    return _quantiles(latencies, rate, seconds, sent) | {
        "probes": probes,
        "source_linger_ms": linger_ms,
        "max_order_wait_ms": order_wait_ms,
        "order_grace_ms": order_grace_ms,
        "repartition": repartition,
    }


# --- the profile -----------------------------------------------------------------------------


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive shares of py-spy's collapsed stacks ("f1;f2;... count")."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):  # py-spy's thread/process prefix
            frames = frames[1:]
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "empty profile"
    lines = [f"{total} samples (active threads only)", "", "self %  function"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:6.1f}  {frame}")
    lines += ["", "total % function (inclusive)"]
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[: top * 2]:
        lines.append(f"{100 * n / total:6.1f}  {frame}")
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    quick = os.environ.get("BENCH_QUICK") == "1"
    parser.add_argument("--quick", action="store_true", default=quick, help="a small fast run")
    parser.add_argument("--events", type=int, default=None, help="input events (200,000)")
    parser.add_argument("--customers", type=int, default=None, help="customers (100,000)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=_int_env("BENCH_REPEAT", 1))
    parser.add_argument("--no-rocksdb", action="store_true", help="skip the rocksdb worker run")
    parser.add_argument(
        "--no-peer", action="store_true", help="skip the plain-Faust peer (quicker A/B runs)"
    )
    parser.add_argument(
        "--no-quix", action="store_true", help="skip the quix-streams peer (quicker A/B runs)"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="pace the latency phase at this rate instead of half the worker's (with "
        "--repeat 0: only the latency phase)",
    )
    parser.add_argument(
        "--source-linger-ms",
        type=int,
        default=5,
        help="the paced producer's linger in the latency phase (5: Apache Kafka's default "
        "producer linger.ms since 4.0)",
    )
    parser.add_argument(
        "--order-wait-ms",
        type=int,
        default=None,
        help="stream.max_order_wait_ms for the latency worker (the config's default otherwise)",
    )
    parser.add_argument(
        "--order-grace-ms",
        type=int,
        default=None,
        help="stream.order_grace_ms for the latency worker (the config's default otherwise)",
    )
    parser.add_argument(
        "--latency-repartition",
        default=None,
        help="stream.repartition for the latency worker (the config's default, misrouted, "
        "otherwise): 'off' leaves the repartition topic out of the event-time merge; several "
        "(comma-separated, e.g. misrouted,off) run one latency worker each, every one beside "
        "the same raw loop",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also run a worker under py-spy (BENCH_PROFILE_RATE samples/s, default 97); "
        "write its collapsed stacks here",
    )
    parser.add_argument(
        "--profile-store",
        choices=("memory", "rocksdb"),
        default="memory",
        help="the table store of the worker --profile runs",
    )
    parser.add_argument(
        "--repartition-modes",
        default="off,all",
        help="also run the memory worker with these stream.repartition modes (comma-separated; "
        "empty: none): the input is correctly partitioned, so 'off' is the cost-free baseline "
        "of the default 'misrouted', and 'all' sends every record through the repartition topic",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    # Internal: the ceiling loop runs as its own process.
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", default="", help=argparse.SUPPRESS)
    parser.add_argument("--output", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = _int_env("BENCH_EVENTS", 30_000 if args.quick else 200_000)
    if args.customers is None:
        args.customers = _int_env("BENCH_CUSTOMERS", 20_000 if args.quick else 100_000)
    if args.latency_seconds is None:
        args.latency_seconds = 10.0 if args.quick else 30.0
    if args.repeat < 1 and args.latency_rate is None:
        parser.error("--repeat 0 needs --latency-rate")
    if args.latency_repartition is None:
        args.latency_repartitions = [None]
    else:
        args.latency_repartitions = [m.strip() for m in args.latency_repartition.split(",")]
        unknown = [m for m in args.latency_repartitions if m not in REPARTITION_MODES]
        if unknown:
            parser.error(
                f"--latency-repartition: unknown stream.repartition mode(s) {unknown}; "
                f"expected a comma-separated list of {', '.join(REPARTITION_MODES)}"
            )
    return args


def table(rows: list[Result], worker_rate: float) -> str:
    out = [
        f"{'run':<26} {'events/s':>9} {'worker x':>9} {'CPU %':>6} {'CPU µs/ev':>9} "
        f"{'peak RSS':>9}  notes",
    ]
    for r in rows:
        ratio = worker_rate / r.rate if r.rate and not r.name.startswith("worker") else None
        out.append(
            f"{r.name:<26} {r.rate:>9,.0f} {'' if ratio is None else f'{ratio:.2f}':>9} "
            f"{r.cpu_percent:>6.0f} {r.cpu_us_per_event:>9.1f} {r.peak_rss_mb:>6.0f} MiB  {r.extra}"
        )
    return "\n".join(out)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the with-blocks: the dev stack is stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.role == "echo":
        asyncio.run(echo_loop(args.bootstrap, args.inputs.split(","), args.output))
        return 0
    if args.role == "ceiling":
        got = asyncio.run(
            ceiling_loop(args.bootstrap, args.inputs.split(","), args.output, args.events)
        )
        print(orjson.dumps(got).decode())
        return 0
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    with (
        tempfile.TemporaryDirectory(prefix="lt-bench-") as tmp,
        DevStack(Path(tmp) / "stack") as stack,
    ):
        workdir = Path(tmp)
        inputs = bench_topics(tag)
        ceiling_out = f"bench-{tag}-ceiling-output"
        stack.create_topics(
            (inputs.account_events, inputs.usage_events, ceiling_out), args.partitions
        )
        mix = EventMix(args.customers)
        start_ms, span_ms = backlog_start()
        records = mix.backlog(args.events, start_ms, span_ms)
        avg_bytes = sum(len(v) for _, _, v in records) / len(records)
        accounts = sum(1 for k, _, _ in records if k == "account")
        load_seconds = asyncio.run(load(stack.bootstrap_servers, inputs, records))
        del records
        print(
            f"loaded {args.events:,} events (avg {avg_bytes:.0f} B, {accounts:,} account / "
            f"{args.events - accounts:,} usage) of {len(mix.seen):,} customers into "
            f"{args.partitions} partitions in {load_seconds:.1f} s; {os.cpu_count()} CPUs",
            flush=True,
        )
        runs: dict[str, list[Result]] = {}
        quix, quix_skipped = (None, "--no-quix") if args.no_quix else quix_python()
        if quix is None:
            print(f"quix-streams peer skipped: {quix_skipped}", flush=True)

        def record(result: Result) -> None:
            runs.setdefault(result.name, []).append(result)
            print(
                f"  {result.name:<26} {result.rate:>9,.0f} events/s  CPU "
                f"{result.cpu_percent:.0f} %  RSS {result.peak_rss_mb:.0f} MiB  {result.extra}",
                flush=True,
            )

        for i in range(args.repeat):
            record(run_ceiling(stack, inputs, ceiling_out, args.events))
            if not args.no_peer:
                record(run_peer(stack, inputs, f"{tag}-{i}", args.events, workdir))
            if quix is not None:
                try:
                    record(run_quix_peer(stack, inputs, f"{tag}-{i}", args.events, workdir, quix))
                except RuntimeError as exc:  # the bench goes on; the reason is printed
                    quix_skipped = f"it failed on this broker: {exc}"
                    print(f"quix-streams peer: {quix_skipped}", flush=True)
                    quix = None
            record(run_worker(stack, inputs, f"{tag}-m{i}", args.events, workdir, "memory"))
            if not args.no_rocksdb:
                record(run_worker(stack, inputs, f"{tag}-r{i}", args.events, workdir, "rocksdb"))
            for mode in filter(None, args.repartition_modes.split(",")):
                record(
                    run_worker(
                        stack,
                        inputs,
                        f"{tag}-{mode}{i}",
                        args.events,
                        workdir,
                        "memory",
                        repartition=mode,
                    )
                )
        rows = [_median_result(results) for results in runs.values()]
        by_name = {r.name: r for r in rows}
        worker_rate = by_name["worker: memory"].rate if rows else 0.0
        latency: dict[str, Any] | None = None
        raw_latency: dict[str, Any] | None = None
        more_latency: list[dict[str, Any]] = []
        if not args.no_latency:
            # Each latency phase on a broker of its own: Tansu's memory storage lists every
            # record batch of a partition on each fetch, so its fetches slow down with what it
            # holds (tansu-io/tansu#684); the throughput runs would otherwise be in the figure.
            paced_run = (
                args.latency_rate or worker_rate / 2,
                args.latency_seconds,
                args.customers,
                workdir,
                args.source_linger_ms,
            )
            with DevStack(workdir / "raw-latency-stack") as raw_stack:
                raw_latency = run_raw_latency(raw_stack, *paced_run)
            for i, mode in enumerate(args.latency_repartitions):
                with DevStack(workdir / f"latency-stack-{i}") as latency_stack:
                    got = run_latency(
                        latency_stack,
                        *paced_run,
                        args.order_wait_ms,
                        args.order_grace_ms,
                        mode,
                    )
                if latency is None:
                    latency = got
                else:
                    more_latency.append(got)
        profile_text = None
        if args.profile is not None:
            record(
                run_worker(
                    stack,
                    inputs,
                    f"{tag}-prof",
                    args.events,
                    workdir,
                    args.profile_store,
                    profile=args.profile,
                )
            )
            if args.profile.exists():
                profile_text = summarize_profile(args.profile)
    print()
    if rows:
        print_throughput(args, rows, by_name, worker_rate)
        if QUIX_PEER not in by_name:
            print(f"quix-streams peer: none ({quix_skipped})")
    if latency is not None:
        print_latency(args, latency, raw_latency, more_latency)
    if profile_text is not None:
        print(f"\nprofile of the worker ({args.profile}):\n{profile_text}")
    print(f"\nbench took {time.monotonic() - started:.0f} s")
    out = args.json or HERE / "results" / f"throughput-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(
        orjson.dumps(
            {
                "events": args.events,
                "customers": args.customers,
                "partitions": args.partitions,
                "repeat": args.repeat,
                "runs": {k: [asdict(r) | {"rate": r.rate} for r in v] for k, v in runs.items()},
                "latency": latency,
                "raw_latency": raw_latency,
                "more_latency": more_latency,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    return 0


def print_latency(
    args: argparse.Namespace,
    latency: dict[str, Any],
    raw_latency: dict[str, Any] | None,
    more_latency: list[dict[str, Any]],
) -> None:
    share = "50 % of the worker's rate" if args.latency_rate is None else "a fixed rate"
    wait, grace = latency["max_order_wait_ms"], latency["order_grace_ms"]
    print(
        f"event-to-decision latency at {latency['achieved_rate']:,.0f} events/s "
        f"({share}; wall clock; {latency['matched']} decisions; "
        f"source linger {latency['source_linger_ms']} ms; a broker of its own"
        f"{'' if wait is None else f'; max_order_wait_ms {wait}'}"
        f"{'' if grace is None else f'; order_grace_ms {grace}'}"
        f"{'' if not latency.get('repartition') else '; repartition ' + latency['repartition']}"
        "): "
        f"p50 {latency['p50_ms']:.0f} ms  p95 {latency['p95_ms']:.0f} ms  "
        f"p99 {latency['p99_ms']:.0f} ms  max {latency['max_ms']:.0f} ms"
    )
    if raw_latency is None:
        return
    print(
        "raw aiokafka loop answering the same paced input at "
        f"{raw_latency['achieved_rate']:,.0f} events/s (the broker's and the clients' share): "
        f"p50 {raw_latency['p50_ms']:.0f} ms"
        f"  p95 {raw_latency['p95_ms']:.0f} ms  p99 {raw_latency['p99_ms']:.0f} ms  "
        f"max {raw_latency['max_ms']:.0f} ms"
    )
    for got in (latency, *more_latency):
        print(
            f"worker (repartition {got.get('repartition') or 'default'}; "
            f"{got['matched']} decisions): p50 {got['p50_ms']:.0f} ms  "
            f"p99 {got['p99_ms']:.0f} ms; worker - raw loop: "
            f"p50 {got['p50_ms'] - raw_latency['p50_ms']:+.0f} ms  "
            f"p99 {got['p99_ms'] - raw_latency['p99_ms']:+.0f} ms; worker / raw loop: "
            f"p50 {got['p50_ms'] / raw_latency['p50_ms']:.2f}  "
            f"p99 {got['p99_ms'] / raw_latency['p99_ms']:.2f}"
        )


def print_throughput(
    args: argparse.Namespace, rows: list[Result], by_name: dict[str, Result], worker_rate: float
) -> None:
    print(
        f"throughput ({args.events:,} events, {args.customers:,} customers, "
        f"{args.partitions} partitions; median of {args.repeat}):"
    )
    print(table(rows, worker_rate))
    ceiling, peer = by_name["ceiling: raw aiokafka"], by_name.get(FAUST_PEER)
    quix = by_name.get(QUIX_PEER)
    rates = [("memory", worker_rate)]
    if "worker: rocksdb" in by_name:
        rates.append(("rocksdb", by_name["worker: rocksdb"].rate))
    for store, rate in rates:
        line = f"worker ({store}) / ceiling = {rate / ceiling.rate:.2f}"
        if peer is not None:
            line += f"   worker ({store}) / peer = {rate / peer.rate:.2f}"
        if quix is not None:
            line += f"   worker ({store}) / quix-streams = {rate / quix.rate:.2f}"
        print(line)
    if quix is not None:
        line = f"quix-streams peer / ceiling = {quix.rate / ceiling.rate:.2f}"
        if peer is not None:
            line += f"   quix-streams / plain Faust = {quix.rate / peer.rate:.2f}"
        print(line)
    # What a ratio to the ceiling asks of the worker: one core's time per event at that rate.
    budgets = "; ".join(
        f"{share}x the ceiling: {1e6 / (share * ceiling.rate):.1f} µs" for share in (0.3, 0.5)
    )
    off = by_name.get("worker: memory, repartition off")
    if off is not None:
        # The input is partitioned as stream.partitioner expects: 'off' skips the repartition
        # topic entirely, the default only checks each record, 'all' forwards every one.
        modes = [("misrouted (default)", worker_rate)] + [
            (r.name.rsplit(" ", 1)[1], r.rate)
            for r in rows
            if r.name.startswith("worker: memory, repartition ") and not r.name.endswith(" off")
        ]
        print(
            "stream.repartition on correctly partitioned input, as a ratio to 'off': "
            + "; ".join(f"{name} {rate / off.rate:.2f}" for name, rate in modes)
        )
    worker = by_name["worker: memory"]
    print(
        f"one core's time per event at {budgets}; the worker (memory) used "
        f"{worker.cpu_us_per_event:.1f} µs of CPU per event, the ceiling "
        f"{ceiling.cpu_us_per_event:.1f} µs (bench/pure_bench.py: the pure path alone)"
    )


def _median_result(results: list[Result]) -> Result:
    """The run with the median rate (its CPU and RSS belong to it)."""
    ordered = sorted(results, key=lambda r: r.rate)
    chosen = ordered[len(ordered) // 2]
    if len(results) > 1:
        rates = ", ".join(f"{r.rate:,.0f}" for r in results)
        chosen = Result(**{**asdict(chosen), "extra": f"{chosen.extra}; runs {rates}"})
    return chosen


if __name__ == "__main__":
    sys.exit(main())
