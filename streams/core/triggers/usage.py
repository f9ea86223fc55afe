"""Usage lapse for subscriptions: ``usage_lapsed``.

Contract (docs/contract.md, "Usage lapse"): an open contract that has had at least one
``product_usage`` or ``visit`` (matched by ``contract_id`` when the event names one, else by
product: a visit's ``venue``) and then none for ``inactive_days`` (default 60; per product
``inactive_days_by_product``) gives ``usage_lapsed``, once per lapse. Contracts never used and
contracts closed by then get nothing. Where it would fall on the same UTC day as an
``auto_renew_unused`` of the same contract, the service check-in wins and the lapse does not fire.

How this module reads it:

- A lapse is an occurrence per last usage ``u`` before a gap longer than the lapse window: due at
  ``u + inactive_days`` (a usage stamped exactly then is applied first and cancels it); instance
  ``<contract id>|<u>|lapsed``. The contract is read as of the due time (``renewal.version_at``).
- The family keeps its own state slice: per usage key (``c:<contract>`` / ``p:<product>``) the
  usage times, thinned for the narrowest lapse window configured (thinning keeps every gap
  longer than that window, which is what a lapse is), and the lapses fired. Contracts are the
  renewal family's record (``state.contracts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.events import Event, ProductUsage, Visit
from streams.core.state import DAY_MS, CustomerState, insert_thinned, keep_since
from streams.core.timeutil import format_ms
from streams.core.triggers import DueItem, Emitter, TriggerParams, renewal
from streams.core.triggers.api import MARKETING, TriggerFamily, spec

TRIGGER = "usage_lapsed"
MAX_KEYS = 12
MAX_TIMES = 8  # per key, after thinning
MAX_MARKS = 16
# How long a lapsed key's last usage is remembered after its lapse can no longer fire: the price
# rise trigger asks whether the customer is in a usage lapse (``lapsed_at``).
LAPSE_MEMORY_MS = 365 * DAY_MS


def _ident(t: int) -> int:
    return t


@dataclass(frozen=True, slots=True)
class UsageLapseParams:
    inactive_ms: int
    inactive_ms_by_product: Mapping[str, int]
    thin_ms: int  # the narrowest window: thinning with it is exact for every product
    widest_ms: int

    def window(self, product: str | None) -> int:
        return self.inactive_ms_by_product.get(product or "", self.inactive_ms)


@dataclass(slots=True)
class UsageSlice:
    usage: dict[str, list[int]] = field(default_factory=dict)
    marks: list[tuple[str, int]] = field(default_factory=list)  # (contract id, last usage)


class UsageLapseFamily(TriggerFamily):
    """``usage_lapsed`` (see the module's docstring)."""

    name = "usage_lapse"
    triggers = (
        spec("usage_lapsed", "usage_lapse", "usage_win_back", "email", MARKETING, 45,
             inactive_days=60, inactive_days_by_product={}),
    )  # fmt: skip
    events = (ProductUsage, Visit)

    def configure(
        self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int
    ) -> UsageLapseParams:
        section = sections[TRIGGER]
        default = int(section["inactive_days"] * DAY_MS)
        by_product = {p: int(d * DAY_MS) for p, d in section["inactive_days_by_product"].items()}
        windows = [default, *by_product.values()]
        return UsageLapseParams(default, by_product, min(windows), max(windows))

    # --- slice ----------------------------------------------------------------------------

    def new_slice(self) -> UsageSlice:
        return UsageSlice()

    def encode_slice(self, data: UsageSlice) -> Any:
        if not data.usage and not data.marks:
            return None
        out: dict[str, Any] = {}
        if data.usage:
            out["u"] = data.usage
        if data.marks:
            out["m"] = [list(m) for m in data.marks]
        return out

    def decode_slice(self, version: int, payload: Any) -> UsageSlice | None:
        if version != 1:
            return None
        return UsageSlice(
            {k: list(v) for k, v in payload.get("u", {}).items()},
            [(c, u) for c, u in payload.get("m", [])],
        )

    # --- hooks ------------------------------------------------------------------------------

    def apply(self, state: CustomerState, event: Event, params: TriggerParams) -> bool:
        if TRIGGER not in params.enabled or not isinstance(event, ProductUsage | Visit):
            return False
        p: UsageLapseParams = self.parameters(params)
        t = event.occurred_at_ms
        if t < state.floor_ms - p.widest_ms:
            return False  # any lapse after it was due before the floor
        name = event.venue if isinstance(event, Visit) else event.product
        key = f"c:{event.contract_id}" if event.contract_id else f"p:{name}"
        data: UsageSlice = self.slice(state)
        times = insert_thinned(data.usage.get(key, []), t, _ident, p.thin_ms)
        data.usage[key] = times[-MAX_TIMES:]
        if len(data.usage) > MAX_KEYS:
            del data.usage[min(data.usage, key=lambda k: (data.usage[k][-1], k))]
        return False  # nothing fires on a usage event: a lapse is time-based

    def due_items(
        self, state: CustomerState, params: TriggerParams, *, named: bool = True
    ) -> list[DueItem]:
        if TRIGGER not in params.enabled or not state.contracts:
            return []  # no contract, no lapse (the usage is kept for one that comes later)
        p: UsageLapseParams = self.parameters(params)
        data: UsageSlice = self.slice(state)
        marks = set(data.marks)
        items: list[DueItem] = []
        for contract_id, record in state.contracts.items():
            times = sorted(
                set(data.usage.get(f"c:{contract_id}", []))
                | (set(data.usage.get(f"p:{record.product}", [])) if record.product else set())
            )
            window = p.window(record.product)
            for i, u in enumerate(times):
                due = u + window
                if i + 1 < len(times) and times[i + 1] <= due:
                    continue  # used again in time: no lapse after u
                if due < state.floor_ms or (contract_id, u) in marks:
                    continue
                version = renewal.version_at(record, due)
                if version is None or not renewal.is_open(version, due):
                    continue  # closed (or not yet known) by then
                if renewal.unused_check_in_on_day(state, contract_id, record, due, params):
                    continue  # the service check-in of that day wins

                def mark(
                    data: UsageSlice = data, contract_id: str = contract_id, u: int = u
                ) -> None:
                    data.marks.append((contract_id, u))
                    del data.marks[:-MAX_MARKS]

                items.append(
                    DueItem(
                        due,
                        TRIGGER,
                        f"{contract_id}|{format_ms(u)}|lapsed" if named else "",
                        (version[3],),
                        mark,
                    )
                )
        return items

    def on_event(self, state: CustomerState, event: Event, emitter: Emitter) -> None:
        return None

    def prune(self, state: CustomerState, params: TriggerParams) -> None:
        p: UsageLapseParams = self.parameters(params)
        data: UsageSlice = self.slice(state)
        cutoff = state.floor_ms - p.widest_ms
        for key in list(data.usage):
            times = keep_since(data.usage[key], _ident, cutoff)
            if times and times[-1] >= cutoff:
                data.usage[key] = times
            elif times and times[-1] >= cutoff - LAPSE_MEMORY_MS:
                data.usage[key] = times[-1:]  # lapsed: only "last used then" is asked of it
            else:
                del data.usage[key]
        data.marks = [m for m in data.marks if m[1] >= cutoff]
        if not data.usage and not data.marks:
            self.drop_slice(state)


FAMILY = UsageLapseFamily()


def lapsed_at(state: CustomerState, params: TriggerParams, at_ms: int) -> bool:
    """Whether one of the customer's contracts is in a usage lapse at ``at_ms``: used, and its
    last usage at or before then at least its lapse window before (False when ``usage_lapsed``
    is disabled: nothing is kept then)."""
    if TRIGGER not in params.enabled or not FAMILY.holds_data(state):
        return False
    p: UsageLapseParams = FAMILY.parameters(params)
    data: UsageSlice = FAMILY.slice(state)
    for contract_id, record in state.contracts.items():
        keys = [f"c:{contract_id}"] + ([f"p:{record.product}"] if record.product else [])
        last = max((t for k in keys for t in data.usage.get(k, []) if t <= at_ms), default=None)
        if last is not None and at_ms - last >= p.window(record.product):
            return True
    return False
