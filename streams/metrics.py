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
        self.ready = Gauge(
            "lifecycle_worker_ready",
            "1 when partitions are assigned and recovery is done, else 0.",
            registry=r,
        )
