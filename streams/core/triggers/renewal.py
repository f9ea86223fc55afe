"""Contracts: ``renewal_after_positive_visit``, ``renewal_reminder``, ``auto_renew_confirmation``,
``auto_renew_unused``.

Contract (docs/contract.md, "Contracts"): a contract is open while its latest status is ``active``
or ``renewed`` and ``expires_at`` is in the future; cancelled and expired ones get nothing. Renewal
is a later ``contract`` event with a later ``expires_at``, or an ``auto_renew_charged`` (its
``expires_at`` is the new expiry). Usage for ``auto_renew_unused`` is matched by ``contract_id``
when the event names one, else by product name.

How this module reads it:

- Every check is made *as of* the occurrence's time (the visit's, or the due time): the contract
  version in force then is the latest contract event at or before it, so "an event stamped
  exactly at a due time is applied first" holds, and the result does not depend on when the
  clock ticked. A renewal moves the expiry, so reminders of the old expiry no longer match.
- A visit with a ``contract_id`` concerns that contract only; without one, every contract of the
  customer. One offer per (visit, contract): instance ``<visit id>|<contract id>``. A positive
  visit is kept for the lateness, so a contract event that arrives after it still completes the
  offer; a late complaint cannot withdraw an offer already made (docs/contract.md, "Lateness").
- "In the last 30 days" and "in the last 90 days" are closed intervals [t - days, t].
- Visits without a ``contract_id`` count as usage of the product named like their ``venue``.
- Reminders and the unused check have instance ``<contract id>|<expiry>|T-<days>`` and
  ``<contract id>|<expiry>|unused``; the confirmation's instance is its event id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.core.events import AutoRenewCharged, Complaint, Contract, Event, ProductUsage, Visit
from streams.core.state import (
    DAY_MS,
    MAX_CONTRACTS,
    MAX_POINTS,
    MAX_USAGE_KEYS,
    MAX_VERSIONS,
    MAX_VISITS,
    ContractState,
    CustomerState,
    Version,
    VisitState,
    any_between,
    insert_thinned,
    keep_since,
)
from streams.core.timeutil import format_ms
from streams.core.triggers import DueItem, Emitter, TriggerParams
from streams.core.triggers.api import MARKETING, SERVICE, TriggerFamily, spec

# The event types ``apply`` folds in: for any other, it returns False and changes nothing.
EVENTS = (Contract, AutoRenewCharged, Visit, ProductUsage, Complaint)
OPEN_STATUSES = ("active", "renewed")
UNUSED_CODE = -1  # the mark code of auto_renew_unused; reminders use their days_before
TOMBSTONE_MS = 365 * DAY_MS  # how long a closed contract's last word is remembered


def _ident(t: int) -> int:
    return t


def holds_data(state: CustomerState) -> bool:
    """False when there is nothing here: ``due_items`` is empty and ``prune`` changes nothing."""
    return bool(state.contracts or state.usage or state.complaints or state.visits)


# --- apply --------------------------------------------------------------------------------


def _contract(state: CustomerState, contract_id: str) -> ContractState:
    record = state.contracts.get(contract_id)
    if record is None:
        record = state.contracts[contract_id] = ContractState()
        if len(state.contracts) > MAX_CONTRACTS:
            # Evict the one that matters least: closed first, then the earliest expiry.
            def weight(k: str) -> tuple[int, int]:
                v = state.contracts[k].versions
                last = v[-1] if v else None
                is_open = last is not None and last[1] in OPEN_STATUSES
                return (1 if is_open else 0, last[2] if last else 0)

            del state.contracts[min((k for k in state.contracts if k != contract_id), key=weight)]
    return record


def _add_version(record: ContractState, version: Version) -> None:
    # The same event again, or one saying the same (time, status, expiry): a replay whose id has
    # left ``seen`` finds its version with the id pruned ("") and must not add it twice.
    if any(v[4] == version[4] or v[:3] == version[:3] for v in record.versions):
        return
    record.versions.append(version)
    record.versions.sort(key=lambda v: (v[0], v[4]))
    if len(record.versions) > MAX_VERSIONS:
        del record.versions[0]


def _add_usage(state: CustomerState, key: str, at_ms: int, params: TriggerParams) -> None:
    window = params.renewal.usage_lookback_ms
    if at_ms < state.floor_ms - window:
        return
    times = insert_thinned(state.usage.get(key, []), at_ms, _ident, window)
    state.usage[key] = times[-MAX_POINTS:]
    if len(state.usage) > MAX_USAGE_KEYS:
        del state.usage[min(state.usage, key=lambda k: (state.usage[k][-1], k))]


def apply(state: CustomerState, event: Event, params: TriggerParams) -> bool:
    """Fold contract, renewal, visit, usage and complaint events in; True if they may matter."""
    t = event.occurred_at_ms
    if isinstance(event, Contract):
        record = _contract(state, event.contract_id)
        _add_version(
            record, (t, event.status, event.expires_at_ms, int(event.auto_renew), event.event_id)
        )
        if record.versions[-1][4] == event.event_id:
            record.product = event.product  # the latest version names the product
        elif record.product is None:
            record.product = event.product
        return True
    if isinstance(event, AutoRenewCharged):
        record = _contract(state, event.contract_id)
        _add_version(record, (t, "renewed", event.expires_at_ms, -1, event.event_id))
        return True
    if isinstance(event, Visit | ProductUsage):
        name = event.venue if isinstance(event, Visit) else event.product
        key = f"c:{event.contract_id}" if event.contract_id else f"p:{name}"
        _add_usage(state, key, t, params)
        if isinstance(event, Visit) and event.sentiment == "positive" and t >= state.floor_ms:
            if all(v.event_id != event.event_id for v in state.visits):
                state.visits.append(VisitState(event.event_id, t, event.contract_id))
                state.visits.sort(key=lambda v: (v.at_ms, v.event_id))
                del state.visits[:-MAX_VISITS]
        return True
    if isinstance(event, Complaint):
        window = params.renewal.complaint_lookback_ms
        if t >= state.floor_ms - window:
            state.complaints = insert_thinned(state.complaints, t, _ident, window)[-MAX_POINTS:]
        return True
    return False


# --- as-of queries ------------------------------------------------------------------------


def version_at(record: ContractState, at_ms: int) -> tuple[str, int, bool, str] | None:
    """(status, expires_at, auto_renew, event id) in force at ``at_ms`` (events at it count)."""
    current = None
    auto_renew = True  # an auto_renew_charged with nothing before it: it auto-renews
    for t, status, expires, ar, event_id in record.versions:
        if t > at_ms:
            break
        if ar >= 0:
            auto_renew = bool(ar)
        current = (status, expires, auto_renew, event_id)
    return current


def _is_open(version: tuple[str, int, bool, str] | None, at_ms: int) -> bool:
    return version is not None and version[0] in OPEN_STATUSES and version[1] > at_ms


is_open = _is_open  # for the usage lapse family, which reads contracts as of its due times


def unused_check_in_on_day(
    state: CustomerState, contract_id: str, record: ContractState, at_ms: int, params: TriggerParams
) -> bool:
    """Whether ``auto_renew_unused`` is (or was) due for the contract on the UTC day of
    ``at_ms``: the same conditions as ``due_items`` applies, as of that due time."""
    if "auto_renew_unused" not in params.enabled:
        return False
    r = params.renewal
    day = at_ms // DAY_MS
    for expires in {v[2] for v in record.versions}:
        due = expires - r.unused_days_before * DAY_MS
        if due // DAY_MS != day:
            continue
        version = version_at(record, due)
        if version is None or not _is_open(version, due) or version[1] != expires:
            continue
        if version[2] and not _used(
            state, contract_id, record.product, due - r.usage_lookback_ms, due
        ):
            return True
    return False


def _used(state: CustomerState, contract_id: str, product: str | None, lo: int, hi: int) -> bool:
    keys = [f"c:{contract_id}"] + ([f"p:{product}"] if product else [])
    return any(any_between(state.usage.get(k, []), lo, hi) for k in keys)


# --- event-driven -------------------------------------------------------------------------


def on_event(state: CustomerState, event: Event, emitter: Emitter) -> None:
    if isinstance(event, AutoRenewCharged) and event.occurred_at_ms >= state.floor_ms:
        # Older than the floor is beyond the lateness: a replay whose decision was made long ago.
        emitter.emit(
            "auto_renew_confirmation", event.event_id, (event.event_id,), event.occurred_at_ms
        )
    if isinstance(event, Visit | Contract | AutoRenewCharged):
        _offer_renewals(state, emitter)


def _offer_renewals(state: CustomerState, emitter: Emitter) -> None:
    """Renewal offers for every kept positive visit that now qualifies (late data included)."""
    trigger = "renewal_after_positive_visit"
    if trigger not in emitter.params.enabled:
        return
    r = emitter.params.renewal
    for visit in state.visits:
        t = visit.at_ms
        if any_between(state.complaints, t - r.complaint_lookback_ms, t):
            continue  # the trigger's own exclusion: nothing is published
        for contract_id, record in state.contracts.items():
            if visit.contract_id is not None and contract_id != visit.contract_id:
                continue
            if contract_id in visit.fired:
                continue
            version = version_at(record, t)
            if not _is_open(version, t) or version is None:
                continue
            if version[1] - t > r.expires_within_ms:
                continue
            if emitter.emit(
                trigger, f"{visit.event_id}|{contract_id}", (visit.event_id, version[3]), t
            ):
                visit.fired.append(contract_id)


# --- time-based ---------------------------------------------------------------------------


def due_items(state: CustomerState, params: TriggerParams, *, named: bool = True) -> list[DueItem]:
    r = params.renewal
    reminders = "renewal_reminder" in params.enabled
    unused = "auto_renew_unused" in params.enabled
    if not (reminders or unused):
        return []
    items: list[DueItem] = []
    for contract_id, record in state.contracts.items():
        marks = set(record.marks)
        for expires in sorted({v[2] for v in record.versions}):
            checks: list[tuple[int, str, bool]] = []
            if reminders:
                days_before = r.reminder_days_by_product.get(record.product or "", r.reminder_days)
                checks += [(days, "renewal_reminder", False) for days in days_before]
            if unused:
                checks.append((r.unused_days_before, "auto_renew_unused", True))
            for days, trigger, wants_auto_renew in checks:
                due = expires - days * DAY_MS
                code = UNUSED_CODE if wants_auto_renew else days
                if due < state.floor_ms or (code, due) in marks:
                    continue
                version = version_at(record, due)
                if version is None or not _is_open(version, due) or version[1] != expires:
                    continue  # not in force then: renewed (other expiry), closed, or not yet known
                if version[2] != wants_auto_renew:
                    continue
                if wants_auto_renew and _used(
                    state, contract_id, record.product, due - r.usage_lookback_ms, due
                ):
                    continue
                suffix = "unused" if wants_auto_renew else f"T-{days}"

                def mark(record: ContractState = record, code: int = code, due: int = due) -> None:
                    record.marks.append((code, due))

                items.append(
                    DueItem(
                        due,
                        trigger,
                        f"{contract_id}|{format_ms(expires)}|{suffix}" if named else "",
                        (version[3],),
                        mark,
                    )
                )
    return items


# --- pruning --------------------------------------------------------------------------------


def prune(state: CustomerState, params: TriggerParams) -> None:
    floor = state.floor_ms
    r = params.renewal
    for contract_id in list(state.contracts):
        record = state.contracts[contract_id]
        versions = record.versions  # by time
        # An auto_renew_charged inherits auto_renew from the version before it: settle that for
        # versions before the floor (final by now) before the older ones are dropped.
        for v in versions:
            if v[0] >= floor:
                break
            if v[3] < 0:
                versions = _resolved(versions, floor)
                break
        # As-of lookups at or after the floor need the versions since it plus the one before.
        if len(versions) > 1 and versions[1][0] < floor:
            versions = keep_since(versions, _at, floor)
        record.versions = versions
        if record.marks:
            record.marks = [m for m in record.marks if m[1] >= floor]
        last = versions[-1] if versions else None
        if last is None:
            del state.contracts[contract_id]
        elif last[0] < floor and (last[1] not in OPEN_STATUSES or last[2] < floor):
            if max(last[0], last[2]) < floor - TOMBSTONE_MS:
                del state.contracts[contract_id]  # closed for a year: no replay is that old
                continue
            # Closed or expired before anything can be due: only the last word stays (without
            # its id), so replaying older events of the contract cannot reopen it.
            record.versions = [(*last[:4], "")]
            record.marks = []
    for key in list(state.usage):
        times = keep_since(state.usage[key], _ident, floor - r.usage_lookback_ms)
        if times and times[-1] >= floor - r.usage_lookback_ms:
            state.usage[key] = times
        else:
            del state.usage[key]
    state.complaints = keep_since(state.complaints, _ident, floor - r.complaint_lookback_ms)
    if state.visits and state.visits[0].at_ms < floor:  # by time
        state.visits = [v for v in state.visits if v.at_ms >= floor]


def _at(version: Version) -> int:
    return version[0]


def _resolved(versions: list[Version], floor: int) -> list[Version]:
    """``versions`` with the inherited auto_renew (-1) of those before ``floor`` settled."""
    resolved: list[Version] = []
    auto_renew = 1
    for version in versions:
        t, status, expires, ar, event_id = version
        if ar >= 0:
            auto_renew = ar
        elif t < floor:
            version = (t, status, expires, auto_renew, event_id)
        resolved.append(version)
    return resolved


class RenewalFamily(TriggerFamily):
    """Contracts: the renewal offer, reminders, and the two auto-renewal service messages."""

    name = "renewal"
    triggers = (
        spec("renewal_after_positive_visit", "renewal", "renewal_offer", "email", MARKETING, 80,
             expires_within_days=60, complaint_lookback_days=30),
        spec("renewal_reminder", "renewal", "renewal_reminder", "email", MARKETING, 50,
             days_before=[30, 7], days_before_by_product={}),
        spec("auto_renew_confirmation", "renewal", "payment_confirmation", "email", SERVICE,
             None),
        spec("auto_renew_unused", "renewal", "usage_check_in", "email", SERVICE, None,
             days_before=30, usage_lookback_days=90),
    )  # fmt: skip
    events = EVENTS
    uses_slice = False
    apply = staticmethod(apply)
    on_event = staticmethod(on_event)
    due_items = staticmethod(due_items)
    holds_data = staticmethod(holds_data)
    prune = staticmethod(prune)

    def configure(self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int) -> None:
        return None  # TriggerParams.renewal


FAMILY = RenewalFamily()
