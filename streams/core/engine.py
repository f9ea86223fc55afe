"""The pure core the Faust shell calls: ``step`` for an event, ``advance`` for the clock.

No Faust, Redis or aiokafka here. Both functions return a new state (the input is never
mutated) and the candidates the call fired; ``next_due_ms`` says when ``advance`` could next fire
something for this customer, so the shell keeps one due-index entry per customer.

Contract for the shell:

- ``now_ms`` is the processor clock (event mode: the partition's stream time). An event may be up
  to the allowed lateness older than it and still takes part in every trigger.
- Call ``step`` for an event before ``advance`` with the same ``now`` ("an event stamped exactly
  at a due time is applied first"). Time-based occurrences are evaluated as of their due time
  from event times, so it does not matter how often ``advance`` is called, only that it is
  called once the clock reaches ``next_due_ms``. After a ``step`` the due time may already be
  <= now (a late event completed an overdue occurrence): call ``advance`` then too.
- Every occurrence fires at most once; its ``instance`` is stable, so decision ids repeat on a
  replay. A repeated ``event_id`` returns the state unchanged with ``duplicate=True``.
- ``state.applied_offsets`` belongs to the shell and is carried through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.core import goals
from streams.core.decisions import Candidate
from streams.core.events import Event, Profile
from streams.core.state import DAY_MS, CustomerState, id_hash
from streams.core.triggers import DueItem, Emitter, TriggerParams
from streams.core.triggers.api import ORPHAN_KEEP_MS


@dataclass(frozen=True, slots=True)
class StepResult:
    """The state after the call, the candidates it fired, and whether the event was a repeat."""

    state: CustomerState
    candidates: list[Candidate] = field(default_factory=list)
    duplicate: bool = False


def step(
    state: CustomerState | None,
    event: Event,
    now_ms: int,
    params: TriggerParams,
    *,
    owned: bool = False,
) -> StepResult:
    """Apply one event; return the new state and the event-driven candidates it completes.

    ``state`` is left as it was, unless ``owned``: a caller that holds the only reference (a
    record just decoded) gives it up, and it is updated in place instead of copied.
    """
    return StepResult(*step_parts(state, event, now_ms, params, owned=owned))


def step_parts(
    state: CustomerState | None,
    event: Event,
    now_ms: int,
    params: TriggerParams,
    *,
    owned: bool = False,
) -> tuple[CustomerState, list[Candidate], bool]:
    """``step`` as a plain (state, candidates, duplicate) tuple: what the shell unpacks anyway,
    without building the frozen ``StepResult`` for every event."""
    if state is None:
        # positional (customer_id, floor_ms): a dataclass's __init__ is slower with keywords
        state = CustomerState(event.customer_id, now_ms - params.lateness_ms)
        owned = True
    event_hash = id_hash(event.event_id)
    if state.has_seen(event_hash):
        return state, [], True
    new = state if owned else state.copy()
    new.remember(event_hash, event.occurred_at_ms)
    _apply_profile(new, event)
    emitter = Emitter(new, params, now_ms)
    for family in params.registry.families_for(type(event)):
        if family.apply(new, event, params):
            family.on_event(new, event, emitter)
    # Pending goals live in a slice: a record without slices has none to convert.
    if (new.slices or new.ext) and isinstance(event, goals.GOAL_EVENTS):
        goals.observe(new, event)
    _settle(new, params, now_ms)
    return new, _ordered(emitter.candidates), False


def advance(
    state: CustomerState, now_ms: int, params: TriggerParams, *, owned: bool = False
) -> StepResult:
    """Fire every time-based occurrence due at or before ``now_ms``; prune what is past.

    ``owned`` as for ``step``.
    """
    new = state if owned else state.copy()
    emitter = Emitter(new, params, now_ms)
    for item in sorted(due_items(new, params), key=lambda i: (i.due_ms, i.trigger, i.instance)):
        if item.due_ms > now_ms:
            break
        emitter.emit(item.trigger, item.instance, item.evidence, item.due_ms)
        item.mark()  # also when the hash says it fired before: the family's own mark catches up
    goals.expire(new, now_ms, params.lateness_ms)
    _settle(new, params, now_ms)
    return StepResult(new, _ordered(emitter.candidates))


def next_due_ms(state: CustomerState | None) -> int | None:
    """The earliest time at which ``advance`` could fire something or a deferred decision
    falls due (None: nothing pending)."""
    if state is None:
        return None
    if not state.deferred:
        return state.due_ms
    until = min(u for u, _, _ in state.deferred)
    return until if state.due_ms is None else min(until, state.due_ms)


def track_goals(
    state: CustomerState, candidates: list[Candidate], decided_at_ms: int, params: TriggerParams
) -> None:
    """Keep the pending goal of each candidate decided at ``decided_at_ms`` (every arm: the
    goal is the same whatever the policy decides) and move the due time to its expiry."""
    tracked = False
    for c in candidates:
        tracked |= goals.track(
            state, c.trigger, c.decision_id, c.instance, decided_at_ms, params.goals
        )
    if tracked:
        expiry = goals.next_expiry_ms(state, params.lateness_ms)
        if expiry is not None and (state.due_ms is None or expiry < state.due_ms):
            state.due_ms = expiry


def defer(state: CustomerState, candidate: Candidate, until_ms: int, at_ms: int) -> None:
    """Keep ``candidate`` in ``state`` until ``until_ms`` (quiet hours); once per decision id."""
    if all(c.decision_id != candidate.decision_id for _, _, c in state.deferred):
        state.deferred.append((until_ms, at_ms, candidate))


def take_deferred(state: CustomerState, now_ms: int) -> list[tuple[Candidate, int, int]]:
    """Remove and return the deferred candidates due at ``now_ms``: (candidate, deferred at,
    until), in the order they were deferred."""
    due = [(c, at, u) for u, at, c in state.deferred if u <= now_ms]
    if due:
        state.deferred = [d for d in state.deferred if d[0] > now_ms]
    return due


def due_items(state: CustomerState, params: TriggerParams) -> list[DueItem]:
    """Every time-based occurrence valid as of its due time and not fired yet."""
    items: list[DueItem] = []
    for family in params.registry.busy(state):
        items.extend(family.due_items(state, params))
    return items


def _settle(state: CustomerState, params: TriggerParams, now_ms: int) -> None:
    """Move the floor, prune, and cache the next due time.

    The floor trails both the clock and the earliest pending occurrence by the lateness, so
    pruning never loses an occurrence that is pending (even when ``advance`` is late) nor data an
    event within the lateness could still need.
    """
    # A family without data has no due items and nothing to prune: it is skipped.
    busy = params.registry.busy(state)
    due = None
    for family in busy:
        for item in family.due_items(state, params, named=False):
            if due is None or item.due_ms < due:
                due = item.due_ms
    horizon = now_ms if due is None else min(now_ms, due)
    state.floor_ms = max(state.floor_ms, horizon - params.lateness_ms)
    for family in busy:
        family.prune(state, params)
    floor = state.floor_ms
    # Most steps find nothing below the floor here: a list is rebuilt only when it has some.
    for s in state.seen:
        if s[1] + DAY_MS <= floor:  # stamped with their day
            state.seen = [s for s in state.seen if s[1] + DAY_MS > floor]
            break
    for f in state.fired:
        if f[1] < floor:
            state.fired = [f for f in state.fired if f[1] >= floor]
            break
    # A pending goal's expiry is due too, but does not hold the floor back: the floor is what
    # the triggers may still need, and a goal needs none of their data. (A record without
    # slices has no goals slice.)
    if state.slices or state.ext:
        expiry = goals.next_expiry_ms(state, params.lateness_ms)
        if expiry is not None and (due is None or expiry < due):
            due = expiry
    state.due_ms = due
    if state.ext:
        _orphans(state, params)


def _orphans(state: CustomerState, params: TriggerParams) -> None:
    """Slices of families that are not installed: kept unread for a while, then dropped."""
    installed = params.registry.family_names
    for name, entry in list(state.ext.items()):
        if name in installed or name == goals.SLICE:
            continue
        if len(entry) < 3:
            state.ext[name] = [entry[0], entry[1], state.floor_ms]
        elif entry[2] + ORPHAN_KEEP_MS < state.floor_ms:
            del state.ext[name]


def _apply_profile(state: CustomerState, event: Event) -> None:
    """Profile fields: the latest by event time wins. (Consent and unsubscribes are the contact
    ledger's: the policy reads them there.)"""
    if isinstance(event, Profile):
        t = event.occurred_at_ms
        for attr in ("segment", "business_unit", "timezone"):
            value = getattr(event, attr)
            current = getattr(state, attr)
            if value is not None and (current is None or t >= current[0]):
                setattr(state, attr, (t, value))


def _ordered(candidates: list[Candidate]) -> list[Candidate]:
    if len(candidates) < 2:
        return candidates  # the emitter's own list: nothing else holds it
    return sorted(candidates, key=lambda c: (c.triggered_at_ms, -c.priority, c.trigger, c.instance))
