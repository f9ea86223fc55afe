"""``lifecycle-triggers backtest``: historical events through the triggers and the policy.

Replays a JSON-lines file of contract events, or a range of the input topics, through the same
processor the worker runs (pure core, event clock, the Redis contact ledger) in this process,
and reports decision volumes per trigger, cap hits by reason and trigger conflicts: the way to
try a new threshold or cap before it goes live.

Isolation: the ledger lives under its own namespace (``bt-<random>`` unless given; the
production namespace is refused), whose keys are deleted at the end unless kept, so production
contact history is neither read nor changed; decisions are counted here, never published, and
topics are only read (no consumer group, no commits).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
import redis.asyncio as aioredis

from streams.config import policy_of
from streams.core.adapter import build_core
from streams.core.clock import Clock
from streams.core.decisions import NOBODY, Candidate, Decision, Recipient
from streams.core.errors import ConfigError, InvalidEvent
from streams.core.events import Event
from streams.core.ingest import validate_payload
from streams.core.timeutil import format_ms, parse_rfc3339_ms
from streams.kafka.processor import Processor, Stores
from streams.kafka.topics import TopicNames
from streams.ledger import ContactLedger, LedgerUnavailable
from streams.ledger.gate import LedgerGate
from streams.ops.metrics import Metrics
from streams.tools.simulator import ACCOUNT_TYPES, partition_for

log = logging.getLogger(__name__)

PRODUCTION_NAMESPACE = "lt"


@dataclass
class BacktestReport:
    """What a back-test found: volumes, cap hits, conflicts, and what it read."""

    namespace: str
    events: int = 0
    invalid: int = 0
    customers: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    elapsed_seconds: float = 0.0
    decisions: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    reasons: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # A conflict: one decide call with several candidates of one customer at one moment.
    conflicts: int = 0
    conflict_sets: collections.Counter[tuple[str, ...]] = field(default_factory=collections.Counter)
    conflict_outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    invalid_examples: list[str] = field(default_factory=list)

    def per_trigger(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = collections.defaultdict(
            lambda: {"contact": 0, "suppressed": 0, "holdout": 0}
        )
        for (trigger, outcome), n in sorted(self.decisions.items()):
            out[trigger][outcome] += n
        return dict(out)

    def to_json(self) -> dict[str, Any]:
        reasons: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for (trigger, reason), n in sorted(self.reasons.items()):
            reasons[trigger][reason] = n
        return {
            "namespace": self.namespace,
            "events": self.events,
            "invalid": self.invalid,
            "customers": self.customers,
            "from": None if self.first_ms is None else format_ms(self.first_ms),
            "to": None if self.last_ms is None else format_ms(self.last_ms),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "decisions": self.per_trigger(),
            "decisions_total": sum(self.decisions.values()),
            "cap_hits": dict(reasons),
            "cap_hits_by_reason": _sum_by_reason(self.reasons),
            "conflicts": self.conflicts,
            "conflict_sets": {"+".join(k): v for k, v in self.conflict_sets.most_common()},
            "conflict_outcomes": dict(self.conflict_outcomes),
            "invalid_examples": self.invalid_examples,
        }

    def render(self, out: TextIO) -> None:
        span = (
            f"{format_ms(self.first_ms)[:10]} .. {format_ms(self.last_ms)[:10]}"
            if self.first_ms is not None and self.last_ms is not None
            else "-"
        )
        print(
            f"back-test in ledger namespace {self.namespace!r}: {self.events:,} events "
            f"({self.invalid:,} invalid, skipped) of {self.customers:,} customers, {span}, "
            f"in {self.elapsed_seconds:.1f} s",
            file=out,
        )
        print(
            f"\n{'trigger':<30}{'contact':>9}{'suppressed':>11}{'holdout':>9}{'total':>8}", file=out
        )
        totals = collections.Counter[str]()
        for trigger, counts in self.per_trigger().items():
            totals.update(counts)
            print(
                f"{trigger:<30}{counts['contact']:>9}{counts['suppressed']:>11}"
                f"{counts['holdout']:>9}{sum(counts.values()):>8}",
                file=out,
            )
        print(
            f"{'total':<30}{totals['contact']:>9}{totals['suppressed']:>11}{totals['holdout']:>9}"
            f"{sum(totals.values()):>8}",
            file=out,
        )
        print("\ncap hits by reason:", file=out)
        by_reason = _sum_by_reason(self.reasons)
        if not by_reason:
            print("  (none)", file=out)
        for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
            triggers = ", ".join(
                f"{t} {c}" for (t, r), c in self.reasons.most_common() if r == reason
            )
            print(f"  {reason:<24}{n:>7}  ({triggers})", file=out)
        print(
            f"\ntrigger conflicts (several candidates of one customer at one moment): "
            f"{self.conflicts:,}",
            file=out,
        )
        for conflict, n in self.conflict_sets.most_common(10):
            print(f"  {' + '.join(conflict)}: {n}", file=out)
        if self.conflict_outcomes:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.conflict_outcomes.items()))
            print(f"  outcomes of conflicting candidates: {outcomes}", file=out)
        for example in self.invalid_examples:
            print(f"  invalid: {example}", file=out)
        out.flush()


def _sum_by_reason(reasons: Mapping[tuple[str, str], int]) -> dict[str, int]:
    out: collections.Counter[str] = collections.Counter()
    for (_, reason), n in reasons.items():
        out[reason] += n
    return dict(out)


class _ObservingGate:
    """The ledger gate, with every decision and conflict counted into the report."""

    def __init__(self, gate: LedgerGate, report: BacktestReport) -> None:
        self._gate = gate
        self._report = report

    async def record(self, event: Event) -> None:
        await self._gate.record(event)

    async def decide(
        self, candidates: Sequence[Candidate], now_ms: int, recipient: Recipient = NOBODY
    ) -> list[Decision]:
        decisions = await self._gate.decide(candidates, now_ms, recipient)
        report = self._report
        for d in decisions:
            report.decisions[(d.candidate.trigger, d.outcome)] += 1
            for reason in d.reasons:
                report.reasons[(d.candidate.trigger, reason)] += 1
        if len(candidates) > 1:
            report.conflicts += 1
            report.conflict_sets[tuple(sorted(c.trigger for c in candidates))] += 1
            report.conflict_outcomes.update(d.outcome for d in decisions)
        return decisions


async def _discard(decision: Decision) -> Any:
    """Publish nothing: a back-test only counts (the ack is already done)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


Parsed = tuple[int, int, str, Event]  # (occurred_at, sequence, kind, event)


def _kind_of(payload: Any) -> str:
    is_account = isinstance(payload, dict) and payload.get("type") in ACCOUNT_TYPES
    return "account" if is_account else "usage"


def _parse(value: bytes, report: BacktestReport, where: str) -> tuple[str, Event] | None:
    try:
        payload = orjson.loads(value)
        kind = _kind_of(payload)
        return kind, validate_payload(kind, payload)
    except (orjson.JSONDecodeError, InvalidEvent) as exc:
        report.invalid += 1
        if len(report.invalid_examples) < 5:
            report.invalid_examples.append(f"{where}: {exc}")
        return None


def read_jsonl(path: Path, report: BacktestReport) -> Iterator[tuple[str, Event]]:
    """Events of a JSON-lines file (one contract event per line; blank lines skipped)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                parsed = _parse(line, report, f"{path.name}:{number}")
                if parsed is not None:
                    yield parsed


async def read_topics(
    bootstrap_servers: str, topics: TopicNames, report: BacktestReport
) -> AsyncIterator[tuple[str, Event]]:
    """Events of both input topics, from the start to their end when the read began.

    Read-only: partitions are assigned by hand, no group is joined and nothing is committed.
    The end is the fetch high watermark (Tansu's ListOffsets answer is not the log end).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps: list[Any] = []
        for topic in topics.inputs:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        if not tps:
            raise ConfigError(f"topics {', '.join(topics.inputs)}: not found on the brokers")
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
                    if rec.value is None:
                        continue
                    parsed = _parse(rec.value, report, f"{tp.topic}[{tp.partition}]@{rec.offset}")
                    if parsed is not None:
                        yield parsed
    finally:
        await consumer.stop()


def _in_range(event: Event, since_ms: int | None, until_ms: int | None) -> bool:
    t = event.occurred_at_ms
    return (since_ms is None or t >= since_ms) and (until_ms is None or t < until_ms)


async def run_backtest(
    events: Iterable[tuple[str, Event]] | AsyncIterator[tuple[str, Event]],
    *,
    redis_url: str,
    config: Mapping[str, Any],
    namespace: str | None = None,
    partitions: int = 8,
    since_ms: int | None = None,
    until_ms: int | None = None,
    keep_ledger: bool = False,
    report: BacktestReport | None = None,
) -> BacktestReport:
    """Replay ``events`` (topic kind, typed event) through core, policy and an isolated ledger.

    Events are taken in event-time order (stable for ties) and assigned to partitions as Kafka
    would by customer id, so that each partition's stream time moves as it would in the worker.
    """
    namespace = namespace or f"bt-{uuid.uuid4().hex[:12]}"
    if namespace == PRODUCTION_NAMESPACE:
        raise ConfigError(
            f"--namespace: {PRODUCTION_NAMESPACE!r} is the production ledger; a back-test needs "
            "its own namespace"
        )
    report = report or BacktestReport(namespace)
    report.namespace = namespace
    started = time.perf_counter()
    collected: list[Parsed] = []
    if isinstance(events, AsyncIterator):
        async for kind, event in events:
            if _in_range(event, since_ms, until_ms):
                collected.append((event.occurred_at_ms, len(collected), kind, event))
    else:
        for kind, event in events:
            if _in_range(event, since_ms, until_ms):
                collected.append((event.occurred_at_ms, len(collected), kind, event))
    collected.sort(key=lambda p: (p[0], p[1]))
    client = aioredis.from_url(redis_url)
    policy = policy_of(config)
    ledger = ContactLedger(client, policy, namespace=namespace)
    try:
        await ledger.ping()  # fail fast: the gate would wait out an outage forever
    except LedgerUnavailable as exc:
        await client.aclose()
        raise ConfigError(f"--redis-url: {exc}") from None
    gate = _ObservingGate(LedgerGate(ledger, Metrics()), report)
    processor = Processor(
        build_core(config),
        Stores({}, {}, {}),
        Clock("event"),
        gate,
        _discard,
        Metrics(),
        quiet_hours=policy.quiet_hours,
    )
    # Offsets are numbered in replay order: the processor skips offsets it has applied.
    offsets: dict[tuple[str, int], int] = collections.defaultdict(int)
    customers: set[str] = set()
    try:
        for at, _, kind, event in collected:
            partition = partition_for(event.customer_id.encode(), partitions)
            offset = offsets[(kind, partition)]
            offsets[(kind, partition)] = offset + 1
            customers.add(event.customer_id)
            await processor.on_event(kind, partition, offset, event)
            report.first_ms = at if report.first_ms is None else report.first_ms
            report.last_ms = at
        report.events = len(collected)
        report.customers = len(customers)
    finally:
        try:
            if not keep_ledger:
                await delete_namespace(client, namespace)
        finally:
            await client.aclose()
    report.elapsed_seconds = time.perf_counter() - started
    return report


async def delete_namespace(client: aioredis.Redis, namespace: str) -> int:
    """Delete every ledger key of ``namespace`` (``<namespace>:{customer}:part``); nothing else."""
    deleted = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=f"{namespace}:*", count=1_000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(await client.delete(*batch))
            batch.clear()
    if batch:
        deleted += int(await client.delete(*batch))
    return deleted


def parse_time(text: str | None, option: str) -> int | None:
    """An RFC 3339 option value (a bare date means its midnight UTC) -> epoch ms."""
    if not text:
        return None
    value = parse_rfc3339_ms(text if "T" in text else f"{text}T00:00:00Z")
    if value is None:
        raise ConfigError(f"{option}: must be an RFC 3339 date-time or a date, got {text!r}")
    return value
