"""The worker's metrics registry: series that exist before their first increment, series that
follow partition ownership, and the process and platform collectors."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from streams.core.catalogue import builtin_registry
from streams.ops.metrics import DEAD_LETTER_REASONS, Metrics

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ("acct", "usage")


def samples(metrics: Metrics) -> dict[str, float]:
    """Every sample of /metrics as 'name{labels}' -> value."""
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_every_labelled_counter_has_its_known_series_at_zero_before_any_increment() -> None:
    metrics = Metrics()
    metrics.preset(INPUTS)
    got = samples(metrics)
    for name in (
        "lifecycle_events_consumed_total",
        "lifecycle_dead_letters_total",
        "lifecycle_events_replayed_total",
        "lifecycle_events_duplicate_total",
        "lifecycle_triggers_fired_total",
        "lifecycle_decisions_total",
        "lifecycle_decisions_deferred_total",
        "lifecycle_decision_reasons_total",
        "lifecycle_ledger_errors_total",
        "lifecycle_order_forced_releases_total",
        "lifecycle_ledger_call_seconds_count",
        "lifecycle_event_to_decision_seconds_count",
    ):
        series = {k: v for k, v in got.items() if k.startswith(name + "{")}
        assert series, f"{name} has no series before its first increment"
        assert set(series.values()) == {0.0}, name
    assert got['lifecycle_ledger_errors_total{kind="unavailable"}'] == 0
    assert got['lifecycle_dead_letters_total{reason="invalid_json",topic="acct"}'] == 0
    for trigger in builtin_registry().names:
        key = f'lifecycle_decisions_total{{outcome="contact",trigger="{trigger}"}}'
        assert got[key] == 0


def test_the_dead_letter_reasons_are_the_codes_the_decoder_raises() -> None:
    source = (ROOT / "streams" / "core" / "ingest.py").read_text(encoding="utf-8")
    raised = set(re.findall(r'InvalidEvent\(\s*"([a-z_]+)"', source))
    assert raised, "no InvalidEvent codes found in streams/core/ingest.py"
    assert raised <= set(DEAD_LETTER_REASONS), sorted(raised - set(DEAD_LETTER_REASONS))


def test_process_and_platform_metrics_are_exported() -> None:
    got = samples(Metrics())
    names = {key.partition("{")[0] for key in got}
    assert {"process_resident_memory_bytes", "process_open_fds", "process_max_fds"} <= names
    assert "process_cpu_seconds_total" in names
    assert "python_info" in names
    assert "python_gc_collections_total" in names
    assert got["process_resident_memory_bytes"] > 0


def test_per_partition_series_of_partitions_no_longer_owned_are_removed() -> None:
    metrics = Metrics()
    created = metrics.children(metrics.state_records_created)
    for p in (0, 1, 2):
        metrics.due_items.labels(str(p)).set(5)
        created(str(p)).inc()
        for topic in INPUTS:
            metrics.consumer_lag.labels(topic, str(p)).set(7)
    metrics.owned_partitions({1}, INPUTS)
    got = samples(metrics)
    partitions = {
        m.group(1)
        for key in got
        if key.startswith(("lifecycle_due_items", "lifecycle_consumer_lag", "lifecycle_state"))
        for m in [re.search(r'partition="(\d+)"', key)]
        if m
    }
    assert partitions == {"1"}
    # The cached child of a forgotten partition is not reused: an increment after the
    # partition comes back is exported again.
    created("0").inc()
    assert samples(metrics)['lifecycle_state_records_created_total{partition="0"}'] == 1


def test_a_tally_is_exported_exactly_on_every_read_of_the_registry() -> None:
    """The per-record counters count in a dict (``Tally``): every read of the registry (a
    scrape, ``get_sample_value``) shows every increment so far, once."""
    metrics = Metrics()
    consumed = metrics.tally(metrics.events_consumed)
    for _ in range(3):
        consumed.add("acct", "deposit")
    consumed.counts[("usage", "visit")] = consumed.counts.get(("usage", "visit"), 0) + 1
    labels = {"topic": "acct", "type": "deposit"}
    assert metrics.registry.get_sample_value("lifecycle_events_consumed_total", labels) == 3
    assert samples(metrics)['lifecycle_events_consumed_total{topic="usage",type="visit"}'] == 1
    # Read twice, counted once; later increments add to it.
    assert samples(metrics)['lifecycle_events_consumed_total{topic="acct",type="deposit"}'] == 3
    consumed.add("acct", "deposit")
    assert metrics.registry.get_sample_value("lifecycle_events_consumed_total", labels) == 4


def test_a_tally_of_a_partition_no_longer_owned_is_not_exported() -> None:
    metrics = Metrics()
    created = metrics.tally(metrics.state_records_created)
    created.add("0")
    created.add("1")
    metrics.owned_partitions({1}, INPUTS)
    got = samples(metrics)
    assert 'lifecycle_state_records_created_total{partition="0"}' not in got
    assert got['lifecycle_state_records_created_total{partition="1"}'] == 1
    created.add("0")  # the partition came back
    assert samples(metrics)['lifecycle_state_records_created_total{partition="0"}'] == 1
