"""Typed input events: what ingest makes of a valid record.

Amounts are integer cents (the contract compares thresholds in cents); times are epoch
milliseconds UTC. The classes are slotted and frozen: cheap to build, safe to share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

ACCOUNT_TYPES = ("savings", "checking", "credit_card", "loan", "investment")
DIRECTIONS = ("debit", "credit")
RAILS = ("internal", "wire", "ach", "card", "cash", "check")
CONTRACT_STATUSES = ("active", "renewed", "cancelled", "expired")
SENTIMENTS = ("positive", "neutral", "negative")
CHANNELS = ("email", "sms", "phone", "direct_mail", "push")
ENGAGEMENT_ACTIONS = ("delivered", "opened", "clicked", "converted", "unsubscribed", "bounced")
CONSENT_CHANNELS = (*CHANNELS, "all")
CONSENT_STATUSES = ("opted_in", "opted_out")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The envelope every input event has."""

    type: ClassVar[str]
    topic_kind: ClassVar[str]

    event_id: str
    customer_id: str
    occurred_at_ms: int
    source: str | None = None


# --- account-events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountEvent(Event):
    topic_kind: ClassVar[str] = "account"


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountOpened(AccountEvent):
    type: ClassVar[str] = "account_opened"
    account_id: str
    account_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountClosed(AccountEvent):
    type: ClassVar[str] = "account_closed"
    account_id: str
    account_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance(AccountEvent):
    type: ClassVar[str] = "balance"
    account_id: str
    account_type: str
    balance_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction(AccountEvent):
    type: ClassVar[str] = "transaction"
    account_id: str
    account_type: str
    direction: str
    amount_cents: int
    rail: str
    balance_after_cents: int | None = None
    transfer_id: str | None = None
    counterparty_account_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement(AccountEvent):
    type: ClassVar[str] = "statement"
    account_id: str
    statement_balance_cents: int
    amount_paid_cents: int
    minimum_due_cents: int

    @property
    def paid_in_full(self) -> bool:
        return self.amount_paid_cents >= self.statement_balance_cents


@dataclass(frozen=True, slots=True, kw_only=True)
class Contract(AccountEvent):
    type: ClassVar[str] = "contract"
    contract_id: str
    product: str
    status: str
    expires_at_ms: int
    auto_renew: bool
    # The contract's price in cents (optional: price_increase_at_risk compares it with the
    # contract's previous price).
    price_cents: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoRenewCharged(AccountEvent):
    type: ClassVar[str] = "auto_renew_charged"
    contract_id: str
    amount_cents: int
    expires_at_ms: int


# --- usage-events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageEvent(Event):
    topic_kind: ClassVar[str] = "usage"


@dataclass(frozen=True, slots=True, kw_only=True)
class Visit(UsageEvent):
    type: ClassVar[str] = "visit"
    venue: str
    sentiment: str
    contract_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Complaint(UsageEvent):
    type: ClassVar[str] = "complaint"
    category: str
    resolved: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductUsage(UsageEvent):
    type: ClassVar[str] = "product_usage"
    product: str
    activity: str
    contract_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Purchase(UsageEvent):
    type: ClassVar[str] = "purchase"
    product_category: str
    amount_cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Engagement(UsageEvent):
    type: ClassVar[str] = "engagement"
    channel: str
    action: str
    decision_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Consent(UsageEvent):
    type: ClassVar[str] = "consent"
    channel: str
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile(UsageEvent):
    type: ClassVar[str] = "profile"
    segment: str | None = None
    business_unit: str | None = None
    timezone: str | None = None


ACCOUNT_EVENT_TYPES: dict[str, type[AccountEvent]] = {
    c.type: c
    for c in (
        AccountOpened,
        AccountClosed,
        Balance,
        Transaction,
        Statement,
        Contract,
        AutoRenewCharged,
    )
}
USAGE_EVENT_TYPES: dict[str, type[UsageEvent]] = {
    c.type: c for c in (Visit, Complaint, ProductUsage, Purchase, Engagement, Consent, Profile)
}
