"""The pure core (``streams/core/engine.py``) with its trigger parameters bound.

The shell uses the core through this object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streams.core import engine as core
from streams.core import goals
from streams.core.decisions import Candidate
from streams.core.events import Event
from streams.core.state import CustomerState
from streams.core.triggers import TriggerParams

_NO_OUTCOMES: tuple[tuple[goals.Resolved, ...], int] = ((), 0)


class BoundCore:
    """``streams.kafka.processor.CoreAdapter`` over ``CustomerState`` and ``TriggerParams``."""

    def __init__(self, params: TriggerParams) -> None:
        self.params = params

    def load(self, raw: bytes) -> CustomerState:
        return CustomerState.from_bytes(raw)

    def dump(self, state: CustomerState) -> bytes:
        return state.to_bytes()

    def applied_offset(self, state: CustomerState, kind: str) -> int:
        return state.applied_offsets.get(kind, -1)

    def with_applied_offset(self, state: CustomerState, kind: str, offset: int) -> CustomerState:
        # step() returned a fresh copy (or, for a duplicate, the loaded record): ours to change.
        state.applied_offsets[kind] = offset
        return state

    def segment(self, state: CustomerState) -> str | None:
        return None if state.segment is None else state.segment[1]

    def step(
        self, state: CustomerState | None, event: Event, now_ms: int
    ) -> tuple[CustomerState, list[Candidate], bool]:
        # The shell hands over records it has just decoded: no defensive copy needed.
        return core.step_parts(state, event, now_ms, self.params, owned=True)

    def advance(self, state: CustomerState, now_ms: int) -> tuple[CustomerState, list[Candidate]]:
        result = core.advance(state, now_ms, self.params, owned=True)
        return result.state, result.candidates

    def next_due_ms(self, state: CustomerState) -> int | None:
        return core.next_due_ms(state)

    def business_unit(self, state: CustomerState) -> str | None:
        return None if state.business_unit is None else state.business_unit[1]

    def timezone(self, state: CustomerState) -> str | None:
        return None if state.timezone is None else state.timezone[1]

    def defer(self, state: CustomerState, candidate: Candidate, until_ms: int, at_ms: int) -> None:
        core.defer(state, candidate, until_ms, at_ms)

    def take_deferred(self, state: CustomerState, now_ms: int) -> list[tuple[Candidate, int, int]]:
        return core.take_deferred(state, now_ms)

    def goals_step(
        self, state: CustomerState, decided: list[Candidate], now_ms: int
    ) -> tuple[Sequence[goals.Resolved], int]:
        """Keep the pending goals of the candidates decided at ``now_ms``, then take the goals
        resolved so far and the number the bound dropped (for the shell to publish and count)."""
        if decided:
            core.track_goals(state, decided, now_ms, self.params)
        elif not goals.GOALS.holds_data(state):
            return _NO_OUTCOMES  # most records: no pending goal, nothing to take
        return goals.take_outcomes(state), goals.take_dropped(state)

    def tracks_goals(self) -> bool:
        """Whether any trigger has an enabled goal."""
        return bool(self.params.goals)

    def describe(self, trigger: str) -> tuple[str, str] | None:
        """A trigger's action and default channel (as its candidates carry them); None for a
        trigger no longer installed (a plugin's pending goal outlives its removal)."""
        spec = self.params.specs.get(trigger)
        return None if spec is None else (spec.action, spec.channel)


def build_core(config: Mapping[str, Any]) -> BoundCore:
    """The core for a validated configuration (``streams.config.build_config``)."""
    return BoundCore(TriggerParams.from_config(config))
