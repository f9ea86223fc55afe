"""The trigger catalogue: every built-in trigger, once.

One entry per trigger: its family (the module of ``streams.core.triggers`` that computes it),
the action, channel and category its decisions carry, its default priority, and its
parameters with their defaults. The configuration's defaults and validation
(``streams.config``), the trigger parameters (``TriggerParams``), the metrics, the demo and
the contract's table (``docs/contract.md``, checked by ``tests/unit/test_catalogue.py``) all
read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

MARKETING = "marketing"
SERVICE = "service"
# The priority of every service trigger: service messages go first.
SERVICE_PRIORITY = 100


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


_SAVINGS_DROP = {
    "enabled": True,
    "baseline_days": 90,
    "min_average_balance": 10_000,
    "drop_fraction": 0.5,
    "drop_window_days": 3,
    "follow_up_days": 7,
    "match_fraction": 0.8,
}
_LAPSE = {
    "enabled": True,
    "inactive_days": 180,
    "statements": 6,
    "min_statements": 2,
    "paid_in_full_share": 0.5,
}


def _spec(
    name: str,
    family: str,
    action: str,
    channel: str,
    category: str,
    priority: int | None,
    **parameters: Any,
) -> TriggerSpec:
    return TriggerSpec(
        name, family, action, channel, category, priority, MappingProxyType(parameters)
    )


_ALL = (
    _spec("savings_drop_to_checking", "savings", "loan_offer", "email", MARKETING, 85,
          **_SAVINGS_DROP),
    _spec("savings_drop_to_wire", "savings", "investment_advisor_call", "phone", MARKETING, 90,
          **_SAVINGS_DROP),
    _spec("savings_drop_unexplained", "savings", "retention_check_in", "email", MARKETING, 60,
          **_SAVINGS_DROP),
    _spec("renewal_after_positive_visit", "renewal", "renewal_offer", "email", MARKETING, 80,
          enabled=True, expires_within_days=60, complaint_lookback_days=30),
    _spec("renewal_reminder", "renewal", "renewal_reminder", "email", MARKETING, 50,
          enabled=True, days_before=[30, 7]),
    _spec("auto_renew_confirmation", "renewal", "payment_confirmation", "email", SERVICE, None,
          enabled=True),
    _spec("auto_renew_unused", "renewal", "usage_check_in", "email", SERVICE, None,
          enabled=True, days_before=30, usage_lookback_days=90),
    _spec("lapsed_transactor", "reactivation", "reactivation_cashback", "email", MARKETING, 40,
          **_LAPSE),
    _spec("lapsed_revolver", "reactivation", "reactivation_balance_transfer", "email",
          MARKETING, 40, **_LAPSE),
    _spec("never_activated", "reactivation", "activation_nudge", "email", MARKETING, 30,
          enabled=True, days=90),
    _spec("replacement_due", "recurrence", "replacement_reminder", "email", MARKETING, 20,
          enabled=True, min_purchases=3,
          cycle_days={"air_filter": 90, "car_service": 180, "phone": 730}),
    _spec("usual_booking_missed", "recurrence", "rebooking_offer", "email", MARKETING, 25,
          enabled=True, min_gap_days=335, max_gap_days=395, usual_gap_days=365, grace_days=14),
)  # fmt: skip

CATALOGUE: Mapping[str, TriggerSpec] = MappingProxyType({s.name: s for s in _ALL})
TRIGGER_NAMES: tuple[str, ...] = tuple(CATALOGUE)

SAVINGS_TRIGGERS = tuple(n for n, s in CATALOGUE.items() if s.family == "savings")
LAPSE_TRIGGERS = ("lapsed_transactor", "lapsed_revolver")
# Parameters that define one shared computation (the savings drop, the card lapse): the
# triggers built on it must agree on them, or one drop would mean three different things.
SHARED_PARAMETERS = {
    SAVINGS_TRIGGERS: ("baseline_days", "min_average_balance", "drop_fraction", "drop_window_days"),
    LAPSE_TRIGGERS: ("inactive_days", "statements", "min_statements", "paid_in_full_share"),
}


def default_parameters() -> dict[str, dict[str, Any]]:
    """Every trigger's parameters with their defaults, as a fresh mutable mapping."""
    return {n: _thaw(s.parameters) for n, s in CATALOGUE.items()}


def default_priorities() -> dict[str, int]:
    """The ``policy.priorities`` default: ``service`` and every marketing trigger."""
    out = {"service": SERVICE_PRIORITY}
    out.update({n: s.priority for n, s in CATALOGUE.items() if s.priority is not None})
    return out


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value
