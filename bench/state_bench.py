"""The RocksDB state store at scale: peak RSS, size on disk, warm restart, cold recovery.

Starts a dev stack (Tansu, memory storage, and redis-server), produces one ``account_opened`` per
customer (in event-time order, keyed by customer id, 8 partitions) and has a real
``lifecycle-triggers worker`` (STATE_STORE=rocksdb, CLOCK=event) build the state. Then:

- build:  events/s while building, and the worker's peak RSS (VmHWM);
- disk:   the size of its state directory after a clean stop (SIGTERM);
- warm:   a restart on the same state directory: seconds from process start to /ready, and the
          worker's own ``lifecycle_recovery_seconds``;
- cold:   a start on an empty state directory, same app id: everything comes back from the
          changelog topics; records/s = changelog records / (cold - warm seconds to /ready:
          start-up and group join cancel out), and as a ratio to a raw aiokafka read of the
          same changelog topics in the same run. The worker's own ``lifecycle_recovery_seconds``
          (assignment to its first event, so up to a tick late) is printed beside it. Measured
          twice: with the bulk restore (``STATE_RESTORE=bulk``, the default,
          ``streams/kafka/bulk_restore.py``) and, as the baseline of the same run, with Faust's
          recovery alone (``STATE_RESTORE=faust``; ``--no-faust-restore`` leaves it out).

Several sizes in one run (``--customers 100000,200000``) give a slope to extrapolate from; the
printed extrapolation to 1,000,000 is linear in the customers and says so.

    python bench/state_bench.py                      # 200,000 customers
    python bench/state_bench.py --customers 1000000  # the target size (takes long here)
    python bench/state_bench.py --quick              # 20,000 customers

Environment: BENCH_STATE_CUSTOMERS (a comma-separated list), BENCH_QUICK=1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from benchlib import (
    EventMix,
    Worker,
    backlog_start,
    bench_topics,
    dir_size_mb,
    load,
    measure_consumption,
    peak_rss_mb,
)

from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack

HERE = Path(__file__).resolve().parent
TABLES = ("customers", "due-index", "stream-time")
TARGET = 1_000_000


@dataclass
class StateFigures:
    customers: int
    build_rate: float
    build_peak_rss_mb: float
    disk_mb: float
    changelog_records: int
    warm_ready_s: float
    warm_recovery_s: float
    warm_peak_rss_mb: float
    cold_ready_s: float
    cold_recovery_s: float
    cold_peak_rss_mb: float
    raw_read_rate: float
    # The same cold start with Faust's recovery alone (STATE_RESTORE=faust); 0: not measured.
    faust_ready_s: float = 0.0
    faust_recovery_s: float = 0.0

    @property
    def cold_extra_s(self) -> float:
        """Cold minus warm time to /ready: the restore, start-up and group join cancelled out."""
        return max(self.cold_ready_s - self.warm_ready_s, 0.0)

    @property
    def cold_rate(self) -> float:
        return self.changelog_records / self.cold_extra_s if self.cold_extra_s else 0.0

    @property
    def faust_rate(self) -> float:
        extra = max(self.faust_ready_s - self.warm_ready_s, 0.0)
        return self.changelog_records / extra if self.faust_ready_s and extra else 0.0

    @property
    def faust_gauge_rate(self) -> float:
        s = self.faust_recovery_s
        return self.changelog_records / s if s else 0.0

    @property
    def net_gauge_rate(self) -> float:
        """Changelog records / (cold - warm gauge): what both starts spend after the
        assignment anyway (the seek, the first tick, up to a second) cancelled out."""
        extra = self.cold_recovery_s - self.warm_recovery_s
        return self.changelog_records / extra if extra > 0 else 0.0

    @property
    def net_faust_gauge_rate(self) -> float:
        extra = self.faust_recovery_s - self.warm_recovery_s
        return self.changelog_records / extra if self.faust_recovery_s and extra > 0 else 0.0

    @property
    def gauge_rate(self) -> float:
        """Changelog records / the cold worker's own recovery seconds (assignment, bulk restore
        included, to its first event: up to a tick late)."""
        return self.changelog_records / self.cold_recovery_s if self.cold_recovery_s else 0.0


async def read_all(bootstrap: str, topics: Sequence[str]) -> tuple[int, float]:
    """(records, seconds) of a raw aiokafka read of ``topics`` from start to end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            deadline = time.monotonic() + 10
            while not partitions and time.monotonic() < deadline:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions or ()))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        count = 0
        idle = 0
        while True:
            batch = await consumer.getmany(timeout_ms=300, max_records=20_000)
            count += sum(len(r) for r in batch.values())
            if batch:
                idle = 0
                continue
            # The fetch high watermark says where each partition ends (not ListOffsets: Tansu).
            done = True
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    done = False
            idle += 1
            if done or idle > 20:
                break
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


def _start(
    stack: DevStack,
    topics: TopicNames,
    app_id: str,
    workdir: Path,
    state_dir: Path,
    restore: str = "bulk",
) -> Worker:
    return Worker(
        stack,
        topics,
        app_id,
        workdir,
        clock="event",
        store="rocksdb",
        state_dir=state_dir,
        env={"STATE_RESTORE": restore},
    ).start()


def restart(
    stack: DevStack,
    topics: TopicNames,
    app_id: str,
    workdir: Path,
    state_dir: Path,
    restore: str = "bulk",
) -> tuple[float, float, float]:
    """(seconds to /ready, the worker's recovery seconds, peak RSS MiB) of one start."""
    worker = _start(stack, topics, app_id, workdir, state_dir, restore)
    try:
        ready = worker.wait_ready(timeout=1800)
        # The worker sets the gauge at its first event after the assignment (a clock tick
        # within a second when there is no input left).
        recovery, deadline = 0.0, time.monotonic() + 5
        while not recovery and time.monotonic() < deadline:
            recovery = worker.metrics().get("lifecycle_recovery_seconds", 0.0)
            time.sleep(0.1)
        rss = peak_rss_mb(worker.pid)
    finally:
        worker.stop()
    return ready, recovery, rss


def measure(
    stack: DevStack, customers: int, partitions: int, workdir: Path, faust_restore: bool = True
) -> StateFigures:
    tag = uuid.uuid4().hex[:8]
    topics = bench_topics(f"state-{tag}")
    stack.create_topics(topics.all, partitions)
    mix = EventMix(customers, seed=3)
    start_ms, span_ms = backlog_start(30)
    step = span_ms / customers
    records = [mix.event(c, start_ms + int(c * step), "account_opened") for c in range(customers)]
    asyncio.run(load(stack.bootstrap_servers, topics, records))
    del records
    app_id = f"bench-state-{tag}"
    warm_dir, cold_dir = workdir / f"{tag}-warm", workdir / f"{tag}-cold"
    worker = _start(stack, topics, app_id, workdir, warm_dir)
    try:
        built = measure_consumption(worker, customers, timeout=7200)
        time.sleep(2.0)  # the last state writes follow the last consumed event
    finally:
        worker.stop()
    disk = dir_size_mb(warm_dir)
    changelogs = [f"{app_id}-{t}-changelog" for t in TABLES]
    changelog_records, raw_seconds = asyncio.run(read_all(stack.bootstrap_servers, changelogs))
    warm = restart(stack, topics, app_id, workdir, warm_dir)
    cold = restart(stack, topics, app_id, workdir, cold_dir)
    faust = (0.0, 0.0, 0.0)
    if faust_restore:
        faust_dir = workdir / f"{tag}-cold-faust"
        faust = restart(stack, topics, app_id, workdir, faust_dir, restore="faust")
        shutil.rmtree(faust_dir, ignore_errors=True)
    shutil.rmtree(warm_dir, ignore_errors=True)
    shutil.rmtree(cold_dir, ignore_errors=True)
    return StateFigures(
        customers=customers,
        build_rate=built.rate,
        build_peak_rss_mb=built.peak_rss_mb,
        disk_mb=disk,
        changelog_records=changelog_records,
        warm_ready_s=warm[0],
        warm_recovery_s=warm[1],
        warm_peak_rss_mb=warm[2],
        cold_ready_s=cold[0],
        cold_recovery_s=cold[1],
        cold_peak_rss_mb=cold[2],
        raw_read_rate=changelog_records / raw_seconds if raw_seconds else 0.0,
        faust_ready_s=faust[0],
        faust_recovery_s=faust[1],
    )


def _slope(rows: list[StateFigures], attr: str) -> tuple[float, float]:
    """Least squares a + b * customers over the measured sizes (one size: through zero)."""
    xs = [r.customers for r in rows]
    ys = [float(getattr(r, attr)) for r in rows]
    if len(rows) == 1:
        return 0.0, ys[0] / xs[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - b * mx, b


def report(rows: list[StateFigures]) -> str:
    out = [
        f"{'customers':>10} {'build ev/s':>10} {'build RSS':>10} {'disk':>8} {'changelog':>10} "
        f"{'warm ready':>10} {'warm RSS':>9} {'cold ready':>10} {'cold rec/s':>10} "
        f"{'raw rec/s':>10} {'x raw read':>10} {'gauge':>7} {'gauge rec/s':>11} {'x raw':>6} "
        f"{'cold RSS':>9}"
    ]
    for r in rows:
        out.append(
            f"{r.customers:>10,} {r.build_rate:>10,.0f} {r.build_peak_rss_mb:>6.0f} MiB "
            f"{r.disk_mb:>4.0f} MiB {r.changelog_records:>10,} {r.warm_ready_s:>8.1f} s "
            f"{r.warm_peak_rss_mb:>5.0f} MiB {r.cold_ready_s:>8.1f} s {r.cold_rate:>10,.0f} "
            f"{r.raw_read_rate:>10,.0f} "
            f"{r.cold_rate / r.raw_read_rate if r.raw_read_rate else 0:>10.2f} "
            f"{r.cold_recovery_s:>5.1f} s {r.gauge_rate:>11,.0f} "
            f"{r.gauge_rate / r.raw_read_rate if r.raw_read_rate else 0:>6.2f} "
            f"{r.cold_peak_rss_mb:>5.0f} MiB"
        )
    out.append(
        "warm/cold ready: process start to /ready (imports, group join ~2 s on Tansu, recovery); "
        "cold rec/s: changelog records / (cold - warm ready); raw rec/s: a raw aiokafka read of "
        "the same changelogs in the same run; gauge: the cold worker's "
        "lifecycle_recovery_seconds (assignment to its first event), gauge rec/s: records / gauge"
    )
    for r in rows:
        if not r.faust_ready_s:
            continue
        raw = r.raw_read_rate or 1.0
        out.append(
            f"{r.customers:,} customers, cold recovery (records/s, and x the raw read of "
            f"{r.raw_read_rate:,.0f}): bulk restore {r.cold_rate:,.0f} ({r.cold_rate / raw:.2f}x), "
            f"gauge {r.gauge_rate:,.0f} ({r.gauge_rate / raw:.2f}x); Faust's recovery alone "
            f"{r.faust_rate:,.0f} ({r.faust_rate / raw:.2f}x), gauge {r.faust_gauge_rate:,.0f} "
            f"({r.faust_gauge_rate / raw:.2f}x); cold ready {r.cold_ready_s:.1f} s vs "
            f"{r.faust_ready_s:.1f} s"
        )
        out.append(
            f"{r.customers:,} customers, cold - warm gauge ({r.warm_recovery_s:.1f} s): bulk "
            f"restore {r.net_gauge_rate:,.0f} records/s ({r.net_gauge_rate / raw:.2f}x the raw "
            f"read), Faust's recovery alone {r.net_faust_gauge_rate:,.0f} "
            f"({r.net_faust_gauge_rate / raw:.2f}x)"
        )
    if rows[-1].customers < TARGET:
        est = {}
        for attr in ("build_peak_rss_mb", "disk_mb", "warm_ready_s", "cold_ready_s"):
            a, b = _slope(rows, attr)
            est[attr] = a + b * TARGET
        build_hours = TARGET / rows[-1].build_rate / 3600 if rows[-1].build_rate else 0
        out.append(
            f"extrapolated to {TARGET:,} customers (linear in customers, from the sizes above; "
            f"not measured): build RSS ~{est['build_peak_rss_mb']:.0f} MiB, disk "
            f"~{est['disk_mb']:.0f} MiB, warm ready ~{est['warm_ready_s']:.1f} s, cold ready "
            f"~{est['cold_ready_s']:.0f} s; building it at this rate takes "
            f"~{build_hours:.2f} h"
        )
    return "\n".join(out)


def _figures(row: StateFigures) -> dict[str, float]:
    return asdict(row) | {
        "cold_rate": row.cold_rate,
        "gauge_rate": row.gauge_rate,
        "faust_rate": row.faust_rate,
        "faust_gauge_rate": row.faust_gauge_rate,
        "net_gauge_rate": row.net_gauge_rate,
        "net_faust_gauge_rate": row.net_faust_gauge_rate,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    quick = os.environ.get("BENCH_QUICK") == "1"
    parser.add_argument("--quick", action="store_true", default=quick)
    parser.add_argument(
        "--customers",
        default=None,
        help="comma-separated sizes, each measured from scratch (default 200000)",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--no-faust-restore",
        dest="faust_restore",
        action="store_false",
        help="leave out the baseline cold start with Faust's recovery alone (STATE_RESTORE=faust)",
    )
    args = parser.parse_args(argv)
    if args.customers is None:
        args.customers = os.environ.get(
            "BENCH_STATE_CUSTOMERS", "20000" if args.quick else "200000"
        )
    args.sizes = [int(x.replace("_", "")) for x in str(args.customers).split(",") if x]
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.monotonic()
    rows: list[StateFigures] = []
    with (
        tempfile.TemporaryDirectory(prefix="lt-state-") as tmp,
        DevStack(Path(tmp) / "stack") as stack,
    ):
        for size in args.sizes:
            row = measure(stack, size, args.partitions, Path(tmp), args.faust_restore)
            rows.append(row)
            print(orjson.dumps(_figures(row)).decode(), flush=True)
    print()
    print(f"RocksDB state (one account_opened per customer, {args.partitions} partitions):")
    print(report(rows))
    print(f"\nbench took {time.monotonic() - started:.0f} s")
    out = args.json or HERE / "results" / f"state-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps([_figures(r) for r in rows], option=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
