"""The triggers of the catalogue (``streams.core.catalogue``) as pure functions.

One module per trigger family; every family is a ``TriggerFamily`` (``streams.core.triggers.api``:
the trigger API, which plugins use too).

The built-in families' modules have the same entry points, all pure apart from mutating the
state copy the core hands them: ``apply(state, event, params)`` folds an event into the state,
``on_event(state, event, emitter)`` emits the event-driven occurrences the event completes,
``due_items(state, params)`` lists the time-based occurrences that are valid as of their due
time and not fired yet (``named=False``: the same items with an empty ``instance``, for a
caller that only wants the due times), ``holds_data(state)`` says whether there is anything
for ``due_items`` and ``prune`` to look at, ``EVENTS`` are the event types ``apply`` folds in,
and ``prune(state, params)`` drops what no trigger can look at any more
(relative to ``state.floor_ms``); ``FAMILY`` registers them. No Faust, Redis or aiokafka here,
ever.

``TriggerParams.from_config`` turns the validated configuration mapping into typed parameters
once; every number of the catalogue comes from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from streams.core import goals as goals_module
from streams.core.decisions import Candidate
from streams.core.state import DAY_MS, MAX_FIRED, CustomerState, id_hash
from streams.core.triggers.api import DueItem, TriggerFamily, TriggerSpec

if TYPE_CHECKING:
    from streams.core.catalogue import Registry

__all__ = ["DueItem", "Emitter", "TriggerFamily", "TriggerParams", "TriggerSpec"]


def _fraction(value: float) -> Fraction:
    # Through the decimal text: 0.8 is exactly 4/5 then, so "80 %" compares exactly in cents.
    return Fraction(str(value))


def _days(value: float) -> int:
    return int(value * DAY_MS)


@dataclass(frozen=True, slots=True)
class SavingsParams:
    baseline_ms: int
    min_average_cents: int
    drop_fraction: Fraction
    window_ms: int
    # per trigger: (follow-up window, match fraction); they may differ
    checking: tuple[int, Fraction]
    wire: tuple[int, Fraction]
    unexplained: tuple[int, Fraction]
    investment: tuple[int, Fraction]
    loan: tuple[int, Fraction]
    # The widest follow-up window of them all: derived once, read several times per event.
    max_follow_ms: int = field(init=False)

    def __post_init__(self) -> None:
        follow = max(
            self.checking[0], self.wire[0], self.unexplained[0], self.investment[0], self.loan[0]
        )
        object.__setattr__(self, "max_follow_ms", follow)


@dataclass(frozen=True, slots=True)
class RenewalParams:
    expires_within_ms: int
    complaint_lookback_ms: int
    reminder_days: tuple[int, ...]
    # per product: its own reminder days instead of ``reminder_days``
    reminder_days_by_product: Mapping[str, tuple[int, ...]]
    unused_days_before: int
    usage_lookback_ms: int


@dataclass(frozen=True, slots=True)
class CardParams:
    inactive_ms: int
    statements: int
    min_statements: int
    paid_in_full_share: Fraction
    never_ms: int
    # Card activity is thinned for the narrowest question asked of it.
    activity_window_ms: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "activity_window_ms", min(self.inactive_ms, self.never_ms))


@dataclass(frozen=True, slots=True)
class RecurrenceParams:
    min_purchases: int
    cycle_ms: Mapping[str, int]
    min_gap_ms: int
    max_gap_ms: int
    usual_gap_ms: int
    grace_ms: int


@dataclass(frozen=True, slots=True)
class TriggerParams:
    """Every trigger parameter, typed and in milliseconds/cents; built once per worker."""

    lateness_ms: int
    enabled: frozenset[str]
    priorities: Mapping[str, int]
    savings: SavingsParams
    renewal: RenewalParams
    cards: CardParams
    recurrence: RecurrenceParams
    # The registry the parameters were made for, its triggers, and every family's own
    # parameters (``TriggerFamily.configure``; None for the built-in ones, which are above).
    registry: Registry
    families: Mapping[str, Any]
    # The enabled goals by trigger (``streams.core.goals``; ``triggers.<name>.goal``).
    goals: Mapping[str, goals_module.Goal] = field(default_factory=dict)
    specs: Mapping[str, TriggerSpec] = field(init=False)
    fired_retention_ms: int = field(init=False)
    retention: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "specs", self.registry.specs)
        # An occurrence's hash is kept for as long as late data could make it fire again.
        s = self.savings
        retention = max(
            30 * DAY_MS, 2 * self.lateness_ms + 2 * s.max_follow_ms + s.window_ms + DAY_MS
        )
        object.__setattr__(self, "fired_retention_ms", retention)
        # A family may need its occurrences remembered for longer (its own lateness horizon):
        # per trigger, so that installing a plugin changes nothing for the others.
        object.__setattr__(
            self,
            "retention",
            MappingProxyType(
                {
                    t.name: max(retention, f.retention_ms(self))
                    for f in self.registry.families
                    for t in f.triggers
                }
            ),
        )

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], registry: Registry | None = None
    ) -> TriggerParams:
        """From a validated configuration (``streams.config.build_config`` or ``load_config``)
        built for ``registry`` (default: the one its ``triggers.plugins`` name)."""
        if registry is None:
            from streams.core.catalogue import registry_for  # the catalogue imports this module

            registry = registry_for(config)
        t = config["triggers"]
        pri = config["policy"]["priorities"]
        service = pri["service"]
        names = registry.names
        priorities = {
            name: service if registry.specs[name].category == "service" else pri[name]
            for name in names
        }
        lateness_ms = _days(config["stream"]["allowed_lateness_days"])
        families = {
            f.name: f.configure({n.name: t[n.name] for n in f.triggers}, lateness_ms)
            for f in registry.families
        }
        sd = t["savings_drop_to_checking"]  # shared parameters are equal across the three

        def follow(name: str) -> tuple[int, Fraction]:
            return _days(t[name]["follow_up_days"]), _fraction(t[name]["match_fraction"])

        lapse = t["lapsed_transactor"]
        usual = t["usual_booking_missed"]
        return cls(
            lateness_ms=lateness_ms,
            enabled=frozenset(n for n in names if t[n]["enabled"]),
            priorities=MappingProxyType(priorities),
            savings=SavingsParams(
                baseline_ms=_days(sd["baseline_days"]),
                min_average_cents=int(round(sd["min_average_balance"] * 100)),
                drop_fraction=_fraction(sd["drop_fraction"]),
                window_ms=_days(sd["drop_window_days"]),
                checking=follow("savings_drop_to_checking"),
                wire=follow("savings_drop_to_wire"),
                unexplained=follow("savings_drop_unexplained"),
                investment=follow("savings_drop_to_own_investment"),
                loan=follow("savings_drop_to_loan_payoff"),
            ),
            renewal=RenewalParams(
                expires_within_ms=_days(t["renewal_after_positive_visit"]["expires_within_days"]),
                complaint_lookback_ms=_days(
                    t["renewal_after_positive_visit"]["complaint_lookback_days"]
                ),
                reminder_days=tuple(sorted(set(t["renewal_reminder"]["days_before"]))),
                reminder_days_by_product=MappingProxyType(
                    {
                        product: tuple(sorted(set(days)))
                        for product, days in t["renewal_reminder"]["days_before_by_product"].items()
                    }
                ),
                unused_days_before=int(t["auto_renew_unused"]["days_before"]),
                usage_lookback_ms=_days(t["auto_renew_unused"]["usage_lookback_days"]),
            ),
            cards=CardParams(
                inactive_ms=_days(lapse["inactive_days"]),
                statements=int(lapse["statements"]),
                min_statements=int(lapse["min_statements"]),
                paid_in_full_share=_fraction(lapse["paid_in_full_share"]),
                never_ms=_days(t["never_activated"]["days"]),
            ),
            recurrence=RecurrenceParams(
                min_purchases=int(t["replacement_due"]["min_purchases"]),
                cycle_ms=MappingProxyType(
                    {k: _days(v) for k, v in t["replacement_due"]["cycle_days"].items()}
                ),
                min_gap_ms=_days(usual["min_gap_days"]),
                max_gap_ms=_days(usual["max_gap_days"]),
                usual_gap_ms=_days(usual["usual_gap_days"]),
                grace_ms=_days(usual["grace_days"]),
            ),
            registry=registry,
            families=MappingProxyType(families),
            goals=MappingProxyType(
                goals_module.configure({n: registry.specs[n].goal for n in names}, t)
            ),
        )


class Emitter:
    """Turns occurrences into candidates, at most once per (trigger, instance).

    The families keep their own "fired" marks next to the data; the bounded ``fired`` hash list
    of the state is the second line, so a replay or a late event never fires an occurrence
    twice even where a family's own marks were pruned.
    """

    def __init__(self, state: CustomerState, params: TriggerParams, now_ms: int) -> None:
        self.state = state
        self.params = params
        self.now_ms = now_ms
        self.candidates: list[Candidate] = []

    def emit(self, trigger: str, instance: str, evidence: tuple[str, ...], at_ms: int) -> bool:
        """Emit unless disabled; True when the occurrence counts as fired (now or before)."""
        if trigger not in self.params.enabled:
            return False
        key = id_hash(f"{trigger}\x1f{instance}")
        if self.state.was_fired(key):
            return True
        fired = self.state.fired
        fired.append((key, max(at_ms, self.now_ms) + self.params.retention[trigger]))
        if len(fired) > MAX_FIRED:
            fired.sort(key=lambda f: f[1])
            del fired[: len(fired) - MAX_FIRED]
        spec = self.params.specs[trigger]
        self.candidates.append(
            Candidate(
                customer_id=self.state.customer_id,
                trigger=trigger,
                instance=instance,
                action=spec.action,
                channel=spec.channel,
                category=spec.category,
                priority=self.params.priorities[trigger],
                evidence=tuple(dict.fromkeys(evidence)),
                triggered_at_ms=at_ms,
            )
        )
        return True
