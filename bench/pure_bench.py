"""The pure path per event, in one process: ingest and the processor, no broker, no Redis.

Measures what the worker spends on an event outside Faust, aiokafka and the ledger:
``Ingest.accept`` (raw bytes -> validated ``Event``) and ``Processor.apply_event_nowait`` with dict
stores, the ``ContactAll`` gate, the default config's quiet hours, a publish whose ack is
already done, and a ``flush`` every ``--batch`` events (500, like a busy worker's batches),
under the worker's garbage collector thresholds (``GC_THRESHOLDS`` in ``streams/kafka/app.py``).
The baseline, timed in the same run on the same records, is ``orjson.loads`` of each value:
the least any consumer of these records does. Prints µs/event, events/s and pure ÷ baseline
per repeat and their medians. Times are the process's CPU time (``time.process_time``), not the
wall clock: on a shared machine that is what stays comparable between runs.

The data is ``bench/benchlib.py``'s event mix (the one ``throughput_bench.py`` loads): customers
drawn uniformly, event-time order over 120 days ending yesterday, partitioned by key the way
Kafka's default partitioner does (murmur2), offsets counted per input topic and partition.

It also prints two digests of what the pure path produced: ``digest``, of every decision record
and the final content of the three stores (equal before and after a change: the same output),
and ``decisions``, of the decision records alone (equal: the same decisions, even when what the
stores keep changed, e.g. a field of the customer record dropped). ``--config FILE`` runs the
pure path with that YAML configuration (as the worker's ``--config``), e.g. with new triggers or
rules switched off to compare decisions with a tree that did not have them.

    python bench/pure_bench.py                  # 300,000 events of 100,000 customers, 3 repeats
    python bench/pure_bench.py --quick          # 30,000 events of 20,000 customers
    python bench/pure_bench.py --profile        # + a cProfile of one pure-path run (top functions)
    python bench/pure_bench.py --parts          # + the pure path's parts, each timed on its own
    python bench/pure_bench.py --config c.yaml  # the pure path with this configuration
    python bench/pure_bench.py --no-goals       # without the runs with outcome tracking

After the digests it prints the cost of outcome tracking (docs/outcomes.md): the same path with
the configuration's goals tracked and outcome records published as the worker does, timed in
alternation with runs without goals, as the ratio with ÷ without; the decisions must not change.

``--parts`` times the parts of the pure path one at a time over the same records, each loop
on its own (no profiler in the way): JSON parsing alone (orjson), ``Decoder.decode`` (bytes
-> typed event, everything ingest does), and inside it the timestamp parse and the building
of the event from its values, ``Ingest.accept`` (the decode plus the pipeline's
bookkeeping), and the core step (``apply_event_nowait`` and the flushes) on events decoded
beforehand, and within it the customer record's decode and encode (timed on the final
records). Run it on two trees (``PYTHONPATH=<other tree>``) to compare their parts.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import hashlib
import io
import os
import pstats
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from benchlib import EventMix, bench_topics

from streams.config import load_config
from streams.core import state as state_module
from streams.core.adapter import build_core
from streams.core.clock import Clock
from streams.core.decisions import Decision
from streams.core.errors import ConfigError
from streams.core.ingest import Decoder
from streams.core.policy import Policy
from streams.core.state import CustomerState
from streams.core.timeutil import MS_PER_DAY, parse_rfc3339_ms, wall_ms
from streams.kafka.app import GC_THRESHOLDS
from streams.kafka.pipeline import Ingest, Rejected
from streams.kafka.processor import ContactAll, Processor, Stores
from streams.kafka.topics import TopicNames
from streams.ops.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def make_records(events: int, customers: int, partitions: int, seed: int) -> list[Record]:
    topics = bench_topics("pure")
    # 120 days ending at the start of yesterday (UTC): the same records all day long, so the
    # output digest of two runs on the same day compares code, not the time of the run.
    end_ms = (wall_ms() // MS_PER_DAY - 1) * MS_PER_DAY
    start_ms, span_ms = end_ms - 120 * MS_PER_DAY, 120 * MS_PER_DAY
    mix = EventMix(customers, seed=seed)
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for kind, key, value in mix.backlog(events, start_ms, span_ms):
        topic = topics.account_events if kind == "account" else topics.usage_events
        # Kafka's default partitioner: murmur2 of the key, positive, modulo the partitions.
        partition = (murmur2(key) & 0x7FFFFFFF) % partitions
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        records.append(Record(topic, partition, offset, key, value))
    return records


def repeats_within_batches(records: Sequence[Record], batch: int) -> int:
    """Events whose customer already had an event earlier in the same batch: the only reads a
    record cache of decoded state (kept until the batch's flush) could serve."""
    repeats = 0
    for start in range(0, len(records), batch):
        keys = [r.key for r in records[start : start + batch]]
        repeats += len(keys) - len(set(keys))
    return repeats


def run_baseline(records: Sequence[Record]) -> float:
    loads = orjson.loads
    started = time.process_time()
    for r in records:
        loads(r.value)
    return time.process_time() - started


@dataclass
class PureRun:
    seconds: float
    decisions: int
    digest: str
    # The decisions alone, and the customer records' content (each decoded and hashed in the
    # JSON form of ``state._encode``): both stay equal when only the record's encoding changes,
    # which changes ``digest`` (it hashes the stored bytes) by design.
    decisions_digest: str
    content_digest: str


def decisions_digest(records: Iterable[Mapping[str, Any]]) -> str:
    """A digest of decision records (``Decision.to_record()``) in their order: the same for the
    same decisions whatever the key order of each record."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()[:16]


def _pipeline(
    topics: TopicNames, config: Mapping[str, Any], outcomes: list[bytes] | None = None
) -> tuple[Ingest, Decoder, Processor, Stores, list[Decision]]:
    """The pure path's pieces as the worker wires them, with dict stores and a publish whose
    ack is already done (call inside a running event loop). With ``outcomes`` (a list the
    outcome records are put in) the goals are tracked and resolved as the worker does;
    without, they are not (the digests are those of the path without goals)."""
    stream_conf = config["stream"]
    metrics = Metrics()
    decoder = Decoder(stream_conf["max_message_bytes"], stream_conf["max_future_seconds"])
    ingest = Ingest(topics, decoder, metrics, wall_ms)
    stores = Stores(customers={}, due={}, clock={})
    published: list[Decision] = []
    acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acked.set_result(None)

    async def publish(decision: Decision) -> asyncio.Future[None]:
        published.append(decision)
        return acked

    async def publish_outcome(key: bytes, value: bytes) -> asyncio.Future[None]:
        assert outcomes is not None  # noqa: S101 - given when goals are tracked
        outcomes.append(value)
        return acked

    processor = Processor(
        build_core(config),
        stores,  # type: ignore[arg-type]  # dicts are the tests' stores too
        Clock("event"),
        ContactAll(),
        publish,
        metrics,
        quiet_hours=Policy.from_config(config["policy"]).quiet_hours,
        publish_outcome=None if outcomes is None else publish_outcome,
    )
    return ingest, decoder, processor, stores, published


async def _pure(
    records: Sequence[Record],
    topics: TopicNames,
    batch: int,
    config: Mapping[str, Any],
    outcomes: list[bytes] | None = None,
) -> PureRun:
    ingest, _, processor, stores, published = _pipeline(topics, config, outcomes)
    kind_of = topics.kind_of
    pending = 0
    started = time.process_time()
    for r in records:
        event = ingest.accept(r.topic, r.partition, r.offset, r.key, r.value)
        if isinstance(event, Rejected):
            continue
        processor.apply_event_nowait(kind_of(r.topic), r.partition, r.offset, event)
        pending += 1
        if pending >= batch:
            await processor.flush()
            pending = 0
    await processor.flush()
    seconds = time.process_time() - started
    decision_records = [d.to_record() for d in published]
    digest = hashlib.sha256()
    for record in decision_records:
        digest.update(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    for store in (stores.customers, stores.due, stores.clock):
        for key in sorted(store):
            digest.update(key)
            digest.update(store[key])
    content = hashlib.sha256()
    for key in sorted(stores.customers):
        content.update(key)
        content.update(
            orjson.dumps(state_module._encode(CustomerState.from_bytes(stores.customers[key])))
        )
    return PureRun(
        seconds, len(published), digest.hexdigest()[:16], decisions_digest(decision_records),
        content.hexdigest()[:16],
    )  # fmt: skip


def _field_names(cls: type) -> tuple[str, ...]:
    """An event class's attributes: a msgspec Struct's or a dataclass's (either tree)."""
    names = getattr(cls, "__struct_fields__", None)
    return tuple(names) if names is not None else tuple(f.name for f in dataclasses.fields(cls))


async def _parts(
    records: Sequence[Record], topics: TopicNames, batch: int, config: Mapping[str, Any]
) -> dict[str, float]:
    """Seconds of each part of the pure path over ``records``, each timed in its own loop."""
    ingest, decoder, processor, stores, _ = _pipeline(topics, config)
    kind_of = topics.kind_of
    kinds = [kind_of(r.topic) for r in records]
    now = wall_ms()
    parts: dict[str, float] = {}
    clock = time.process_time

    started = clock()
    payloads = [orjson.loads(r.value) for r in records]
    parts["JSON parse alone (orjson.loads)"] = clock() - started

    started = clock()
    events = [decoder.decode(k, r.key, r.value, now) for k, r in zip(kinds, records, strict=True)]
    parts["Decoder.decode: bytes -> typed event"] = clock() - started

    stamps = [p[name] for p in payloads for name in ("occurred_at", "expires_at") if name in p]
    started = clock()
    for text in stamps:
        parse_rfc3339_ms(text)
    parts["  of which timestamp parse (parse_rfc3339_ms)"] = clock() - started

    values = [(type(e), {n: getattr(e, n) for n in _field_names(type(e))}) for e in events]
    started = clock()
    for cls, kwargs in values:
        cls(**kwargs)
    parts["  of which building the event from its values"] = clock() - started

    started = clock()
    for r in records:
        ingest.accept(r.topic, r.partition, r.offset, r.key, r.value)
    parts["Ingest.accept: the decode + pipeline bookkeeping"] = clock() - started

    started = clock()
    pending = 0
    for kind, r, event in zip(kinds, records, events, strict=True):
        processor.apply_event_nowait(kind, r.partition, r.offset, event)
        pending += 1
        if pending >= batch:
            await processor.flush()
            pending = 0
    await processor.flush()
    parts["core step: apply_event_nowait + flush"] = clock() - started

    # The record's decode and encode, once per event as the core step does them, on each
    # event's customer's final record (an upper bound: records grow with their history).
    raws = [stores.customers[r.key] for r in records if r.key in stores.customers]
    load = CustomerState.from_bytes
    started = clock()
    for raw in raws:
        load(raw)  # dropped at once, as in the worker (kept, they would set the collector off)
    parts["  of which record decode (final records)"] = clock() - started
    states = [load(raw) for raw in raws]
    started = clock()
    for state in states:
        state.to_bytes()
    parts["  of which record encode (final records)"] = clock() - started
    return parts


def run_parts(records: Sequence[Record], batch: int, config: Mapping[str, Any]) -> dict[str, float]:
    return asyncio.run(_parts(records, bench_topics("pure"), batch, config))


def run_pure(
    records: Sequence[Record],
    batch: int,
    config: Mapping[str, Any],
    outcomes: list[bytes] | None = None,
) -> PureRun:
    return asyncio.run(_pure(records, bench_topics("pure"), batch, config, outcomes))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="input events (300,000)")
    parser.add_argument("--customers", type=int, default=None, help="customers (100,000)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500, help="events per flush")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs of each (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML configuration of the pure path (default: the built-in defaults)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK") == "1",
        help="30,000 events of 20,000 customers (also BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one pure-path run (cProfile)"
    )
    parser.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    parser.add_argument(
        "--no-goals",
        dest="goals",
        action="store_false",
        help="skip the runs with outcome tracking (the cost of goals: with ÷ without)",
    )
    parser.add_argument(
        "--parts", action="store_true", help="also time the pure path's parts, each on its own"
    )
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 30_000 if args.quick else 300_000
    if args.customers is None:
        args.customers = 20_000 if args.quick else 100_000
    return args


def per_event_us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pure_bench: {exc}", file=sys.stderr)
        return 2
    # The worker's garbage collector settings (``streams/kafka/app.py``): with CPython's defaults
    # the same path costs about 10 % more here, which the worker never pays.
    gc.set_threshold(*GC_THRESHOLDS)
    made = time.perf_counter()
    records = make_records(args.events, args.customers, args.partitions, args.seed)
    n = len(records)
    size = sum(len(r.value) for r in records) / n
    print(
        f"{n:,} events (avg {size:.0f} B) of {args.customers:,} customers, "
        f"{args.partitions} partitions, flush every {args.batch}, "
        f"gc thresholds {gc.get_threshold()}; made in {time.perf_counter() - made:.1f} s"
    )
    repeats = repeats_within_batches(records, args.batch)
    print(f"customer already in the batch: {repeats:,} events ({repeats / n:.1%})")
    base_us: list[float] = []
    pure_us: list[float] = []
    ratios: list[float] = []
    outputs: set[tuple[int, str, str, str]] = set()
    for i in range(args.repeat):
        base = per_event_us(run_baseline(records), n)
        pure = run_pure(records, args.batch, config)
        us = per_event_us(pure.seconds, n)
        outputs.add((pure.decisions, pure.digest, pure.decisions_digest, pure.content_digest))
        base_us.append(base)
        pure_us.append(us)
        ratios.append(us / base)
        print(
            f"run {i + 1}: baseline {base:6.2f} µs/event ({1e6 / base:>9,.0f}/s)   "
            f"pure {us:6.2f} µs/event ({1e6 / us:>7,.0f}/s)   pure ÷ baseline {us / base:6.1f}"
        )
    if len(outputs) != 1:
        print(f"the runs' outputs differ: {sorted(outputs)}")
        return 1
    decisions, digest, decisions_only, content_digest = outputs.pop()
    b, p = statistics.median(base_us), statistics.median(pure_us)
    print(
        f"median of {args.repeat}: baseline (orjson.loads) {b:.2f} µs/event ({1e6 / b:,.0f}/s); "
        f"pure path {p:.2f} µs/event ({1e6 / p:,.0f}/s); "
        f"pure ÷ baseline {statistics.median(ratios):.1f}"
    )
    print(f"output: {decisions:,} decisions, digest {digest}, decisions {decisions_only}")
    print(f"customer records' content digest {content_digest}")
    if args.goals:
        # The same path with outcome tracking as the worker runs it (goals of the
        # configuration, outcome records published), timed against the path without goals
        # in alternation, so that the machine's load affects both alike.
        without: list[float] = []
        with_goals: list[float] = []
        published: list[bytes] = []
        for _ in range(args.repeat):
            without.append(per_event_us(run_pure(records, args.batch, config).seconds, n))
            published.clear()
            run = run_pure(records, args.batch, config, published)
            with_goals.append(per_event_us(run.seconds, n))
            if run.decisions_digest != decisions_only:
                print("outcome tracking changed the decisions")
                return 1
        w, g = statistics.median(without), statistics.median(with_goals)
        converted = sum(orjson.loads(v)["converted"] for v in published)
        print(
            f"outcome tracking: {g:.2f} µs/event with goals against {w:.2f} without "
            f"(median of {args.repeat}): with ÷ without {g / w:.3f}; "
            f"{len(published):,} outcome records ({converted:,} converted), decisions unchanged"
        )
    if args.parts:
        runs = [run_parts(records, args.batch, config) for _ in range(args.repeat)]
        print(f"--- parts of the pure path, µs/event (median of {args.repeat}) ---")
        for name in runs[0]:
            us = statistics.median(per_event_us(run[name], n) for run in runs)
            print(f"{name:<52} {us:7.2f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_pure(records, args.batch, config)
        profiler.disable()
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
            text = out.getvalue()
            print(f"--- profile by {order} ---")
            print(text[text.index("   ncalls") :] if "   ncalls" in text else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
