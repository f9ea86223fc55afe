"""Example trigger plugin: ``complaint_streak`` and ``complaint_check_in``.

- ``complaint_streak`` (event-driven): the customer's ``count``-th complaint (default 3) within
  ``window_days`` (default 30, both ends inclusive) fires at that complaint: a service recovery
  call. Once per streak: the instance is the id of the complaint that completed it, and the
  complaints of a streak that fired do not count towards the next one.
- ``complaint_check_in`` (time-based): ``after_days`` (default 14) after a complaint with no
  further complaint by then, a check-in e-mail. Due at complaint + ``after_days``; a complaint
  stamped exactly then is applied first and cancels it (it starts its own).

Both ship disabled: a deployment turns them on in its configuration
(``triggers.complaint_streak.enabled: true``). The family keeps its own state slice: the
complaint times of the last ``window_days`` + lateness (at most ``MAX_COMPLAINTS``), and the
times of complaints whose streak or check-in fired. It imports only the trigger API.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.events import Complaint, Event
from streams.core.state import DAY_MS, CustomerState
from streams.core.triggers import DueItem, Emitter, TriggerParams
from streams.core.triggers.api import MARKETING, SERVICE, TriggerFamily, spec

MAX_COMPLAINTS = 16


@dataclass(frozen=True, slots=True)
class Params:
    count: int
    window_ms: int
    after_ms: int
    lateness_ms: int


@dataclass(slots=True)
class Slice:
    complaints: list[tuple[int, str]] = field(default_factory=list)  # (time, event id), sorted
    used: list[int] = field(default_factory=list)  # times of complaints in a fired streak
    checked: list[int] = field(default_factory=list)  # complaint times whose check-in fired


class ComplaintFamily(TriggerFamily):
    name = "complaints"
    triggers = (
        spec("complaint_streak", "complaints", "service_recovery_call", "phone", SERVICE, None,
             enabled=False, count=3, window_days=30),
        spec("complaint_check_in", "complaints", "complaint_check_in", "email", MARKETING, 35,
             enabled=False, after_days=14),
    )  # fmt: skip
    events = (Complaint,)
    state_version = 1

    def validate(self, sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
        if sections["complaint_streak"]["count"] < 2:
            return ["triggers.complaint_streak.count: a streak needs at least 2 complaints"]
        return []

    def configure(self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int) -> Params:
        streak = sections["complaint_streak"]
        return Params(
            count=int(streak["count"]),
            window_ms=int(streak["window_days"] * DAY_MS),
            after_ms=int(sections["complaint_check_in"]["after_days"] * DAY_MS),
            lateness_ms=lateness_ms,
        )

    # --- the slice: compact JSON, times in ms --------------------------------------------

    def new_slice(self) -> Slice:
        return Slice()

    def encode_slice(self, data: Slice) -> Any:
        if not data.complaints and not data.used and not data.checked:
            return None
        return [[list(c) for c in data.complaints], data.used, data.checked]

    def decode_slice(self, version: int, payload: Any) -> Slice | None:
        if version != 1:
            return None  # a version this code cannot read: start afresh
        complaints, used, checked = payload
        return Slice([(t, i) for t, i in complaints], list(used), list(checked))

    # --- hooks -----------------------------------------------------------------------------

    def apply(self, state: CustomerState, event: Event, params: TriggerParams) -> bool:
        if not self.enabled(params) or not isinstance(event, Complaint):
            return False
        p: Params = self.parameters(params)
        t = event.occurred_at_ms
        if t < state.floor_ms - p.window_ms:
            return False  # older than anything a streak or check-in can still look at
        data: Slice = self.slice(state)
        entry = (t, event.event_id)
        if entry not in data.complaints:
            bisect.insort(data.complaints, entry)
            del data.complaints[:-MAX_COMPLAINTS]
        return True

    def on_event(self, state: CustomerState, event: Event, emitter: Emitter) -> None:
        p: Params = self.parameters(emitter.params)
        data: Slice = self.slice(state)
        free = [c for c in data.complaints if c[0] not in data.used]
        for i in range(len(free) - p.count + 1):
            streak = free[i : i + p.count]
            if streak[-1][0] - streak[0][0] <= p.window_ms:
                last_t, last_id = streak[-1]
                if emitter.emit("complaint_streak", last_id, tuple(c[1] for c in streak), last_t):
                    data.used.extend(c[0] for c in streak)
                return

    def due_items(
        self, state: CustomerState, params: TriggerParams, *, named: bool = True
    ) -> list[DueItem]:
        if "complaint_check_in" not in params.enabled:
            return []
        p: Params = self.parameters(params)
        data: Slice = self.slice(state)
        items = []
        times = [c[0] for c in data.complaints]
        for i, (t, event_id) in enumerate(data.complaints):
            due = t + p.after_ms
            if t in data.checked or due < state.floor_ms:
                continue
            if i + 1 < len(times) and times[i + 1] <= due:
                continue  # another complaint by then: that one's check-in speaks for both

            def mark(data: Slice = data, t: int = t) -> None:
                data.checked.append(t)

            items.append(
                DueItem(due, "complaint_check_in", event_id if named else "", (event_id,), mark)
            )
        return items

    def prune(self, state: CustomerState, params: TriggerParams) -> None:
        p: Params = self.parameters(params)
        data: Slice = self.slice(state)
        keep = state.floor_ms - max(p.window_ms, p.after_ms)
        data.complaints = [c for c in data.complaints if c[0] >= keep]
        data.used = [t for t in data.used if t >= keep]
        data.checked = [t for t in data.checked if t >= keep]
        if not data.complaints and not data.used and not data.checked:
            self.drop_slice(state)

    def retention_ms(self, params: TriggerParams) -> int:
        p: Params = self.parameters(params)
        return 2 * p.lateness_ms + p.window_ms + p.after_ms


FAMILY = ComplaintFamily()
