"""A trigger family for the registry tests, named in a configuration's ``triggers.plugins``."""

from __future__ import annotations

from typing import Any

from streams.core.events import Event, Purchase
from streams.core.state import CustomerState
from streams.core.triggers import Emitter, TriggerParams
from streams.core.triggers.api import MARKETING, TriggerFamily, spec


class BigSpender(TriggerFamily):
    """``big_purchase``: a purchase of at least ``min_amount`` fires at once; the slice counts
    the purchases seen (to show a slice that survives between events)."""

    name = "big_spender"
    triggers = (
        spec("big_purchase", "big_spender", "vip_welcome", "email", MARKETING, 15,
             min_amount=1_000),
    )  # fmt: skip
    events = (Purchase,)
    state_version = 2

    def apply(self, state: CustomerState, event: Event, params: TriggerParams) -> bool:
        if not self.enabled(params):
            return False
        data = self.slice(state)
        data["n"] = data.get("n", 0) + 1
        return True

    def on_event(self, state: CustomerState, event: Event, emitter: Emitter) -> None:
        assert isinstance(event, Purchase)
        sections: Any = self.parameters(emitter.params)
        if event.amount_cents >= sections["big_purchase"]["min_amount"] * 100:
            emitter.emit("big_purchase", event.event_id, (event.event_id,), event.occurred_at_ms)


TRIGGER_FAMILIES = [BigSpender()]
