"""The contact ledger on Redis Cluster and Redis Sentinel, through the same URL setting.

Given a real Redis Cluster of local redis-server processes (three masters, one replica each,
cluster-node-timeout 2 s) and a stream of decisions for customers spread over every master,
when one master is killed with SIGKILL mid-stream, then the caller (the worker's LedgerGate,
failing closed) waits out the failover, the ledger resumes by itself, and with ``WAIT 1`` no
decision is lost or doubled: every decision id keeps its first outcome when decided again, the
ledger holds exactly the contacts the caller published, and no cap is exceeded.

The same test measures what ``WAIT 1`` costs on the healthy cluster and prints it. A second
test does the same failover dance with Redis Sentinel (one master, one replica, one sentinel).
A plain single instance is what the rest of the ledger tests run on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from streams.config import default_policy
from streams.core.decisions import Candidate, Decision
from streams.core.timeutil import MS_PER_DAY
from streams.ledger import ContactLedger, LedgerUnavailable, customer_keys
from streams.ledger.gate import LedgerGate
from streams.ledger.keys import capacity_share, slot_of
from streams.ops.metrics import Metrics
from streams.tools.devstack import RedisServer, _Process, _wait_for_port, free_port

T0 = 1_772_357_400_000  # 2026-03-01T09:30:00Z
HOUR = MS_PER_DAY // 24
NO_HOLDOUT = dataclasses.replace(default_policy(), holdout_rate=0.0)
CHANNELS = ("email", "push", "sms", "email", "phone")
NODE_TIMEOUT_MS = 2_000


def _admin(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


def _wait(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll until check() holds; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except (redis.exceptions.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


class LocalCluster:
    """Three masters with one replica each, as local redis-server processes."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.servers: list[RedisServer] = []
        for i in range(masters * 2):
            workdir = root / f"node{i}"
            workdir.mkdir(parents=True)
            self.servers.append(RedisServer(workdir))

        self.bus_ports: dict[int, int] = {}

    @staticmethod
    def args(bus_port: int) -> tuple[str, ...]:
        # An explicit bus port: the default (port + 10000) may be taken, or above 65535.
        return (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-port",
            str(bus_port),
        )

    def start_node(self, server: RedisServer, port: int = 0) -> None:
        port = port or free_port()
        bus = self.bus_ports.setdefault(port, free_port())
        server.start(port=port, extra_args=self.args(bus))

    def start(self) -> None:
        for server in self.servers:
            self.start_node(server)
        subprocess.run(  # noqa: S603 - fixed argv, local ports we chose
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{s.port}" for s in self.servers),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _wait("cluster formed", self.healthy, 30)

    def nodes(self, via: int | None = None) -> list[dict[str, Any]]:
        """CLUSTER NODES as seen by one live node."""
        ports = [via] if via else [s.port for s in self.servers if s.running]
        for port in ports:
            try:
                text = _admin(port).execute_command("CLUSTER", "NODES")
            except (redis.exceptions.RedisError, OSError):
                continue
            rows = []
            for line in str(text).splitlines():
                fields = line.split()
                rows.append(
                    {
                        "id": fields[0],
                        "port": int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                        "flags": fields[2].split(","),
                        "master_id": fields[3],
                        "slots": fields[8:],
                    }
                )
            return rows
        raise AssertionError("no cluster node answers")

    def healthy(self) -> bool:
        """Every live node says ok, and every live replica is in sync with its master."""
        for server in self.servers:
            if not server.running:
                continue
            client = _admin(server.port)
            if "cluster_state:ok" not in str(client.execute_command("CLUSTER", "INFO")):
                return False
            info = client.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        masters = [n for n in self.nodes() if "master" in n["flags"] and n["slots"]]
        return len(masters) == len(self.servers) // 2

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def master_port_of(self, slot: int) -> int:
        port = self.serving(slot)
        if port is None:
            raise AssertionError(f"no master serves slot {slot}")
        return port

    def serving(self, slot: int) -> int | None:
        """The port of the master serving the slot, None while nobody does."""
        for node in self.nodes():
            if "master" not in node["flags"] or "fail" in node["flags"]:
                continue
            for spec in node["slots"]:
                if spec.startswith("["):
                    continue
                low, _, high = spec.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(node["port"])
        return None

    def stop(self) -> None:
        for server in self.servers:
            server.stop(kill=True)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:3])


def _cand(customer: str, round_: int) -> Candidate:
    return Candidate(
        customer,
        f"t{round_ % 4}",
        str(round_),
        "act",
        CHANNELS[round_ % len(CHANNELS)],
        "marketing",
        50,
        ("e",),
        T0 + round_ * 12 * HOUR,
    )


def _now(round_: int) -> int:
    return T0 + round_ * 12 * HOUR


async def _fast_sleep(delay: float) -> None:
    # The gate's own backoff goes up to 5 s; here a short, fixed wait measures the failover.
    await asyncio.sleep(min(delay, 0.05))


@dataclasses.dataclass
class Stream:
    """Customers deciding concurrently (each customer's decisions in order, as in a partition),
    through the worker's fail-closed gate. Records what the caller saw."""

    gate: LedgerGate
    customers: list[str]
    rounds: int
    seen: dict[str, Decision] = dataclasses.field(default_factory=dict)
    started_at: dict[str, float] = dataclasses.field(default_factory=dict)
    done_at: dict[str, float] = dataclasses.field(default_factory=dict)
    progress: int = 0
    first_round: int = 0

    async def run(self, on_progress: Callable[[int], Awaitable[None]] | None = None) -> None:
        async def customer(cid: str) -> None:
            for r in range(self.first_round, self.first_round + self.rounds):
                self.started_at[_cand(cid, r).decision_id] = time.monotonic()
                (decision,) = await self.gate.decide([_cand(cid, r)], _now(r))
                self.seen[decision.candidate.decision_id] = decision
                self.done_at[decision.candidate.decision_id] = time.monotonic()
                self.progress += 1
                if on_progress is not None:
                    await on_progress(self.progress)

        await asyncio.gather(*(customer(c) for c in self.customers))


async def _check_nothing_lost_or_doubled(ledger: ContactLedger, stream: Stream) -> None:
    """Every id decided again keeps its first outcome; the ledger holds exactly the contacts the
    caller saw; the published contacts never exceed the global caps."""
    for cid in stream.customers:
        for r in range(stream.first_round, stream.first_round + stream.rounds):
            cand = _cand(cid, r)
            first = stream.seen[cand.decision_id]
            (again,) = await ledger.decide([cand], _now(r) + 1, None)
            assert (again.outcome, again.reasons, again.channel, again.decided_at_ms) == (
                first.outcome,
                first.reasons,
                first.channel,
                first.decided_at_ms,
            ), (cand.decision_id, first, again)
        _, idx, mk, *_ = ledger.keys(cid)
        recorded = {m.decode().split("|", 1)[1] for m in await ledger.client.zrange(mk, 0, -1)}
        published = {
            d.candidate.decision_id
            for d in stream.seen.values()
            if d.candidate.customer_id == cid and d.outcome == "contact"
        }
        assert recorded == published, cid
        assert await ledger.client.zcard(idx) == stream.rounds, cid
        times = sorted(
            d.decided_at_ms
            for d in stream.seen.values()
            if d.candidate.customer_id == cid and d.outcome == "contact"
        )
        for t in times:
            assert sum(1 for u in times if t - 7 * MS_PER_DAY < u <= t) <= 2, cid
            assert sum(1 for u in times if t - 30 * MS_PER_DAY < u <= t) <= 6, cid


async def _measure(ledger: ContactLedger, calls: int, parallel: int) -> dict[str, float]:
    latencies: list[float] = []

    async def one_customer(cid: str) -> None:
        for r in range(calls // parallel):
            started = time.perf_counter()
            await ledger.decide([_cand(cid, r)], _now(r), None)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one_customer(f"perf-{uuid.uuid4().hex[:8]}") for _ in range(parallel)))
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {"rate": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000}


def _resumed(
    stream: Stream, customers: list[str], admin: redis.Redis, slot: int, killed: dict[str, float]
) -> float:
    """Seconds from the kill until the first decision on the killed master's slots that was
    asked for after the kill got its answer (answers already on the wire do not count)."""
    ids = {
        _cand(c, r).decision_id
        for c in customers
        if int(admin.execute_command("CLUSTER KEYSLOT", f"{{{c}}}")) == slot
        for r in range(stream.first_round, stream.first_round + stream.rounds)
    }
    waits = [
        stream.done_at[i] - killed["at"]
        for i in ids
        if i in stream.done_at and stream.started_at[i] > killed["at"]
    ]
    assert waits, "no decision on the killed master's slots was asked for after the kill"
    return min(waits)


def _customers_on_every_master(cluster: LocalCluster, count: int) -> list[str]:
    client = _admin(cluster.servers[0].port)
    by_master: dict[int, list[str]] = {}
    i = 0
    while min((len(v) for v in by_master.values()), default=0) < count or len(by_master) < 3:
        cid = f"c{i}-{uuid.uuid4().hex[:6]}"
        slot = int(client.execute_command("CLUSTER KEYSLOT", f"{{{cid}}}"))
        by_master.setdefault(cluster.master_port_of(slot), []).append(cid)
        i += 1
    return [c for v in by_master.values() for c in v[:count]]


def test_cluster_failover_loses_and_doubles_nothing_with_wait_1(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        customers = _customers_on_every_master(cluster, 4)
        admin = _admin(cluster.servers[0].port)
        victim_slot = int(admin.execute_command("CLUSTER KEYSLOT", f"{{{customers[0]}}}"))
        victim_port = cluster.master_port_of(victim_slot)
        victim = cluster.server_on(victim_port)
        figures: dict[str, Any] = {}

        async def main() -> None:
            ns = f"ns-{uuid.uuid4().hex[:8]}"
            # What WAIT 1 costs, on the healthy cluster: same calls with and without it.
            for wait in (0, 1):
                async with ContactLedger(cluster.url, NO_HOLDOUT, ns, wait_replicas=wait) as lg:
                    await lg.ping()
                    await _measure(lg, 300, 4)  # warm-up: connections to every master
                    figures[f"seq_wait{wait}"] = await _measure(lg, 1500, 1)
                    figures[f"par_wait{wait}"] = await _measure(lg, 3000, 16)

            async with ContactLedger(
                cluster.url, NO_HOLDOUT, ns, wait_replicas=1, wait_timeout_ms=200, timeout=1.0
            ) as ledger:
                gate = LedgerGate(ledger, Metrics(), sleep=_fast_sleep)
                stream = Stream(gate, customers, rounds=60)
                killed: dict[str, float] = {}

                async def kill_midstream(progress: int) -> None:
                    if progress == len(customers) * 20 and not killed:
                        killed["at"] = time.monotonic()
                        victim.stop(kill=True)  # SIGKILL, mid-stream

                async def bring_back() -> None:
                    while "at" not in killed:
                        await asyncio.sleep(0.01)
                    # The replica takes over once the others agree the master failed ...
                    figures["promoted_s"] = await asyncio.to_thread(
                        _wait,
                        "replica promoted",
                        lambda: cluster.serving(victim_slot) not in (None, victim_port),
                        30,
                    )
                    # ... and the killed node comes back empty (as an orchestrator restarts
                    # it) and rejoins as the new master's replica, so that WAIT 1 is met again.
                    await asyncio.to_thread(cluster.start_node, victim, victim_port)
                    await asyncio.to_thread(_wait, "cluster healthy again", cluster.healthy, 30)
                    figures["healthy_s"] = time.monotonic() - killed["at"]

                await asyncio.gather(stream.run(kill_midstream), bring_back())
                figures["resumed_s"] = _resumed(stream, customers, admin, victim_slot, killed)
                assert len(stream.seen) == len(customers) * stream.rounds
                await _check_nothing_lost_or_doubled(ledger, stream)

                # Without WAIT: kill another master (one that has its replica) and measure how
                # soon the ledger resumes; count acknowledged decisions the failover dropped
                # (the window docs-reliability.md describes; usually 0 on one host).
                ledger.wait_replicas = 0
                second = next(
                    int(admin.execute_command("CLUSTER KEYSLOT", f"{{{c}}}"))
                    for c in customers
                    if cluster.master_port_of(
                        int(admin.execute_command("CLUSTER KEYSLOT", f"{{{c}}}"))
                    )
                    != victim_port
                )
                second_port = cluster.master_port_of(second)
                again = Stream(gate, customers, rounds=30, first_round=60)
                killed.clear()

                async def kill_again(progress: int) -> None:
                    if progress == len(customers) * 10 and not killed:
                        killed["at"] = time.monotonic()
                        cluster.server_on(second_port).stop(kill=True)

                await again.run(kill_again)
                figures["resumed_nowait_s"] = _resumed(again, customers, admin, second, killed)
                assert len(again.seen) == len(customers) * again.rounds
                lost = 0
                for first in again.seen.values():
                    (redo,) = await ledger.decide([first.candidate], first.decided_at_ms, None)
                    lost += (redo.outcome, redo.decided_at_ms) != (
                        first.outcome,
                        first.decided_at_ms,
                    )
                figures["lost_nowait"] = lost

        asyncio.run(main())
    finally:
        cluster.stop()
    s0, s1, p0, p1 = (figures[k] for k in ("seq_wait0", "seq_wait1", "par_wait0", "par_wait1"))
    print(
        "\nredis cluster (3 masters x 1 replica, local): decisions/s, p50/p99 ms\n"
        f"  sequential   WAIT 0: {s0['rate']:.0f}/s {s0['p50']:.2f}/{s0['p99']:.2f}   "
        f"WAIT 1: {s1['rate']:.0f}/s {s1['p50']:.2f}/{s1['p99']:.2f}   "
        f"({s1['rate'] / s0['rate']:.2f}x)\n"
        f"  16 parallel  WAIT 0: {p0['rate']:.0f}/s {p0['p50']:.2f}/{p0['p99']:.2f}   "
        f"WAIT 1: {p1['rate']:.0f}/s {p1['p50']:.2f}/{p1['p99']:.2f}   "
        f"({p1['rate'] / p0['rate']:.2f}x)\n"
        f"  failover: replica promoted {figures['promoted_s']:.1f} s after SIGKILL; "
        f"killed node back in sync {figures['healthy_s']:.1f} s; decisions on its slots "
        f"resumed {figures['resumed_s']:.1f} s after SIGKILL (WAIT 1 waits for a replica)\n"
        f"  failover without WAIT: decisions on the killed master's slots resumed "
        f"{figures['resumed_nowait_s']:.1f} s after SIGKILL; acknowledged decisions lost: "
        f"{figures['lost_nowait']}"
    )


class SentinelProcess(_Process):
    """redis-server in sentinel mode: the config file must come first on its command line."""

    def start(self, conf: Path) -> None:
        self.port = free_port()
        self.proc = self._spawn(["redis-server", str(conf), "--sentinel", "--port", str(self.port)])
        _wait_for_port(self.port, self.proc, "redis sentinel", 20.0)


class LocalSentinel:
    """One master, one replica and one sentinel, as local redis-server processes."""

    def __init__(self, root: Path) -> None:
        for name in ("master", "replica", "sentinel"):
            (root / name).mkdir()
        self.root = root
        self.master = RedisServer(root / "master")
        self.replica = RedisServer(root / "replica")
        self.sentinel = SentinelProcess("sentinel", root / "sentinel")

    def start(self) -> None:
        self.master.start(port=free_port())
        self.replica.start(
            port=free_port(), extra_args=("--replicaof", "127.0.0.1", str(self.master.port))
        )
        _wait(
            "replica in sync",
            lambda: _admin(self.replica.port).info("replication")["master_link_status"] == "up",
            20,
        )
        conf = self.root / "sentinel" / "sentinel.conf"
        conf.write_text(
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 10000\n"
        )
        self.sentinel.start(conf)  # it rewrites conf with what it learns

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop(kill=True)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/mymaster"


def test_sentinel_failover_through_the_same_url_setting(tmp_path: Path) -> None:
    group = LocalSentinel(tmp_path)
    try:
        group.start()
        figures: dict[str, float] = {}

        async def main() -> None:
            ns = f"ns-{uuid.uuid4().hex[:8]}"
            async with ContactLedger(
                group.url, NO_HOLDOUT, ns, wait_replicas=1, wait_timeout_ms=500, timeout=1.0
            ) as ledger:
                await ledger.ping()
                gate = LedgerGate(ledger, Metrics(), sleep=_fast_sleep)
                customers = [f"s-{uuid.uuid4().hex[:8]}" for _ in range(4)]
                first = Stream(gate, customers, rounds=10)
                await first.run()
                # SIGKILL the master: the sentinel promotes the replica, and the client asks the
                # sentinel where the master is now. Nothing acknowledged was lost (WAIT 1).
                killed_at = time.monotonic()
                group.master.stop(kill=True)
                ledger.wait_replicas = 0  # the promoted replica has no replica of its own
                (decision,) = await gate.decide([_cand("s-new", 10)], _now(10))
                figures["resumed_s"] = time.monotonic() - killed_at
                assert decision.outcome == "contact"
                await _check_nothing_lost_or_doubled(ledger, first)
                role = await ledger.client.execute_command("ROLE")
                assert role[0] in (b"master", "master")

        asyncio.run(main())
    finally:
        group.stop()
    print(f"\nredis sentinel: decisions resumed {figures['resumed_s']:.1f} s after SIGKILL")


def test_wrong_kind_of_url_is_a_clear_error() -> None:
    from streams.core.errors import ConfigError

    with pytest.raises(ConfigError, match="service_name"):
        ContactLedger("redis+sentinel://127.0.0.1:26379", NO_HOLDOUT)
    with pytest.raises(ConfigError, match="only database 0"):
        ContactLedger("redis+cluster://127.0.0.1:7000/3", NO_HOLDOUT)
    with pytest.raises(ConfigError, match=r"\*\*\*") as err:
        ContactLedger("memcached://u:hunter2@127.0.0.1:1", NO_HOLDOUT)
    assert "hunter2" not in str(err.value)


def test_a_cluster_node_behind_a_plain_url_says_so(tmp_path: Path) -> None:
    """A redis:// URL that points at one node of a cluster gets MOVED for the customers of the
    other nodes: the ledger says to use redis+cluster:// instead of failing obscurely."""
    servers = [RedisServer(tmp_path / "a"), RedisServer(tmp_path / "b")]
    try:
        buses = [free_port(), free_port()]
        for server, bus in zip(servers, buses, strict=True):
            server.workdir.mkdir()
            server.start(port=free_port(), extra_args=LocalCluster.args(bus))
        a, b = (_admin(s.port) for s in servers)
        a.execute_command("CLUSTER ADDSLOTSRANGE", 0, 8191)
        b.execute_command("CLUSTER ADDSLOTSRANGE", 8192, 16383)
        a.execute_command("CLUSTER MEET", "127.0.0.1", servers[1].port, buses[1])
        _wait(
            "two-node cluster",
            lambda: all(
                "cluster_state:ok" in str(c.execute_command("CLUSTER", "INFO")) for c in (a, b)
            ),
            20,
        )
        customer = next(
            c
            for c in (f"m{i}" for i in range(1000))
            if int(a.execute_command("CLUSTER KEYSLOT", f"{{{c}}}")) > 8191
        )

        async def main() -> None:
            async with ContactLedger(servers[0].url, NO_HOLDOUT, "ns", timeout=1.0) as ledger:
                with pytest.raises(LedgerUnavailable, match=r"redis\+cluster://"):
                    await ledger.decide([_cand(customer, 0)], _now(0), None)

        asyncio.run(main())
    finally:
        for server in servers:
            server.stop(kill=True)


def test_customers_whose_ids_hold_braces_keep_to_their_own_slot(tmp_path: Path) -> None:
    """On a real cluster: customer ``V`` (business unit ``u}:dec``) and customer ``V}:bu:u``
    shared a slot and a key under the old layout (WRONGTYPE); ids with braces, colons and
    spaces now each get one slot for all their keys (a key outside it would be refused with
    CROSSSLOT) and a ledger of their own."""
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        tag = uuid.uuid4().hex[:6]
        people = {
            f"V{tag}": "u}:dec",
            f"V{tag}}}:bu:u": "cards",
            f"{{{tag}}} x:y": "a b}{",
            f"{tag}}}": "}",
        }
        admin = _admin(cluster.servers[0].port)

        async def main() -> None:
            async with ContactLedger(cluster.url, NO_HOLDOUT, f"ns{tag}") as ledger:
                for customer, unit in people.items():
                    (d,) = await ledger.decide([_cand(customer, 0)], _now(0), None, unit)
                    assert (d.outcome, d.details["global_7d"]["count"]) == ("contact", 0)
                    await ledger.record_consent(customer, "sms", "opted_out", _now(0) + 1)
                for customer, unit in people.items():
                    keys = ledger.keys(customer, unit)
                    slots = {int(admin.execute_command("CLUSTER KEYSLOT", k)) for k in keys}
                    assert len(slots) == 1, (customer, keys)
                    shown = await ledger.show(customer, _now(0) + 2)
                    assert len(shown["history"]) == 1, customer
                    assert shown["opted_out"] == ["sms"], customer

        asyncio.run(main())
    finally:
        cluster.stop()


def _in_one_slot(prefix: str, n: int, namespace: str) -> list[str]:
    """``n`` customer ids whose keys share one cluster slot."""
    first = f"{prefix}-0"
    slot = slot_of(customer_keys(namespace, first)[0])
    found, i = [first], 1
    while len(found) < n:
        customer = f"{prefix}-{i}"
        if slot_of(customer_keys(namespace, customer)[0]) == slot:
            found.append(customer)
        i += 1
    return found


def test_capacity_on_a_cluster_is_split_by_slot_and_never_exceeded(tmp_path: Path) -> None:
    """Capacity counters live in each customer's slot (a key outside it would be refused with
    CROSSSLOT): with 2 x 16384 a day every slot's share is 2, so of three customers of one slot
    two are contacted, also when two clients race; a small limit gives each slot its computed
    share, and the day's total never exceeds it."""
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        tag = uuid.uuid4().hex[:6]
        namespace = f"ns{tag}"
        slots = [_in_one_slot(f"{tag}{k}", 3, namespace) for k in "ab"]
        even = dataclasses.replace(NO_HOLDOUT, capacity={"act": 2 * 16384})

        async def main() -> None:
            async with (
                ContactLedger(cluster.url, even, namespace) as one,
                ContactLedger(cluster.url, even, namespace) as two,
            ):
                calls = [
                    ledger.decide([_cand(customer, 0)], _now(0))
                    for people in slots
                    for customer, ledger in zip(people, (one, two, one), strict=True)
                ]
                got = [d for (d,) in await asyncio.gather(*calls)]
            for i in range(2):
                mine = got[3 * i : 3 * i + 3]
                assert sorted(d.outcome for d in mine) == ["contact", "contact", "suppressed"]
                assert [d.reasons for d in mine if d.outcome == "suppressed"] == [("capacity",)]
                assert all(d.details["capacity"]["cap"] == 2 for d in mine)

            small = dataclasses.replace(NO_HOLDOUT, capacity={"act": 5})
            async with ContactLedger(cluster.url, small, f"{namespace}s") as ledger:
                day = small.capacity_day(_now(1))
                for people in slots:
                    share = capacity_share(5, slot_of(ledger.keys(people[0])[0]), "act", day)
                    got = [(await ledger.decide([_cand(c, 1)], _now(1)))[0] for c in people]
                    assert sum(d.outcome == "contact" for d in got) == min(3, share)
                    assert all(d.details["capacity"]["cap"] == share for d in got)

        asyncio.run(main())
    finally:
        cluster.stop()
