"""Prometheus instruments: units in the names, bounded labels (never a customer id).

Every labelled counter and histogram starts with its known label values at 0
(``Metrics.preset``): a series that appears only at its first increment makes ``increase()``
miss that increment, and an alert on it has no series to look at until then. Per-partition
series exist only for the partitions a worker owns (``Metrics.forget_partitions``): with two
workers, ``sum`` and ``count by (partition)`` must not count a partition twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from streams.core.catalogue import builtin_registry
from streams.core.decisions import OUTCOMES, REASON_CODES
from streams.core.events import ACCOUNT_EVENT_TYPES, USAGE_EVENT_TYPES

# The *_created series double the exposition for no use on our dashboards.
disable_created_metrics()

M = TypeVar("M", Counter, Gauge, Histogram)

# The reason classes of dead letters (``InvalidEvent.code`` in streams/core/ingest.py; a unit test
# keeps the two in step).
DEAD_LETTER_REASONS = (
    "bad_timestamp",
    "empty_value",
    "future_timestamp",
    "invalid_json",
    "invalid_value",
    "key_mismatch",
    "missing_field",
    "missing_key",
    "not_an_object",
    "out_of_range",
    "too_large",
    "unknown_type",
    "wrong_type",
)
INPUT_KINDS = ("account", "usage")
LEDGER_OPERATIONS = ("decide", "engagement", "consent", "complaint", "recall")
LEDGER_ERROR_KINDS = ("unavailable",)
ORDER_FORCED_REASONS = ("buffer_full", "stalled", "unknown")
LATENCY_CLOCKS = ("event_time", "processing_time")


def _keep_only(by_values: dict[tuple[str, ...], Any], keep: Iterable[tuple[str, ...]]) -> None:
    """Remove the entries of ``by_values`` whose label values are not in ``keep``."""
    wanted = set(keep)
    for values in [v for v in by_values if v not in wanted]:
        del by_values[values]


class Children(Generic[M]):
    """One labelled metric's children by label values, each looked up once.

    ``metric.labels(...)`` takes a lock and rebuilds the label tuple on every call (about
    1.4 us, as much as the increment); the per-event counters use this instead. The label sets
    are bounded (see the module docstring), so is this.
    """

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child

    def forget(self, keep: Iterable[tuple[str, ...]]) -> None:
        """Forget the children whose label values are not in ``keep`` (series removed)."""
        _keep_only(self._children, keep)


class Tally:
    """Increments of one labelled counter, kept in a plain dict (``counts``: label values ->
    increments not yet added) and added to the counter whenever the registry is read (a
    scrape, ``get_sample_value``: see ``_FlushTallies``).

    For the counters incremented for every input record: ``Counter.inc`` takes a lock and
    checks its argument (with the label lookup about 1 us per event), a dict update costs a
    tenth of that. The exposition is the same as with ``inc``: nothing reads the registry
    without flushing first. Single-threaded like the worker's event loop, which also serves
    the metrics page.
    """

    __slots__ = ("counts", "_metric")

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, *values: str) -> None:
        counts = self.counts
        counts[values] = counts.get(values, 0) + 1

    def flush(self) -> None:
        counts = self.counts
        if counts:
            for values, n in counts.items():
                self._metric.labels(*values).inc(n)
            counts.clear()

    def forget(self, keep: Iterable[tuple[str, ...]]) -> None:
        """Drop the pending increments of label values not in ``keep`` (series removed)."""
        _keep_only(self.counts, keep)


class _FlushTallies:
    """A collector without metrics of its own, registered before every other instrument: a
    read of the registry first adds the tallies' pending increments to their counters."""

    def __init__(self) -> None:
        self.tallies: list[Tally] = []

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        for tally in self.tallies:
            tally.flush()
        return []


class Metrics:
    """The worker's instruments, in a registry of their own (one per app: tests build many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._flush = _FlushTallies()
        r.register(self._flush)  # a collector by shape (describe, collect)
        # process_* (memory, CPU, open file descriptors against the limit) and python_* (the
        # interpreter, garbage collections): a RocksDB worker's memory and descriptors must be
        # visible against its container limits.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._children: list[Children[Counter] | Tally] = []
        self.events_consumed = Counter(
            "lifecycle_events_consumed_total",
            "Valid input events accepted, by topic and event type.",
            ["topic", "type"],
            registry=r,
        )
        self.records_done = Counter(
            "lifecycle_input_records_done_total",
            "Input records done with: applied (or dead-lettered), state written, offset acked.",
            registry=r,
        )
        self.dead_letters = Counter(
            "lifecycle_dead_letters_total",
            "Input records rejected to the dead-letter topic, by source topic and reason class.",
            ["topic", "reason"],
            registry=r,
        )
        self.dead_letters_unsendable = Counter(
            "lifecycle_dead_letters_unsendable_total",
            "Dead letters the producer or the broker refused for their content (too large, "
            "invalid): logged at ERROR and skipped, by source topic.",
            ["topic"],
            registry=r,
        )
        self.events_replayed = Counter(
            "lifecycle_events_replayed_total",
            "Input events skipped because the customer's record already holds them (replays).",
            ["kind"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "lifecycle_events_duplicate_total",
            "Input events ignored because the customer already had an event with that event_id.",
            ["kind"],
            registry=r,
        )
        self.triggers_fired = Counter(
            "lifecycle_triggers_fired_total",
            "Trigger occurrences (candidates) before the contact policy, by trigger.",
            ["trigger"],
            registry=r,
        )
        self.decisions = Counter(
            "lifecycle_decisions_total",
            "Contact decisions published, by trigger and outcome.",
            ["trigger", "outcome"],
            registry=r,
        )
        self.outcomes = Counter(
            "lifecycle_outcomes_total",
            "Decision outcomes published on decision-outcomes (one per decision with a goal), "
            "by trigger, arm (contact, holdout, suppressed) and converted (true/false).",
            ["trigger", "arm", "converted"],
            registry=r,
        )
        self.goals_dropped = Counter(
            "lifecycle_goals_dropped_total",
            "Pending goals dropped by the bound on pending goals per customer (the oldest "
            "first): their decisions get no outcome record.",
            registry=r,
        )
        self.outcomes_unattributed = Counter(
            "lifecycle_outcomes_unattributed_total",
            "Resolved goals whose decision the contact ledger no longer knows (its entry "
            "expired or the ledger was emptied): no outcome record is published for them.",
            ["trigger"],
            registry=r,
        )
        self.decisions_global_control = Counter(
            "lifecycle_decisions_global_control_total",
            "Holdout decisions of customers in the global control group, by trigger (also "
            "counted in lifecycle_decisions_total with outcome holdout).",
            ["trigger"],
            registry=r,
        )
        self.decisions_deferred = Counter(
            "lifecycle_decisions_deferred_total",
            "Marketing candidates held for the end of the customer's quiet hours, by trigger.",
            ["trigger"],
            registry=r,
        )
        self.decision_reasons = Counter(
            "lifecycle_decision_reasons_total",
            "Reasons behind suppressed decisions (one per reason that applied), by trigger.",
            ["trigger", "reason"],
            registry=r,
        )
        self.ledger_call_seconds = Histogram(
            "lifecycle_ledger_call_seconds",
            "Latency of one contact-ledger call (one Redis round trip).",
            ["operation"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.ledger_errors = Counter(
            "lifecycle_ledger_errors_total",
            "Contact-ledger calls that failed, by error kind (the stream pauses and retries).",
            ["kind"],
            registry=r,
        )
        self.redis_up = Gauge(
            "lifecycle_redis_up",
            "1 when the contact ledger's Redis answered the last call, else 0.",
            registry=r,
        )
        self.event_to_decision_seconds = Histogram(
            "lifecycle_event_to_decision_seconds",
            "From the event to its published decision; clock=event_time measures from the "
            "event's occurred_at, clock=processing_time from when the worker received it.",
            ["clock"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 86400),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "lifecycle_consumer_lag_records",
            "Records between the worker's position and the end of each input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.state_records_created = Counter(
            "lifecycle_state_records_created",
            "Customer state records created (a customer's first event) on this worker, by "
            "owned partition.",
            ["partition"],
            registry=r,
        )
        self.due_items = Gauge(
            "lifecycle_due_items",
            "Entries in the due-time index (customers with something due), by partition.",
            ["partition"],
            registry=r,
        )
        self.rebalances = Counter(
            "lifecycle_rebalances_total",
            "Consumer group rebalances this worker went through.",
            registry=r,
        )
        self.recovery_seconds = Gauge(
            "lifecycle_recovery_seconds",
            "Duration of the last partition assignment until tables were recovered.",
            registry=r,
        )
        self.order_forced = Counter(
            "lifecycle_order_forced_releases_total",
            "Event-time merge decisions made without full knowledge of the other input topic: "
            "buffer_full (released early), stalled, unknown (backlog not known yet).",
            ["reason"],
            registry=r,
        )
        self.log_resets = Counter(
            "lifecycle_log_resets_total",
            "Replaced logs found at assignment or start, by topic, partition and kind: cluster or "
            "offsets (an input log not the one the state was built from: its applied-offset "
            "marks were reset), changelog_emptied (local state written back), changelog_behind "
            "(local state dropped and restored from the changelog).",
            ["topic", "partition", "kind"],
            registry=r,
        )
        self.misrouted_records = Counter(
            "lifecycle_misrouted_records_total",
            "Input records on another partition than the one stream.partitioner gives their key "
            "(their producers hash keys another way), by topic.",
            ["topic"],
            registry=r,
        )
        self.ready = Gauge(
            "lifecycle_worker_ready",
            "1 when partitions are assigned and recovery is done, else 0.",
            registry=r,
        )

    def children(self, metric: Counter) -> Children[Counter]:
        """A cache of ``metric``'s children that ``forget_partitions`` keeps in step."""
        made: Children[Counter] = Children(metric)
        self._children.append(made)
        return made

    def tally(self, metric: Counter) -> Tally:
        """A ``Tally`` of ``metric``, flushed on every read of the registry and kept in step by
        ``forget_partitions``."""
        made = Tally(metric)
        self._flush.tallies.append(made)
        self._children.append(made)
        return made

    def preset(self, input_topics: tuple[str, str], triggers: Iterable[str] | None = None) -> None:
        """Create every known label combination of the counters and histograms at 0
        (``triggers``: the registry's names; default the built-in ones)."""
        account, usage = input_topics
        for topic, types in ((account, ACCOUNT_EVENT_TYPES), (usage, USAGE_EVENT_TYPES)):
            for event_type in types:
                self.events_consumed.labels(topic, event_type)
            for reason in DEAD_LETTER_REASONS:
                self.dead_letters.labels(topic, reason)
        for kind in INPUT_KINDS:
            self.events_replayed.labels(kind)
            self.events_duplicate.labels(kind)
        for trigger in builtin_registry().names if triggers is None else triggers:
            self.triggers_fired.labels(trigger)
            self.decisions_deferred.labels(trigger)
            self.decisions_global_control.labels(trigger)
            self.outcomes_unattributed.labels(trigger)
            for outcome in OUTCOMES:
                self.decisions.labels(trigger, outcome)
                for converted in ("true", "false"):
                    self.outcomes.labels(trigger, outcome, converted)
            for reason in REASON_CODES:
                self.decision_reasons.labels(trigger, reason)
        for operation in LEDGER_OPERATIONS:
            self.ledger_call_seconds.labels(operation)
        for kind in LEDGER_ERROR_KINDS:
            self.ledger_errors.labels(kind)
        for clock in LATENCY_CLOCKS:
            self.event_to_decision_seconds.labels(clock)
        for reason in ORDER_FORCED_REASONS:
            self.order_forced.labels(reason)

    def owned_partitions(self, partitions: Iterable[int], input_topics: tuple[str, ...]) -> None:
        """Keep the per-partition series of ``partitions`` only (called on every assignment
        and revocation): a partition another worker took over is that worker's to export."""
        keep = {str(p) for p in partitions}
        self._flush.collect()  # what was counted for a partition still owned then
        for gauge in (self.due_items, self.state_records_created):
            for (partition,) in _label_values(gauge):
                if partition not in keep:
                    gauge.remove(partition)
        for topic, partition in _label_values(self.consumer_lag):
            if partition not in keep or topic not in input_topics:
                self.consumer_lag.remove(topic, partition)
        for cache in self._children:
            cache.forget((p,) for p in keep)


def _label_values(metric: Counter | Gauge) -> list[tuple[str, ...]]:
    # prometheus_client keeps a metric's children by label values and has no public listing.
    with metric._lock:
        return [tuple(values) for values in metric._metrics]
