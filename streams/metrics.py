"""Prometheus instruments: units in the names, bounded labels (never a customer id)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

# The *_created series double the exposition for no use on our dashboards.
disable_created_metrics()


class Metrics:
    """The worker's instruments, in a registry of their own (one per app: tests build many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "lifecycle_events_consumed_total",
            "Valid input events accepted, by topic and event type.",
            ["topic", "type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "lifecycle_dead_letters_total",
            "Input records rejected to the dead-letter topic, by source topic and reason class.",
            ["topic", "reason"],
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
        self.ready = Gauge(
            "lifecycle_worker_ready",
            "1 when partitions are assigned and recovery is done, else 0.",
            registry=r,
        )
