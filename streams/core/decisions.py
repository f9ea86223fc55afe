"""Trigger candidates and contact decisions: the data between triggers, policy and publish."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from streams.core.timeutil import format_ms

SCHEMA_VERSION = 1
OUTCOMES = ("contact", "suppressed", "holdout")
REASON_CODES = (
    "global_cap_7d",
    "global_cap_30d",
    "channel_cap",
    "trigger_cooldown",
    "non_responder_backoff",
    "recent_complaint",
    "opted_out",
    # Additive (configuration extension points, never with the contract's defaults):
    "business_unit_cap",
    # Additive (new rules; sunset is on by default, see docs/contract.md):
    "sunset",
    "undeliverable",
    "capacity",
)


def decision_id(customer_id: str, trigger: str, instance: str) -> str:
    """Deterministic id of one trigger occurrence: the same on every replay of the same input."""
    digest = hashlib.sha256(f"{customer_id}\x1f{trigger}\x1f{instance}".encode()).hexdigest()
    return f"d-{digest[:32]}"


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the contact policy needs to know of a customer besides the ledger's history: the
    segment (cap multiplier), the customer's business unit (profile) and the channels that are
    in the customer's quiet hours at the moment of deciding (not used as fallbacks)."""

    segment: str | None = None
    business_unit: str | None = None
    quiet_channels: frozenset[str] = frozenset()


NOBODY = Recipient()


@dataclass(frozen=True, slots=True)
class Arm:
    """What the policy decided for one decision, as its outcome record names it: the outcome
    (``contact``, ``holdout`` or ``suppressed``), the channel chosen, whether it is a holdout
    of the global control group, and when it was first decided (None: not known)."""

    outcome: str
    channel: str
    global_control: bool = False
    decided_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One trigger occurrence for one customer, before the contact policy has decided on it.

    ``instance`` is the occurrence's stable key (e.g. ``"c-17|2026-06-30|T-30"`` or the event
    id of the completing event), so that ``decision_id`` is stable across replays.
    """

    customer_id: str
    trigger: str
    instance: str
    action: str
    channel: str
    category: str  # "marketing" or "service"
    priority: int
    evidence: tuple[str, ...]
    triggered_at_ms: int

    @property
    def decision_id(self) -> str:
        return decision_id(self.customer_id, self.trigger, self.instance)


@dataclass(frozen=True, slots=True)
class Decision:
    """A candidate with the policy's verdict: what is published on ``contact-decisions``.

    ``details`` holds the counter values behind the reasons (evidence for audits); it is
    published as the additive field ``policy``. A holdout of the global control group is
    published with the additive field ``global_control: true``.
    """

    candidate: Candidate
    outcome: str
    reasons: tuple[str, ...]
    decided_at_ms: int
    channel: str = ""  # the channel chosen; empty means the candidate's
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def decision_id(self) -> str:
        return self.candidate.decision_id

    @property
    def global_control(self) -> bool:
        """A holdout because the customer is in the global control group (the ledger marks it
        in the details it stores with the decision's first result)."""
        return self.outcome == "holdout" and self.details.get("global_control") is True

    def to_record(self) -> dict[str, Any]:
        """The contract's contact-decision JSON object (plus additive fields)."""
        c = self.candidate
        record: dict[str, Any] = {
            "decision_id": c.decision_id,
            "customer_id": c.customer_id,
            "trigger": c.trigger,
            "action": c.action,
            "channel": self.channel or c.channel,
            "category": c.category,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "priority": c.priority,
            "evidence": list(c.evidence),
            "triggered_at": format_ms(c.triggered_at_ms),
            "decided_at": format_ms(self.decided_at_ms),
            "schema_version": SCHEMA_VERSION,
            "instance": c.instance,
        }
        if self.global_control:
            record["global_control"] = True
        if self.details:
            record["policy"] = self.details
        return record
