"""The testing kit for triggers: one customer's story through the real core, in event time.

A ``Story`` feeds events the way the worker's shell does (``step`` at the stream time, then
``advance`` whenever the clock reaches the customer's next due time), with chosen triggers and
parameters, and no broker. What fired is in ``story.fired`` (``Candidate``: trigger, instance,
evidence, ``triggered_at_ms``...), what is pending in ``story.due()``::

    from streams.testing import Story

    story = Story(triggers=["usage_lapsed"], config={"triggers": {"usage_lapsed":
                                                                  {"inactive_days": 30}}})
    story.send("contract", 0, contract_id="k1", product="gym", status="active",
               expires_at="2027-01-01T00:00:00Z", auto_renew=True)
    story.send("product_usage", 1, product="gym", activity="workout", contract_id="k1")
    assert story.due() == [(story.at(31), "usage_lapsed")]
    assert story.run_until(31) and story.names() == ["usage_lapsed"]

Events are given in the wire format of the contract (docs/contract.md: a type name and its JSON
fields, validated by the worker's own decoder) or as typed events (a class of
``streams.core.events`` and its attributes, amounts in cents and times in ms). Days count from
``start`` (``story.at(day)`` is its time in ms); the envelope (event id, customer id, time) is
filled in. ``story.records()`` gives the story as the input topics' records, for
``streams.testing.live.run_live`` (the same story through a live worker).

Triggers: ``triggers`` enables exactly those (default: every trigger's own default);
``config`` is a configuration document (as the YAML file's) merged over the defaults;
``families`` are plugin families to register besides the built-in and installed ones (a
plugin under test need not be installed).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.config import build_config
from streams.core import events as ev
from streams.core.catalogue import registry_of
from streams.core.decisions import Candidate
from streams.core.engine import advance, due_items, next_due_ms, step
from streams.core.ingest import FIELDS, validate_payload
from streams.core.state import DAY_MS, CustomerState
from streams.core.timeutil import format_ms, parse_rfc3339_ms
from streams.core.triggers import TriggerParams
from streams.core.triggers.api import TriggerFamily

__all__ = ["DAY_MS", "START", "Story", "params_for", "to_wire"]

START = "2026-01-05T00:00:00Z"


def params_for(
    triggers: Iterable[str] | None = None,
    config: Mapping[str, Any] | None = None,
    families: Sequence[TriggerFamily] = (),
) -> TriggerParams:
    """The core's parameters for this configuration, with only ``triggers`` enabled (if given).

    An unknown trigger name or a bad parameter raises ``ConfigError`` naming it, as at a
    worker's start."""
    document: dict[str, Any] = {k: dict(v) for k, v in (config or {}).items()}
    given = document.get("triggers", {})
    plugins = list(given.get("plugins", []))
    registry = registry_of(families, entry_points=True, plugins=plugins)
    sections: dict[str, Any] = {k: dict(v) for k, v in given.items() if k != "plugins"}
    if triggers is not None:
        wanted = set(triggers)
        unknown = wanted - set(registry.names)
        if unknown:
            raise ValueError(
                f"unknown triggers {sorted(unknown)}; known: {', '.join(registry.names)}"
            )
        for name in registry.names:
            sections.setdefault(name, {})["enabled"] = name in wanted
    document["triggers"] = {**sections, "plugins": plugins}
    return TriggerParams.from_config(build_config(document, registry=registry), registry)


def to_wire(event: ev.Event) -> dict[str, Any]:
    """The event as the contract's JSON object (what a producer writes to the input topic)."""
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "type": event.type,
        "occurred_at": format_ms(event.occurred_at_ms),
    }
    if event.source is not None:
        out["source"] = event.source
    for f in FIELDS[event.type]:
        value = getattr(event, f.target)
        if value is None:
            continue
        if f.target.endswith("_cents"):
            value = value / 100 if value % 100 else value // 100
        elif f.target.endswith("_ms"):
            value = format_ms(value)
        out[f.name] = value
    return out


class Story:
    """One customer's events, fed as the worker would: step at stream time, advance when due."""

    def __init__(
        self,
        *,
        triggers: Iterable[str] | None = None,
        config: Mapping[str, Any] | None = None,
        families: Sequence[TriggerFamily] = (),
        params: TriggerParams | None = None,
        customer_id: str = "cust-1",
        start: str = START,
    ) -> None:
        self.params = params if params is not None else params_for(triggers, config, families)
        self.customer_id = customer_id
        self.start_ms = parse_rfc3339_ms(start) or 0
        self.state: CustomerState | None = None
        self.now = self.start_ms
        self.fired: list[Candidate] = []
        self.events: list[ev.Event] = []
        self._ids = itertools.count(1)

    def at(self, day: float) -> int:
        """The time ``day`` days after the start, in ms."""
        return self.start_ms + round(day * DAY_MS)

    def day(self, ms: int) -> float:
        """The day (after the start) of a time in ms."""
        return (ms - self.start_ms) / DAY_MS

    def event(self, kind: str | type[ev.Event], day: float, **fields: Any) -> ev.Event:
        """The event ``kind`` on ``day`` (without sending it)."""
        event_id = fields.pop("event_id", None) or f"e{next(self._ids)}"
        if isinstance(kind, str):
            payload = {
                "event_id": event_id,
                "customer_id": self.customer_id,
                "type": kind,
                "occurred_at": format_ms(self.at(day)),
                **fields,
            }
            topic = "account" if kind in ev.ACCOUNT_EVENT_TYPES else "usage"
            return validate_payload(topic, payload)
        return kind(
            event_id=event_id, customer_id=self.customer_id, occurred_at_ms=self.at(day), **fields
        )

    def send(self, kind: str | type[ev.Event], day: float, **fields: Any) -> list[Candidate]:
        """Send one event; the candidates fired since (what was due before it, it, and what it
        made due at once)."""
        return self.feed(self.event(kind, day, **fields))

    def feed(self, event: ev.Event) -> list[Candidate]:
        """Send a ready-made event (its customer id is the story's)."""
        before = len(self.fired)
        self.events.append(event)
        self._tick(event.occurred_at_ms, inclusive=False)  # what was due before it fires first
        self.now = max(self.now, event.occurred_at_ms)
        result = step(self.state, event, self.now, self.params)
        self.state = result.state
        self.fired += result.candidates
        self._tick(self.now, inclusive=True)
        return self.fired[before:]

    def run_until(self, day: float) -> list[Candidate]:
        """Move the clock to ``day``: the candidates that came due on the way."""
        before = len(self.fired)
        self._tick(self.at(day), inclusive=True)
        self.now = max(self.now, self.at(day))
        return self.fired[before:]

    def _tick(self, until: int, *, inclusive: bool) -> None:
        while self.state is not None:
            due = next_due_ms(self.state)
            if due is None or due > until or (due == until and not inclusive):
                return
            result = advance(self.state, due, self.params)
            self.state = result.state
            self.fired += result.candidates

    # --- what to assert on ----------------------------------------------------------------

    def names(self) -> list[str]:
        """The triggers fired so far, in order."""
        return [c.trigger for c in self.fired]

    def fired_at(self) -> list[tuple[float, str]]:
        """(day, trigger) of every candidate fired so far."""
        return [(self.day(c.triggered_at_ms), c.trigger) for c in self.fired]

    def due(self) -> list[tuple[int, str]]:
        """(due time in ms, trigger) of every time-based occurrence pending, earliest first."""
        if self.state is None:
            return []
        return sorted((i.due_ms, i.trigger) for i in due_items(self.state, self.params))

    def next_due(self) -> int | None:
        """When the worker would next look at this customer (ms), or None."""
        return next_due_ms(self.state)

    def record_size(self) -> int:
        """The bytes of the customer's record as the worker's table stores it."""
        return 0 if self.state is None else len(self.state.to_bytes())

    def records(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The story as input records: (topic kind ``account``/``usage``, key, JSON object)."""
        return [(e.topic_kind, e.customer_id, to_wire(e)) for e in self.events]
