"""The trigger API: what a trigger family declares, and the hooks the core calls on it.

A *trigger family* is the unit the registry (``streams.core.catalogue``) knows: one or more
triggers that share the data they look at and the computation over it (the three savings-drop
triggers share one drop). The built-in families and a plugin's are the same kind of object, a
``TriggerFamily``:

- ``name`` (the family's, unique), ``triggers`` (its catalogue entries: ``TriggerSpec``, made
  with ``spec``), ``events`` (the event types ``apply`` folds in; others are never shown to it),
  ``shared_parameters`` (parameters its triggers must agree on);
- ``validate(sections)`` checks the family's configuration beyond the types the defaults imply
  (a list of messages, each naming the dotted key); ``configure(sections, lateness_ms)`` turns
  the validated sections (trigger name -> parameters) into the typed parameters the hooks read
  (``family.parameters(params)``);
- the hooks, all pure apart from changing the state copy they are handed:
  ``apply(state, event, params) -> bool`` folds an event into the family's data (True: it may
  matter, ask ``on_event``), ``on_event(state, event, emitter)`` emits the occurrences the event
  completes, ``due_items(state, params, named=True)`` lists the time-based occurrences valid as of
  their due time and not fired yet, ``holds_data(state)`` says whether there is anything to look
  at, ``prune(state, params)`` drops what no trigger can look at any more (relative to
  ``state.floor_ms``), ``retention_ms(params)`` how long a fired occurrence must be remembered;
- its *state slice*: the bounded data it keeps per customer, an object of its own choosing
  (``new_slice``), written into the customer record by ``encode_slice`` (JSON-able; None or empty
  keeps nothing) under the family's name with ``state_version``, and read back by
  ``decode_slice(version, payload)`` (return None to start afresh from a version it cannot read).
  ``family.slice(state)`` gives the slice (decoded on first use in a call), ``drop_slice`` removes
  it. The slice must stay bounded (a cap per collection, pruned by time in ``prune``).

The first four built-in families (savings, renewal, reactivation, recurrence) keep their data in
the record's own fields (their format predates this API, and records written by earlier versions
must still load, byte for byte); every other family, built in or not, uses a slice.
A slice whose family is not installed is kept unread for ``ORPHAN_KEEP_MS`` of stream time, so a
plugin reinstalled soon finds it again, then dropped.

No Faust, Redis or aiokafka here, ever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from streams.core.goals import GoalSpec
from streams.core.state import DAY_MS, CustomerState

if TYPE_CHECKING:
    from streams.core.events import Event
    from streams.core.triggers import Emitter, TriggerParams

MARKETING = "marketing"
SERVICE = "service"
CATEGORIES = (MARKETING, SERVICE)
# The priority of every service trigger: service messages go first.
SERVICE_PRIORITY = 100
# How long a slice of a family that is not installed is kept, unread, before it is dropped.
ORPHAN_KEEP_MS = 30 * DAY_MS


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """One trigger of the catalogue."""

    name: str
    family: str
    action: str
    channel: str
    category: str
    # None for service triggers: they all share the configuration's ``priorities.service``.
    priority: int | None
    parameters: Mapping[str, Any]
    # What the trigger's contact is meant to cause (``streams.core.goals``); None: no goal of
    # its own (the built-in triggers' goals are the goals module's table).
    goal: GoalSpec | None = None


def spec(
    name: str,
    family: str,
    action: str,
    channel: str,
    category: str,
    priority: int | None,
    **parameters: Any,
) -> TriggerSpec:
    """A catalogue entry; ``enabled`` defaults to True (a goal: ``with_goal``)."""
    parameters = {"enabled": True, **parameters}
    return TriggerSpec(
        name, family, action, channel, category, priority, MappingProxyType(parameters)
    )


def with_goal(trigger: TriggerSpec, goal: GoalSpec | None) -> TriggerSpec:
    """``trigger`` with its goal (``streams.core.goals.GoalSpec``; None: no goal)."""
    return replace(trigger, goal=goal)


@dataclass(frozen=True, slots=True)
class DueItem:
    """A time-based occurrence, valid as of its due time; ``mark`` records it as fired."""

    due_ms: int
    trigger: str
    instance: str
    evidence: tuple[str, ...]
    mark: Callable[[], None]


class TriggerFamily:
    """One registered unit of triggers (see the module's docstring). Subclass and override."""

    name: str = ""
    triggers: tuple[TriggerSpec, ...] = ()
    events: tuple[type, ...] = ()
    shared_parameters: tuple[str, ...] = ()
    state_version: int = 1
    # False only for the built-in families whose data lives in the record's own fields: the
    # core skips the others at once for a record without any slice.
    uses_slice: bool = True

    # --- configuration ----------------------------------------------------------------

    def validate(self, sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Messages for what is wrong in the family's sections (types are checked already)."""
        return []

    def configure(self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int) -> Any:
        """The typed parameters the hooks read (default: the sections themselves)."""
        return sections

    def retention_ms(self, params: TriggerParams) -> int:
        """How long after it fired an occurrence must still be recognised (late data)."""
        return 0

    def parameters(self, params: TriggerParams) -> Any:
        """This family's configured parameters (what ``configure`` returned)."""
        return params.families[self.name]

    def enabled(self, params: TriggerParams) -> bool:
        """Whether any of the family's triggers is enabled (else it should keep nothing)."""
        return any(t.name in params.enabled for t in self.triggers)

    # --- hooks --------------------------------------------------------------------------

    def apply(self, state: CustomerState, event: Event, params: TriggerParams) -> bool:
        return False

    def on_event(self, state: CustomerState, event: Event, emitter: Emitter) -> None:
        return None

    def due_items(
        self, state: CustomerState, params: TriggerParams, *, named: bool = True
    ) -> list[DueItem]:
        return []

    def holds_data(self, state: CustomerState) -> bool:
        return self.name in state.slices or self.name in state.ext

    def prune(self, state: CustomerState, params: TriggerParams) -> None:
        return None

    # --- the state slice ----------------------------------------------------------------

    def new_slice(self) -> Any:
        return {}

    def encode_slice(self, data: Any) -> Any:
        return data

    def decode_slice(self, version: int, payload: Any) -> Any | None:
        return payload if version == self.state_version else None

    def slice(self, state: CustomerState) -> Any:
        """The family's slice of ``state`` (created empty when there is none)."""
        live = state.slices.get(self.name)
        if live is not None:
            return live[1]
        raw = state.ext.pop(self.name, None)
        data = None if raw is None else self.decode_slice(raw[0], raw[1])
        if data is None:
            data = self.new_slice()
        state.slices[self.name] = (self, data)
        return data

    def drop_slice(self, state: CustomerState) -> None:
        state.slices.pop(self.name, None)
        state.ext.pop(self.name, None)
