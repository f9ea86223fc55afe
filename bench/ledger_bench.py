"""Contact-ledger decisions per second and latency, against a plain Redis PING in the same run.

Starts its own redis-server (streams.tools.devstack.RedisServer) in a temporary directory on
loopback, then measures, on one connection each:

- sequential: one call at a time (latency p50/p99; PING is the floor of any round trip);
- concurrent: N tasks sharing a pool (throughput when many customers are decided at once).

Decisions go to a fixed pool of customers, so each sees a growing history (caps bite, most
decisions after the first few are suppressed) like a busy stream would. Prints ratios
ledger / PING, and Redis's own time per decision (``INFO commandstats``: the script's time per
EVALSHA, statistics reset before each measured phase), which bounds the decisions one Redis core
can make whatever the number of workers; run:
python bench/ledger_bench.py [--n 20000] [--concurrency 32].
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from streams.config import default_policy
from streams.core.decisions import Candidate
from streams.core.timeutil import MS_PER_DAY
from streams.ledger import ContactLedger
from streams.tools.devstack import RedisServer

T0 = 1_772_357_400_000
TRIGGERS = ("savings_drop_to_checking", "renewal_reminder", "never_activated", "replacement_due")
CHANNELS = ("email", "push", "sms")


def candidate(i: int, customers: int) -> Candidate:
    return Candidate(
        customer_id=f"bench-{i % customers}",
        trigger=TRIGGERS[i % len(TRIGGERS)],
        instance=str(i),
        action="offer",
        channel=CHANNELS[i % len(CHANNELS)],
        category="marketing",
        priority=50,
        evidence=("e",),
        triggered_at_ms=T0,
    )


def now_of(i: int) -> int:
    return T0 + i * (MS_PER_DAY // 100)  # the clock moves: windows slide, history is pruned


async def sequential(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - start)
    return latencies


async def concurrent(n: int, tasks: int, call: Callable[[int], Awaitable[object]]) -> float:
    counter = iter(range(n))

    async def loop() -> None:
        for i in counter:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return n / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def server_usec(client: aioredis.Redis, command: str) -> tuple[float, int]:
    """Redis's time per call of ``command`` since the last CONFIG RESETSTAT, and the calls."""
    row = (await client.info("commandstats")).get(f"cmdstat_{command}", {})
    return float(row.get("usec_per_call", 0.0)), int(row.get("calls", 0))


async def measure(url: str, n: int, tasks: int, customers: int) -> None:
    client = aioredis.from_url(url, max_connections=tasks + 4)
    ledger = ContactLedger(client, default_policy(), namespace="bench")
    await ledger.ping()

    async def ping(_: int) -> object:
        return await client.ping()

    async def decide(i: int) -> object:
        return await ledger.decide_one(candidate(i, customers), now_of(i))

    async def decide_again(i: int) -> object:
        return await ledger.decide_one(candidate(i + n, customers), now_of(i + n))

    # Warm up both paths (connections, script cache), then measure.
    await sequential(500, ping)
    await sequential(500, lambda i: ledger.decide_one(candidate(10**9 + i, 50), T0))
    await client.config_resetstat()
    ping_lat = await sequential(n, ping)
    ping_usec, _ = await server_usec(client, "ping")
    await client.config_resetstat()
    dec_lat = await sequential(n, decide)
    seq_usec, seq_calls = await server_usec(client, "evalsha")
    ping_rate = await concurrent(n, tasks, ping)
    await client.config_resetstat()
    dec_rate = await concurrent(n, tasks, decide_again)
    conc_usec, conc_calls = await server_usec(client, "evalsha")
    # Commands a script runs are counted too: what each decision spent in which command.
    inner = {
        name.removeprefix("cmdstat_"): row
        for name, row in (await client.info("commandstats")).items()
        if name not in ("cmdstat_evalsha", "cmdstat_config|resetstat", "cmdstat_info")
    }
    info = await client.info("memory")
    await client.aclose()

    ms = 1000.0
    seq_ping = n / sum(ping_lat)
    seq_dec = n / sum(dec_lat)
    print(f"redis loopback, {n} calls each, {customers} customers, concurrency {tasks}")
    print(f"{'':24}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        ("PING sequential", seq_ping, ping_lat),
        ("decide sequential", seq_dec, dec_lat),
    ]
    for name, rate, lat in rows:
        print(f"{name:24}{rate:>10.0f}{pct(lat, 50) * ms:>10.3f}{pct(lat, 99) * ms:>10.3f}")
    print(f"{'PING concurrent':24}{ping_rate:>10.0f}")
    print(f"{'decide concurrent':24}{dec_rate:>10.0f}")
    print(
        f"ratio decide/PING: sequential throughput {seq_dec / seq_ping:.2f}, "
        f"p50 latency {pct(dec_lat, 50) / pct(ping_lat, 50):.2f}x, "
        f"p99 latency {pct(dec_lat, 99) / pct(ping_lat, 99):.2f}x, "
        f"concurrent throughput {dec_rate / ping_rate:.2f}"
    )
    print(f"redis used_memory after the run: {info['used_memory_human']}")
    print(f"server time per PING: {ping_usec:.1f} us")
    for name, usec, calls in (
        ("sequential", seq_usec, seq_calls),
        ("concurrent", conc_usec, conc_calls),
    ):
        per_core = 1e6 / usec if usec else float("inf")
        print(
            f"server time per decision ({name}, {calls} EVALSHA): {usec:.1f} us "
            f"(one Redis core: at most {per_core:,.0f} decisions/s)"
        )
    if conc_calls:
        in_commands = sum(row["usec"] for row in inner.values()) / conc_calls
        print(
            f"  of which in the {sum(row['calls'] for row in inner.values()) / conc_calls:.1f} "
            f"commands the script ran (concurrent): {in_commands:.1f} us; the rest "
            f"({conc_usec - in_commands:.1f} us) is the script's own Lua and the calls' overhead"
        )
        for command, row in sorted(inner.items(), key=lambda item: -item[1]["usec"]):
            print(
                f"  {command.upper():18}{row['calls'] / conc_calls:6.2f} per decision"
                f"{row['usec'] / conc_calls:8.2f} us{row['usec_per_call']:8.2f} us per call"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent tasks")
    parser.add_argument("--customers", type=int, default=2_000, help="distinct customers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            asyncio.run(measure(server.url, args.n, args.concurrency, args.customers))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
