"""Typed input events: what ingest makes of a valid record.

Amounts are integer cents (the contract compares thresholds in cents); times are epoch
milliseconds UTC. The classes are msgspec Structs, frozen and slotted: cheap to build, safe to
share, and decoded from a record's bytes in one step (``streams.core.ingest``), validation
included, so that no intermediate dict or second object is built per event. They hold only
strings, numbers, booleans and None, so the garbage collector need not track them
(``gc=False``): nothing an event holds can form a reference cycle.

The field annotations are what msgspec decodes from the wire, under the wire's names
(``rename``: ``amount`` for ``amount_cents``, ``occurred_at`` for ``occurred_at_ms``). Money
and times then take their core form right after the decode, before anyone sees the event
(``ingest._finish``): money from major units to integer cents, a timestamp string to epoch
milliseconds. Type checkers see the core form (the ``TYPE_CHECKING`` aliases below), which is
also what code that builds an event directly passes (``Transaction(amount_cents=500, ...)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, TypeAlias

from msgspec import Meta, Struct

ACCOUNT_TYPES = ("savings", "checking", "credit_card", "loan", "investment")
DIRECTIONS = ("debit", "credit")
RAILS = ("internal", "wire", "ach", "card", "cash", "check")
CONTRACT_STATUSES = ("active", "renewed", "cancelled", "expired")
SENTIMENTS = ("positive", "neutral", "negative")
CHANNELS = ("email", "sms", "phone", "direct_mail", "push")
ENGAGEMENT_ACTIONS = ("delivered", "opened", "clicked", "converted", "unsubscribed", "bounced")
CONSENT_CHANNELS = (*CHANNELS, "all")
CONSENT_STATUSES = ("opted_in", "opted_out")

# The bounds of schemas/common.json; streams.core.ingest's validator reads the same numbers.
ID_MAX_LENGTH = 128
TEXT_MAX_LENGTH = 128
TIMEZONE_MAX_LENGTH = 64
# Amounts and balances beyond a trillion are taken for garbage, not money; this also keeps
# every value exact in integer cents.
MONEY_LIMIT = 1_000_000_000_000
# An IANA-style zone name ("Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC",
# "Etc/GMT+5"). The name is not looked up: quiet hours fall back to UTC for a zone we lack.
TIMEZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"


def _money(bounds: Meta) -> object:
    """A JSON number within ``bounds`` (int or float: either is valid money on the wire)."""
    return Annotated[int, bounds] | Annotated[float, bounds]


if TYPE_CHECKING:
    Id: TypeAlias = str
    Text: TypeAlias = str
    OptId: TypeAlias = str | None
    OptText: TypeAlias = str | None
    OptBool: TypeAlias = bool | None
    OptTimezone: TypeAlias = str | None
    AccountType: TypeAlias = str
    Direction: TypeAlias = str
    Rail: TypeAlias = str
    ContractStatus: TypeAlias = str
    Sentiment: TypeAlias = str
    Channel: TypeAlias = str
    EngagementAction: TypeAlias = str
    ConsentChannel: TypeAlias = str
    ConsentStatus: TypeAlias = str
    Timestamp: TypeAlias = int  # epoch ms once decoded
    Amount: TypeAlias = int  # integer cents once decoded, as are the two below
    Money: TypeAlias = int
    NonNegativeMoney: TypeAlias = int
    OptMoney: TypeAlias = int | None
    OptAmount: TypeAlias = int | None
else:
    # An optional field is its wire type alone, with None as the default when it is absent:
    # the schemas reject null for every field.
    Id = OptId = Annotated[str, Meta(min_length=1, max_length=ID_MAX_LENGTH)]
    Text = OptText = Annotated[str, Meta(min_length=1, max_length=TEXT_MAX_LENGTH)]
    OptBool = bool
    # msgspec's pattern is re.search: "\Z" where the schema's "$" would let a final line feed
    # through (the schema forbids line feeds with a "not").
    OptTimezone = Annotated[
        str,
        Meta(
            min_length=1,
            max_length=TIMEZONE_MAX_LENGTH,
            pattern=TIMEZONE_PATTERN.removesuffix("$") + r"\Z",
        ),
    ]
    AccountType = Literal[ACCOUNT_TYPES]
    Direction = Literal[DIRECTIONS]
    Rail = Literal[RAILS]
    ContractStatus = Literal[CONTRACT_STATUSES]
    Sentiment = Literal[SENTIMENTS]
    Channel = Literal[CHANNELS]
    EngagementAction = Literal[ENGAGEMENT_ACTIONS]
    ConsentChannel = Literal[CONSENT_CHANNELS]
    ConsentStatus = Literal[CONSENT_STATUSES]
    # The text is checked and converted by timeutil.parse_rfc3339_ms after the decode.
    Timestamp = str
    Amount = OptAmount = _money(Meta(gt=0, le=MONEY_LIMIT))
    Money = OptMoney = _money(Meta(ge=-MONEY_LIMIT, le=MONEY_LIMIT))
    NonNegativeMoney = _money(Meta(ge=0, le=MONEY_LIMIT))

# Attribute -> wire name, where they differ.
WIRE_NAMES = {
    "occurred_at_ms": "occurred_at",
    "expires_at_ms": "expires_at",
    "amount_cents": "amount",
    "balance_cents": "balance",
    "balance_after_cents": "balance_after",
    "statement_balance_cents": "statement_balance",
    "amount_paid_cents": "amount_paid",
    "minimum_due_cents": "minimum_due",
    "price_cents": "price",
}


class Event(
    Struct,
    frozen=True,
    kw_only=True,
    gc=False,
    tag_field="type",
    rename=WIRE_NAMES,
    # A field the contract does not name for the type sends the record to the validator
    # (ingest): msgspec skips an unknown field's value without checking it as strictly as
    # orjson does (invalid UTF-8, a number beyond a double), and a record's fate must not
    # depend on which path read it.
    forbid_unknown_fields=True,
):
    """The envelope every input event has."""

    type: ClassVar[str]
    topic_kind: ClassVar[str]

    event_id: Id
    customer_id: Id
    occurred_at_ms: Timestamp
    source: OptText = None


# --- account-events ---------------------------------------------------------------------


class AccountEvent(Event, frozen=True):
    topic_kind: ClassVar[str] = "account"


class AccountOpened(AccountEvent, frozen=True, tag="account_opened"):
    type: ClassVar[str] = "account_opened"
    account_id: Id
    account_type: AccountType


class AccountClosed(AccountEvent, frozen=True, tag="account_closed"):
    type: ClassVar[str] = "account_closed"
    account_id: Id
    account_type: AccountType


class Balance(AccountEvent, frozen=True, tag="balance"):
    type: ClassVar[str] = "balance"
    account_id: Id
    account_type: AccountType
    balance_cents: Money


class Transaction(AccountEvent, frozen=True, tag="transaction"):
    type: ClassVar[str] = "transaction"
    account_id: Id
    account_type: AccountType
    direction: Direction
    amount_cents: Amount
    rail: Rail
    balance_after_cents: OptMoney = None
    transfer_id: OptId = None
    counterparty_account_id: OptId = None


class Statement(AccountEvent, frozen=True, tag="statement"):
    type: ClassVar[str] = "statement"
    account_id: Id
    statement_balance_cents: NonNegativeMoney
    amount_paid_cents: NonNegativeMoney
    minimum_due_cents: NonNegativeMoney

    @property
    def paid_in_full(self) -> bool:
        return self.amount_paid_cents >= self.statement_balance_cents


class Contract(AccountEvent, frozen=True, tag="contract"):
    type: ClassVar[str] = "contract"
    contract_id: Id
    product: Text
    status: ContractStatus
    expires_at_ms: Timestamp
    auto_renew: bool
    # The contract's price in cents (optional: price_increase_at_risk compares it with the
    # contract's previous price).
    price_cents: OptAmount = None


class AutoRenewCharged(AccountEvent, frozen=True, tag="auto_renew_charged"):
    type: ClassVar[str] = "auto_renew_charged"
    contract_id: Id
    amount_cents: Amount
    expires_at_ms: Timestamp


# --- usage-events -----------------------------------------------------------------------


class UsageEvent(Event, frozen=True):
    topic_kind: ClassVar[str] = "usage"


class Visit(UsageEvent, frozen=True, tag="visit"):
    type: ClassVar[str] = "visit"
    venue: Text
    sentiment: Sentiment
    contract_id: OptId = None


class Complaint(UsageEvent, frozen=True, tag="complaint"):
    type: ClassVar[str] = "complaint"
    category: Text
    resolved: OptBool = None


class ProductUsage(UsageEvent, frozen=True, tag="product_usage"):
    type: ClassVar[str] = "product_usage"
    product: Text
    activity: Text
    contract_id: OptId = None


class Purchase(UsageEvent, frozen=True, tag="purchase"):
    type: ClassVar[str] = "purchase"
    product_category: Text
    amount_cents: Amount


class Engagement(UsageEvent, frozen=True, tag="engagement"):
    type: ClassVar[str] = "engagement"
    channel: Channel
    action: EngagementAction
    decision_id: OptId = None


class Consent(UsageEvent, frozen=True, tag="consent"):
    type: ClassVar[str] = "consent"
    channel: ConsentChannel
    status: ConsentStatus


class Profile(UsageEvent, frozen=True, tag="profile"):
    type: ClassVar[str] = "profile"
    segment: OptText = None
    business_unit: OptText = None
    timezone: OptTimezone = None


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
