"""Usage lapse for subscriptions: ``usage_lapsed`` (placeholder until its rule lands)."""

from __future__ import annotations

from streams.core.triggers.api import MARKETING, TriggerFamily, spec


class UsageLapseFamily(TriggerFamily):
    name = "usage_lapse"
    triggers = (
        spec("usage_lapsed", "usage_lapse", "usage_win_back", "email", MARKETING, 45,
             inactive_days=60, inactive_days_by_product={}),
    )  # fmt: skip


FAMILY = UsageLapseFamily()
