"""Company-caused risk: ``price_increase_at_risk`` (placeholder until its rule lands)."""

from __future__ import annotations

from streams.core.triggers.api import MARKETING, TriggerFamily, spec


class PriceRiseFamily(TriggerFamily):
    name = "price_rise"
    triggers = (
        spec("price_increase_at_risk", "price_rise", "retention_call", "phone", MARKETING, 95,
             min_increase=0.1, complaint_lookback_days=180),
    )  # fmt: skip


FAMILY = PriceRiseFamily()
