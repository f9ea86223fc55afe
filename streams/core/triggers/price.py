"""Company-caused risk: ``price_increase_at_risk``.

Contract (docs/contract.md, "Price rise"): a ``contract`` event that raises the contract's
``price`` by at least ``min_increase`` (default 0.1: 10 %) over its previous price, for a customer
with a complaint in the ``complaint_lookback_days`` (180) up to the event or a usage lapse (as
``usage_lapsed`` reads it) at that moment, gives ``price_increase_at_risk`` at the event.

How this module reads it:

- The previous price is the latest price of the same contract stamped before the event (by event
  time); the event's own status must be open (``active`` or ``renewed``). A contract event
  without a price changes nothing here.
- "In the last 180 days" is the closed interval [t - 180 days, t]. A usage lapse: one of the
  customer's contracts has been used, and its last usage at or before t is at least its lapse
  window before t (``usage_lapsed`` enabled: its state is what is read).
- Instance ``<contract id>|<event id>``: once per price event. Evidence: the previous price's
  event and the event.
- The family keeps its own state slice: per contract its last prices (time, cents, event id),
  and the complaint times of the lookback, thinned (every question "a complaint in [x - 180
  days, x]" keeps its answer).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from streams.core.events import Complaint, Contract, Event
from streams.core.state import DAY_MS, CustomerState, any_between, insert_thinned, keep_since
from streams.core.triggers import Emitter, TriggerParams, usage
from streams.core.triggers.api import MARKETING, TriggerFamily, spec
from streams.core.triggers.renewal import OPEN_STATUSES

TRIGGER = "price_increase_at_risk"
MAX_CONTRACTS = 8
MAX_PRICES = 4  # per contract
MAX_COMPLAINTS = 8

Price = tuple[int, int, str]  # (time, cents, event id)


def _ident(t: int) -> int:
    return t


@dataclass(frozen=True, slots=True)
class PriceParams:
    min_increase: Fraction
    complaint_lookback_ms: int


@dataclass(slots=True)
class PriceSlice:
    prices: dict[str, list[Price]] = field(default_factory=dict)
    complaints: list[int] = field(default_factory=list)


class PriceRiseFamily(TriggerFamily):
    """``price_increase_at_risk`` (see the module's docstring)."""

    name = "price_rise"
    triggers = (
        spec("price_increase_at_risk", "price_rise", "retention_call", "phone", MARKETING, 95,
             min_increase=0.1, complaint_lookback_days=180),
    )  # fmt: skip
    events = (Contract, Complaint)

    def validate(self, sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
        if not 0 < sections[TRIGGER]["min_increase"] <= 10:
            return [f"triggers.{TRIGGER}.min_increase: must be a share above 0 (0.1 is 10 %)"]
        return []

    def configure(self, sections: Mapping[str, Mapping[str, Any]], lateness_ms: int) -> PriceParams:
        section = sections[TRIGGER]
        return PriceParams(
            Fraction(str(section["min_increase"])),
            int(section["complaint_lookback_days"] * DAY_MS),
        )

    # --- slice ----------------------------------------------------------------------------

    def new_slice(self) -> PriceSlice:
        return PriceSlice()

    def encode_slice(self, data: PriceSlice) -> Any:
        out: dict[str, Any] = {}
        if data.prices:
            out["p"] = {k: [list(p) for p in v] for k, v in data.prices.items()}
        if data.complaints:
            out["c"] = data.complaints
        return out or None

    def decode_slice(self, version: int, payload: Any) -> PriceSlice | None:
        if version != 1:
            return None
        return PriceSlice(
            {k: [(t, c, i) for t, c, i in v] for k, v in payload.get("p", {}).items()},
            list(payload.get("c", [])),
        )

    # --- hooks ------------------------------------------------------------------------------

    def apply(self, state: CustomerState, event: Event, params: TriggerParams) -> bool:
        if TRIGGER not in params.enabled:
            return False
        p: PriceParams = self.parameters(params)
        t = event.occurred_at_ms
        if isinstance(event, Complaint):
            if t >= state.floor_ms - p.complaint_lookback_ms:
                data: PriceSlice = self.slice(state)
                data.complaints = insert_thinned(
                    data.complaints, t, _ident, p.complaint_lookback_ms
                )[-MAX_COMPLAINTS:]
            return False
        if not isinstance(event, Contract) or event.price_cents is None:
            return False
        data = self.slice(state)
        prices = data.prices.setdefault(event.contract_id, [])
        if any(i == event.event_id for _, _, i in prices):
            return False
        bisect.insort(prices, (t, event.price_cents, event.event_id))
        del prices[:-MAX_PRICES]
        if len(data.prices) > MAX_CONTRACTS:
            del data.prices[min(data.prices, key=lambda k: (data.prices[k][-1][0], k))]
        return True

    def on_event(self, state: CustomerState, event: Event, emitter: Emitter) -> None:
        if (
            not isinstance(event, Contract)
            or event.status not in OPEN_STATUSES
            or event.price_cents is None
        ):
            return
        p: PriceParams = self.parameters(emitter.params)
        data: PriceSlice = self.slice(state)
        t = event.occurred_at_ms
        earlier = [x for x in data.prices.get(event.contract_id, []) if x[0] < t]
        if not earlier:
            return
        _, before, before_id = earlier[-1]
        share = p.min_increase
        if (event.price_cents - before) * share.denominator < share.numerator * before:
            return  # not raised by enough
        if not (
            any_between(data.complaints, t - p.complaint_lookback_ms, t)
            or usage.lapsed_at(state, emitter.params, t)
        ):
            return  # not at risk
        emitter.emit(
            TRIGGER, f"{event.contract_id}|{event.event_id}", (before_id, event.event_id), t
        )

    def prune(self, state: CustomerState, params: TriggerParams) -> None:
        p: PriceParams = self.parameters(params)
        data: PriceSlice = self.slice(state)
        floor = state.floor_ms
        # The latest price before the floor stays: the next rise is measured against it.
        for contract_id in list(data.prices):
            if contract_id not in state.contracts:
                del data.prices[contract_id]  # the contract is gone from the record
            else:
                data.prices[contract_id] = keep_since(data.prices[contract_id], _first, floor)
        data.complaints = [c for c in data.complaints if c >= floor - p.complaint_lookback_ms]
        if not data.prices and not data.complaints:
            self.drop_slice(state)


def _first(p: Price) -> int:
    return p[0]


FAMILY = PriceRiseFamily()
