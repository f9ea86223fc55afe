"""The trigger tests' customer: events fed as the shell feeds them.

``step`` at the stream time, then ``advance`` whenever the clock reaches ``next_due_ms``.
"""

from __future__ import annotations

import itertools
from typing import Any

from streams.config import default_trigger_params
from streams.core import events as ev
from streams.core.decisions import Candidate
from streams.core.engine import advance, next_due_ms, step
from streams.core.state import CustomerState
from streams.core.timeutil import parse_rfc3339_ms
from streams.core.triggers import TriggerParams

DAY = 86_400_000
T0 = parse_rfc3339_ms("2026-01-05T00:00:00Z") or 0
PARAMS = default_trigger_params()


def at(day: float) -> int:
    return T0 + round(day * DAY)


class Story:
    """One customer's events, fed as the shell would: step at stream time, advance when due."""

    def __init__(self, params: TriggerParams = PARAMS) -> None:
        self.params = params
        self.state: CustomerState | None = None
        self.now = T0
        self.fired: list[Candidate] = []
        self._ids = itertools.count(1)

    def send(self, cls: type[ev.Event], day: float, **fields: Any) -> list[Candidate]:
        event_id = fields.pop("event_id", None) or f"e{next(self._ids)}"
        event = cls(event_id=event_id, customer_id="cust-1", occurred_at_ms=at(day), **fields)
        before = len(self.fired)
        self._tick(event.occurred_at_ms, inclusive=False)  # what was due before it fires first
        self.now = max(self.now, event.occurred_at_ms)
        result = step(self.state, event, self.now, self.params)
        self.state = result.state
        self.fired += result.candidates
        self._tick(self.now, inclusive=True)
        return self.fired[before:]

    def run_until(self, day: float) -> list[Candidate]:
        before = len(self.fired)
        self._tick(at(day), inclusive=True)
        self.now = max(self.now, at(day))
        return self.fired[before:]

    def _tick(self, until: int, *, inclusive: bool) -> None:
        while self.state is not None:
            due = next_due_ms(self.state)
            if due is None or due > until or (due == until and not inclusive):
                return
            result = advance(self.state, due, self.params)
            self.state = result.state
            self.fired += result.candidates

    def names(self) -> list[str]:
        return [c.trigger for c in self.fired]
