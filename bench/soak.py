"""Soak: stream events through one worker for a while and watch it for leaks and lag.

Starts the dev stack and a real worker (wall clock, RocksDB store), produces a steady stream of
contract-valid events of many customers stamped with the wall clock, and every minute prints
the worker's throughput, consumer lag, RSS and open file descriptors; at the end, the growth of
RSS after warm-up (the first minute). Not part of ``make bench`` (it takes minutes): ``make
soak`` or ``python bench/soak.py --minutes 10 --rate 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import EventMix, Worker, bench_topics  # noqa: E402

from streams.core.timeutil import wall_ms  # noqa: E402
from streams.tools.devstack import DevStack  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def stream(
    bootstrap: str, topics: object, rate: float, stop: threading.Event, customers: int
) -> None:
    """Produce ``rate`` events per second, stamped now, until ``stop`` is set."""
    mix = EventMix(customers, seed=11)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        tick = 0.1
        per_tick = rate * tick
        owed = 0.0
        next_at = time.monotonic()
        while not stop.is_set():
            owed += per_tick
            now = wall_ms()
            while owed >= 1:
                kind, key, value = mix.event(mix.rng.randrange(customers), now)
                topic = getattr(topics, "account_events" if kind == "account" else "usage_events")
                await producer.send(topic, value, key=key)
                owed -= 1
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="events per second produced (default 1000)"
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument(
        "--interval", type=float, default=60.0, help="seconds between report lines (default 60)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lifecycle-soak-"))
    tag = uuid.uuid4().hex[:8]
    topics = bench_topics(f"soak-{tag}")
    with DevStack(work / "stack") as stack:
        stack.create_topics(topics.all, 8)
        worker = Worker(stack, topics, f"soak-{tag}", work, clock="wall", store="rocksdb")
        worker.start()
        worker.wait_ready()
        pid = worker.pid
        stop = threading.Event()
        producer = threading.Thread(
            target=asyncio.run,
            args=(stream(stack.bootstrap_servers, topics, args.rate, stop, args.customers),),
            daemon=True,
        )
        producer.start()
        print(
            f"soak: {args.minutes:g} min at {args.rate:g} events/s produced, "
            f"{args.customers} customers, worker pid {pid}",
            flush=True,
        )
        print(
            f"{'minute':>6} {'events/s':>9} {'lag':>8} {'RSS MiB':>8} {'fds':>5} {'decisions':>9}",
            flush=True,
        )
        started = time.monotonic()
        last_t, last_events = started, 0.0
        rows: list[tuple[float, float]] = []
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.interval)
                m = worker.metrics()
                events = m.get("lifecycle_events_consumed_total", 0.0) + m.get(
                    "lifecycle_dead_letters_total", 0.0
                )
                now = time.monotonic()
                rate = (events - last_events) / (now - last_t)
                last_t, last_events = now, events
                rss = rss_mb(pid)
                minute = (now - started) / 60
                rows.append((minute, rss))
                print(
                    f"{minute:6.1f} {rate:9.0f} {m.get('lifecycle_consumer_lag_records', 0):8.0f} "
                    f"{rss:8.1f} {open_fds(pid):5d} "
                    f"{m.get('lifecycle_decisions_total', 0):9.0f}",
                    flush=True,
                )
                if not worker.alive():
                    print("soak: the worker died:\n" + worker.log_tail(), flush=True)
                    return 1
        finally:
            stop.set()
            producer.join(30)
            worker.stop()
        if len(rows) >= 2:
            warm = rows[0][1]
            growth = rows[-1][1] - warm
            span = rows[-1][0] - rows[0][0]
            print(
                f"RSS after warm-up: {warm:.1f} MiB -> {rows[-1][1]:.1f} MiB "
                f"({growth:+.1f} MiB over {span:.1f} min, {growth / span:+.2f} MiB/min)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
