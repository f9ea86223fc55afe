"""Simulated customers with planted, labelled scenarios: ``lifecycle-triggers simulate``.

``generate`` builds, from a seed alone, contract-valid histories for N customers over D days:
salary credits, card spending, statements of transactors and revolvers, savings balances and
withdrawals, visits with sentiment, complaints, contracts with expiries and auto-renewals,
product usage, purchases with personal cycles, engagement with earlier decisions, consents,
profiles, and a few malformed records. Among the customers it plants the scenarios of
``streams.tools.scenarios`` (every trigger, and a near-miss for each) at a configurable rate.

Ground truth. Background customers behave freely, so some of them rightly fire triggers (a
saver who empties the account, a card that goes quiet). Rather than keep them provably below
every threshold, the simulator runs the pure core (``streams.kafka.processor`` with dict stores, the
event clock and a contact-all gate) over exactly the records it produces, partition by
partition as the worker will see them: what that model fires is the background's ground truth.
Planted and near-miss customers are judged by the catalogue (``Scenario.expected``), and the
model is checked against it; a disagreement is logged and written to the truth file.

Planted conversions. Each planted decision with a goal (``streams.core.goals``) gets its goal
event inside its window with a probability that depends on the arm the worker will give it
(holdouts are by hash: ``Policy.is_holdout``), so every such trigger has a known lift; the
truth file records it and each planted decision's draw (``PlantedConversion``). Occurrences a
goal event causes (a renewed contract's next reminders) are part of the ground truth. The
records run ``TRAIL_DAYS`` past ``days`` so that the last planted windows close.

Everything is drawn from ``random.Random`` seeded from the seed (one stream per customer, so a
customer's history does not depend on the others), and nothing reads the clock: the same seed
gives the same records byte for byte. Producing is separate (``produce``): in event-time order
as fast as the broker takes it, or paced in real time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.config import build_config
from streams.core import engine as core
from streams.core import events as ev
from streams.core import goals
from streams.core.adapter import BoundCore, build_core
from streams.core.clock import Clock
from streams.core.decisions import Candidate, Decision
from streams.core.errors import InvalidEvent
from streams.core.events import ACCOUNT_EVENT_TYPES
from streams.core.ingest import Decoder
from streams.core.policy import MARKETING, Policy
from streams.core.state import CustomerState
from streams.core.timeutil import MS_PER_DAY, format_ms, parse_rfc3339_ms
from streams.kafka.processor import ContactAll, Processor, Stores
from streams.kafka.topics import TopicNames
from streams.ops.metrics import Metrics
from streams.tools import scenarios

log = logging.getLogger(__name__)

ACCOUNT_TYPES = frozenset(ACCOUNT_EVENT_TYPES)  # the types of account-events
ROLES = ("planted", "near_miss", "background")
DEFAULT_START = "2024-01-01"
# A day of margin between a scenario's span and the end of the run: the worker's stream time
# must pass the last due time, and the final clock records sit exactly at the end.
SPAN_MARGIN_DAYS = 2
HEARTBEAT_PREFIX = "clock-p"
# Days the run goes on after ``days`` (background customers and the clock only; planted goal
# events may fall there): a planted decision is made by day ``days - SPAN_MARGIN_DAYS``, so
# the longest goal window (60 days) plus the allowed lateness (7) closes inside the run and
# every planted decision's outcome is published, converted or not (with the default lateness).
TRAIL_DAYS = max(g.window_days for g in goals.BUILTIN_GOALS.values()) + 7 + 1

Event = dict[str, Any]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) picks for a key."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Rates are fractions of ``customers`` (planted, near-miss) or of the
    valid records (malformed); every trigger gets at least one of each that fits in ``days``."""

    customers: int = 2_000
    days: int = 760
    seed: int = 7
    start: str = DEFAULT_START
    planted_rate: float = 0.03
    near_miss_rate: float = 0.03
    malformed_rate: float = 0.005
    engagement: bool = True
    partitions: int = 8
    # Planted conversions: a planted decision with a goal gets its goal event with this
    # probability when the policy contacts it (or suppresses it), and with the holdout one when
    # the policy holds it out; ``holdout_rate`` is the worker's ``policy.holdout_rate``, which
    # says (by hash, ``Policy.is_holdout``) which decisions are held out. The planted lift of a
    # trigger is the difference. ``conversion_by_trigger`` overrides the two per trigger:
    # ((trigger, contact, holdout), ...).
    conversion_contact: float = 0.30
    conversion_holdout: float = 0.10
    holdout_rate: float = 0.05
    global_control_rate: float = 0.0  # the worker's policy.global_control_rate: held out too
    conversion_by_trigger: tuple[tuple[str, float, float], ...] = ()
    trail_days: int = TRAIL_DAYS

    def __post_init__(self) -> None:
        if self.customers < 1 or self.days < 1 or self.partitions < 1:
            raise ValueError("customers, days and partitions must be at least 1")
        if self.trail_days < 0:
            raise ValueError("trail_days must not be negative")
        for name in (
            "planted_rate",
            "near_miss_rate",
            "malformed_rate",
            "conversion_contact",
            "conversion_holdout",
            "holdout_rate",
            "global_control_rate",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.global_control_rate >= 1:
            raise ValueError("global_control_rate must be below 1")
        for trigger, contact, holdout in self.conversion_by_trigger:
            if trigger not in goals.BUILTIN_GOALS:
                raise ValueError(f"conversion rates for {trigger!r}: it has no goal")
            if not (0 <= contact <= 1 and 0 <= holdout <= 1):
                raise ValueError(f"conversion rates for {trigger} must be between 0 and 1")
        if parse_rfc3339_ms(f"{self.start}T00:00:00Z") is None:
            raise ValueError(f"start must be a date YYYY-MM-DD, got {self.start!r}")

    @property
    def start_ms(self) -> int:
        return parse_rfc3339_ms(f"{self.start}T00:00:00Z") or 0

    @property
    def run_days(self) -> int:
        """Days of records: ``days`` (where scenarios are planted) and the trail."""
        return self.days + self.trail_days

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.run_days * MS_PER_DAY

    def conversion_rates(self, trigger: str) -> tuple[float, float]:
        """(contacted, held out) conversion probabilities of ``trigger``'s planted decisions."""
        for name, contact, holdout in self.conversion_by_trigger:
            if name == trigger:
                return contact, holdout
        return self.conversion_contact, self.conversion_holdout

    def planted_lift(self, trigger: str) -> float:
        contact, holdout = self.conversion_rates(trigger)
        return contact - holdout


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One record to produce: its input topic kind, partition, key and value bytes."""

    at_ms: int
    kind: str  # "account" or "usage"
    partition: int
    key: bytes | None
    value: bytes
    valid: bool = True


@dataclass(frozen=True, slots=True)
class Expectation:
    """Ground truth for one (customer, trigger): how many decisions the run must publish.

    ``role`` is planted, near_miss or background; ``scenario`` names the planted scenario;
    ``model`` is what the in-process core fired (equal to ``expected`` unless something is
    wrong); ``instances`` are the model's occurrence keys.
    """

    customer_id: str
    trigger: str
    expected: int
    role: str
    scenario: str | None = None
    model: int = 0
    instances: tuple[str, ...] = ()

    # Of ``expected``, the decisions that a planted conversion causes (a renewed contract's
    # reminders, a new purchase cycle's replacement): the model fires them once the goal event is
    # there, and the catalogue knows nothing of them.
    caused: int = 0

    def to_json(self) -> dict[str, Any]:
        out = {
            "record": "expectation",
            "customer_id": self.customer_id,
            "trigger": self.trigger,
            "expected": self.expected,
            "role": self.role,
            "scenario": self.scenario,
            "model": self.model,
            "instances": list(self.instances),
        }
        if self.caused:
            out["caused"] = self.caused
        return out


@dataclass(frozen=True, slots=True)
class PlantedConversion:
    """One planted decision with a goal: the arm the policy will give it (by hash: holdout or
    contact; the ledger may still suppress a contact), whether it was made to convert, and the
    goal event that converts it (one event converts every decision of its group: the two
    renewal reminders of a contract)."""

    decision_id: str
    customer_id: str
    trigger: str
    arm: str
    probability: float
    converted: bool
    goal_event_id: str | None = None
    goal_at_ms: int | None = None
    # A service decision is never held out: it converts at the contacted rate, and its trigger
    # has no planted lift (nothing to compare the contacted with).
    category: str = MARKETING

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "record": "conversion",
            "decision_id": self.decision_id,
            "customer_id": self.customer_id,
            "trigger": self.trigger,
            "category": self.category,
            "arm": self.arm,
            "probability": self.probability,
            "converted": self.converted,
        }
        if self.goal_event_id is not None:
            out["goal_event_id"] = self.goal_event_id
            out["goal_at"] = format_ms(self.goal_at_ms or 0)
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PlantedConversion:
        at = doc.get("goal_at")
        return cls(
            doc["decision_id"],
            doc["customer_id"],
            doc["trigger"],
            doc["arm"],
            float(doc["probability"]),
            bool(doc["converted"]),
            doc.get("goal_event_id"),
            None if at is None else parse_rfc3339_ms(at),
            doc.get("category", MARKETING),
        )


@dataclass
class Simulation:
    """The records of a run in event-time order, and its ground truth."""

    config: SimConfig
    records: list[SimRecord]
    expectations: list[Expectation]
    roles: dict[str, str]  # customer id -> role (heartbeat customers are not listed)
    skipped: list[str] = field(default_factory=list)  # triggers too long to plant in ``days``
    disagreements: list[str] = field(default_factory=list)
    conversions: list[PlantedConversion] = field(default_factory=list)

    @property
    def planted_lift(self) -> dict[str, float]:
        """Per planted marketing trigger with a goal: contacted minus held-out conversion
        probability (a service trigger is never held out: no lift to plant or measure)."""
        marketing = {c.trigger for c in self.conversions if c.category == MARKETING}
        return {t: self.config.planted_lift(t) for t in sorted(marketing)}

    @property
    def valid_records(self) -> int:
        return sum(1 for r in self.records if r.valid)

    @property
    def malformed_records(self) -> int:
        return sum(1 for r in self.records if not r.valid)

    @property
    def expected_decisions(self) -> int:
        return sum(e.expected for e in self.expectations)

    def truth_lines(self) -> Iterator[bytes]:
        """The ground-truth file: a ``run`` record, then one ``expectation`` per line."""
        c = self.config
        yield orjson.dumps(
            {
                "record": "run",
                "seed": c.seed,
                "customers": c.customers,
                "days": c.days,
                "start": format_ms(c.start_ms),
                "end": format_ms(c.end_ms),
                "partitions": c.partitions,
                "records": len(self.records),
                "valid_records": self.valid_records,
                "malformed_records": self.malformed_records,
                "expected_decisions": self.expected_decisions,
                "roles": dict(collections.Counter(self.roles.values())),
                "skipped_triggers": self.skipped,
                "disagreements": self.disagreements,
                "history_end": format_ms(c.start_ms + c.days * MS_PER_DAY),
                "holdout_rate": c.holdout_rate,
                "planted_conversions": len(self.conversions),
                "planted_lift": {
                    t: {
                        "contact": c.conversion_rates(t)[0],
                        "holdout": c.conversion_rates(t)[1],
                        "lift": round(lift, 12),
                    }
                    for t, lift in self.planted_lift.items()
                },
            }
        )
        for e in self.expectations:
            yield orjson.dumps(e.to_json())
        for conversion in self.conversions:
            yield orjson.dumps(conversion.to_json())

    def write_truth(self, path: Path) -> None:
        path.write_bytes(b"".join(line + b"\n" for line in self.truth_lines()))


# --- background customers -------------------------------------------------------------------


class _Customer:
    """One background customer's history under construction, drawn from its own RNG."""

    def __init__(self, customer_id: str, rng: random.Random, start_ms: int, end_ms: int) -> None:
        self.customer_id = customer_id
        self.rng = rng
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.events: list[Event] = []

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / MS_PER_DAY

    def at(self, day: float) -> int:
        return self.start_ms + round(day * MS_PER_DAY)

    def add(self, day: float, type_: str, second: int | None = None, **fields: Any) -> bool:
        """Add an event on ``day`` at ``second`` of the day (random when None, drawn even when
        the event falls past the end, so the RNG stream does not depend on the end)."""
        drawn = self.rng.randrange(6 * 3_600, 22 * 3_600)
        at = self.at(int(day)) + (drawn if second is None else second) * 1_000
        if at >= self.end_ms or day < 0:
            return False
        self.events.append(
            {
                "event_id": f"{self.customer_id}-e{len(self.events) + 1}",
                "customer_id": self.customer_id,
                "type": type_,
                "occurred_at": format_ms(at),
                **fields,
            }
        )
        return True


def _money(value: float) -> float:
    return round(max(value, 0.01), 2)


def _profile(c: _Customer) -> None:
    rng = c.rng
    segment = "high_affinity" if rng.random() < 0.1 else "standard"
    c.add(
        rng.uniform(0, 10),
        "profile",
        segment=segment,
        business_unit=rng.choice(("retail_bank", "cards", "subscriptions")),
        timezone=rng.choice(("Europe/Berlin", "Europe/London", "America/New_York", "UTC")),
    )
    if rng.random() < 0.08:
        channel = rng.choice(("sms", "phone", "direct_mail", "email", "all"))
        c.add(rng.uniform(10, c.days), "consent", channel=channel, status="opted_out")
    if rng.random() < 0.04:
        c.add(rng.uniform(10, c.days), "consent", channel="push", status="opted_in")


def _checking(c: _Customer) -> None:
    rng = c.rng
    c.add(rng.uniform(0, 5), "account_opened", account_id="chk", account_type="checking")
    if rng.random() >= 0.65:
        return
    salary = rng.choice((2_400, 3_100, 3_800, 4_500, 6_200))
    balance = rng.uniform(500, 5_000)
    payday = rng.randrange(1, 28)
    for month in range(int(c.days // 30.4) + 1):
        balance += salary - rng.uniform(0.85, 1.0) * salary
        c.add(
            month * 30.4 + payday,
            "transaction",
            account_id="chk",
            account_type="checking",
            direction="credit",
            amount=float(salary),
            rail="ach",
            balance_after=round(balance + salary, 2),
            counterparty_account_id="employer",
        )


def _savings(c: _Customer) -> None:
    """A saver: quarterly balances, monthly deposits for some, and now and then a withdrawal
    that may or may not be large enough (and followed up) to make a savings-drop trigger."""
    rng = c.rng
    c.add(rng.uniform(0, 5), "account_opened", account_id="sav", account_type="savings")
    balance = rng.choice((2_000, 8_000, 15_000, 25_000, 60_000)) * rng.uniform(0.8, 1.2)
    deposit = rng.choice((0, 0, 100, 250, 500))
    big_day = rng.uniform(100, c.days) if rng.random() < 0.12 else None
    day = 1.0
    while day < c.days:
        if deposit:
            balance += deposit
            c.add(
                day,
                "transaction",
                account_id="sav",
                account_type="savings",
                direction="credit",
                amount=float(deposit),
                rail="internal",
                balance_after=round(balance, 2),
            )
        if int(day) % 91 < 31:
            c.add(day + 2, "balance", account_id="sav", account_type="savings", balance=balance)
        if big_day is not None and day <= big_day < day + 30.4:
            share = rng.choice((0.3, 0.45, 0.6, 0.9))
            amount = _money(balance * share)
            balance -= amount
            c.add(
                big_day,
                "transaction",
                account_id="sav",
                account_type="savings",
                direction="debit",
                amount=amount,
                rail="internal",
                balance_after=round(balance, 2),
                transfer_id=f"{c.customer_id}-t1",
            )
            follow = rng.random()
            if follow < 0.45:
                c.add(
                    big_day,
                    "transaction",
                    account_id="chk",
                    account_type="checking",
                    direction="credit",
                    amount=amount,
                    rail="internal",
                    transfer_id=f"{c.customer_id}-t1",
                )
            elif follow < 0.7:
                c.add(
                    big_day + rng.uniform(0, 5),
                    "transaction",
                    account_id="chk",
                    account_type="checking",
                    direction="debit",
                    amount=_money(amount * rng.uniform(0.85, 1.0)),
                    rail="wire",
                )
        day += 30.4


def _card(c: _Customer) -> None:
    """A credit card: monthly spending and statements, paid in full (transactor) or partly
    (revolver); some cards go quiet, a few are never used, some are closed."""
    rng = c.rng
    opened = rng.uniform(0, 60)
    c.add(opened, "account_opened", account_id="cc", account_type="credit_card")
    if rng.random() < 0.06:
        return  # never activated
    transactor = rng.random() < 0.55
    quiet_from = rng.uniform(120, c.days) if rng.random() < 0.2 else c.days
    closed = rng.uniform(200, c.days) if rng.random() < 0.05 else None
    carried = 0.0
    month = 0
    while True:
        day = opened + 3 + month * 30.4
        if day >= c.days or (closed is not None and day >= closed):
            break
        spent = 0.0
        if day < quiet_from:
            for _ in range(rng.choice((1, 1, 2))):
                amount = _money(rng.uniform(15, 400))
                spent += amount
                c.add(
                    day + rng.uniform(0, 25),
                    "transaction",
                    account_id="cc",
                    account_type="credit_card",
                    direction="debit",
                    amount=amount,
                    rail="card",
                )
        balance = round(carried + spent, 2)
        if balance > 0 or day < quiet_from:
            paid = balance if transactor else round(balance * rng.uniform(0.05, 0.4), 2)
            c.add(
                day + 28,
                "statement",
                account_id="cc",
                statement_balance=balance,
                amount_paid=paid,
                minimum_due=round(balance * 0.03, 2),
            )
            carried = round(balance - paid, 2)
        month += 1
    if closed is not None:
        c.add(closed, "account_closed", account_id="cc", account_type="credit_card")


CONTRACT_PRODUCTS = (
    ("annual_pass", 365, "park"),
    ("auto_insurance", 365, None),
    ("software_license", 365, None),
    ("gym_membership", 365, "gym"),
    ("streaming_plan", 365, None),
    ("car_lease", 1_095, None),
)


def _contracts(c: _Customer) -> None:
    """One or two contracts: renewals (automatic or by hand), cancellations, lapses, and the
    usage and visits that keep an auto-renewing one from looking unused."""
    rng = c.rng
    for n in range(rng.choice((1, 1, 2))):
        product, term, venue = rng.choice(CONTRACT_PRODUCTS)
        cid = f"k{n + 1}"
        auto = rng.random() < 0.6
        expires = rng.uniform(20, min(term, c.days))
        used = rng.random() < 0.75
        c.add(
            rng.uniform(0, 3),
            "contract",
            contract_id=cid,
            product=product,
            status="active",
            expires_at=format_ms(c.at(expires)),
            auto_renew=auto,
        )
        day = rng.uniform(3, 40)
        while used and day < c.days:
            if venue is not None:
                sentiment = rng.choices(("positive", "neutral", "negative"), (5, 4, 1))[0]
                c.add(day, "visit", venue=venue, sentiment=sentiment, contract_id=cid)
            else:
                c.add(day, "product_usage", product=product, contract_id=cid, activity="login")
            day += rng.uniform(20, 75)
        while expires < c.days:
            if auto:
                if rng.random() < 0.9:
                    c.add(
                        expires - 1,
                        "auto_renew_charged",
                        contract_id=cid,
                        amount=float(rng.choice((49, 99, 249, 480))),
                        expires_at=format_ms(c.at(expires + term)),
                    )
                    expires += term
                    continue
                c.add(
                    expires - rng.uniform(5, 40),
                    "contract",
                    contract_id=cid,
                    product=product,
                    status="cancelled",
                    expires_at=format_ms(c.at(expires)),
                    auto_renew=False,
                )
                break
            if rng.random() < 0.6:
                c.add(
                    expires - rng.uniform(2, 45),
                    "contract",
                    contract_id=cid,
                    product=product,
                    status="renewed",
                    expires_at=format_ms(c.at(expires + term)),
                    auto_renew=False,
                )
                expires += term
                continue
            c.add(
                expires,
                "contract",
                contract_id=cid,
                product=product,
                status="expired",
                expires_at=format_ms(c.at(expires)),
                auto_renew=False,
            )
            break


PURCHASE_CATEGORIES = (
    # (category, typical days between purchases, price)
    ("air_filter", 90, 19.99),
    ("car_service", 180, 240.0),
    ("phone", 700, 799.0),
    ("coffee_beans", 35, 14.5),
    ("contact_lenses", 60, 39.0),
    ("ski_trip", 365, 950.0),
    ("concert_tickets", 0, 85.0),  # no habit: now and then
)


def _purchases(c: _Customer) -> None:
    """Purchases with a personal cycle per category, which some customers then break off.

    A regular buyer comes back after the same number of days at the same time of day, so the
    interval equals the personal median and nothing is due; now and then a purchase is late
    (``replacement_due`` rightly fires), and a customer who stops buying gets one reminder.
    """
    rng = c.rng
    for category, cycle, price in rng.sample(PURCHASE_CATEGORIES, rng.choice((1, 1, 2, 3))):
        day = float(rng.randrange(0, max(cycle, 60)))
        stop = rng.uniform(c.days * 0.4, c.days * 1.5)
        personal = max(7, round(cycle * rng.uniform(0.75, 0.98)))
        second = rng.randrange(8 * 3_600, 20 * 3_600)
        while day < min(stop, c.days):
            c.add(day, "purchase", product_category=category, amount=_money(price), second=second)
            if category == "ski_trip":
                day += rng.randrange(345, 385)
            elif not cycle:
                day += rng.randrange(30, 240)
            elif rng.random() < 0.08:
                day += personal + rng.randrange(3, 30)  # late this time
            else:
                day += personal


def _service(c: _Customer) -> None:
    """Branch or store visits with sentiment, and complaints (some after a bad visit)."""
    rng = c.rng
    day = rng.uniform(0, 90)
    while day < c.days:
        sentiment = rng.choices(("positive", "neutral", "negative"), (4, 4, 2))[0]
        c.add(day, "visit", venue=rng.choice(("branch", "store", "app")), sentiment=sentiment)
        if sentiment == "negative" and rng.random() < 0.35:
            c.add(
                day + rng.uniform(0, 2),
                "complaint",
                category=rng.choice(("fees", "queue", "staff", "app")),
                resolved=rng.random() < 0.5,
            )
        day += rng.uniform(40, 160)


def _background(customer_id: str, rng: random.Random, start_ms: int, end_ms: int) -> list[Event]:
    """A background customer: a profile and a random mix of the bank's and shops' products."""
    c = _Customer(customer_id, rng, start_ms, end_ms)
    _profile(c)
    for share, build in (
        (0.6, _checking),
        (0.3, _savings),
        (0.4, _card),
        (0.35, _contracts),
        (0.5, _purchases),
        (0.4, _service),
    ):
        if rng.random() < share:
            build(c)
    return c.events


# --- engagement -----------------------------------------------------------------------------


def _engagements(
    candidates: Iterable[Candidate],
    rng: random.Random,
    end_ms: int,
    held_out: Callable[[Candidate], bool] = lambda c: False,
    planted: frozenset[str] = frozenset(),
) -> list[tuple[str, Event]]:
    """Answers to earlier decisions: delivered, opened, clicked, converted, unsubscribed or
    bounced, at plausible delays. Drawn for every candidate the model fired (the model does not
    know which ones the contact policy will suppress): an answer to a decision that was in
    fact suppressed is noise to the ledger, except that a bounce stops marketing on its channel
    until a later delivery (``policy.undeliverable``). A decision the policy holds out
    (``held_out``) sent nothing, so it gets no answer; a decision whose conversion is planted
    (``planted``) gets no ``converted`` answer, which would convert it whatever was planted."""
    out: list[tuple[str, Event]] = []
    for n, c in enumerate(sorted(candidates, key=lambda c: (c.triggered_at_ms, c.decision_id))):
        at = c.triggered_at_ms + rng.randrange(600, 7_200) * 1_000
        steps: list[str] = []
        if rng.random() < 0.04:
            steps.append("bounced")
        else:
            steps.append("delivered")
            if rng.random() < 0.35:
                steps.append("opened")
                if rng.random() < 0.3:
                    steps.append("clicked")
                    if rng.random() < 0.3 and c.decision_id not in planted:
                        steps.append("converted")
            elif rng.random() < 0.03:
                steps.append("unsubscribed")
        if held_out(c):
            continue
        for i, action in enumerate(steps):
            at += i * rng.randrange(1_800, 86_400) * 1_000
            if at >= end_ms:
                break
            out.append(
                (
                    c.customer_id,
                    {
                        "event_id": f"{c.customer_id}-g{n}-{i}",
                        "customer_id": c.customer_id,
                        "type": "engagement",
                        "occurred_at": format_ms(at),
                        "decision_id": c.decision_id,
                        "channel": c.channel,
                        "action": action,
                        "source": "messaging",
                    },
                )
            )
    return out


# --- malformed records ------------------------------------------------------------------------


def _malformed(
    rng: random.Random, n: int, template: SimRecord, customer_id: str
) -> tuple[bytes | None, bytes]:
    """A record every consumer must reject, one of several kinds of producer mistakes."""
    body: dict[str, Any] = orjson.loads(template.value)
    body["event_id"] = f"{customer_id}-bad{n}"
    key: bytes | None = customer_id.encode()
    kind = rng.randrange(7)
    if kind == 0:
        return key, orjson.dumps(body)[: rng.randrange(5, 40)]  # truncated JSON
    if kind == 1:
        body.pop("occurred_at")
    elif kind == 2:
        body["occurred_at"] = body["occurred_at"].replace("Z", "").replace("T", " ")
    elif kind == 3:
        body["type"] = body["type"].upper()
    elif kind == 4:
        key = None
    elif kind == 5:
        key = b"someone-else"
    else:
        body["amount"] = -abs(float(body.get("amount", 10)))
        body["type"] = "purchase" if template.kind == "usage" else "transaction"
    return key, orjson.dumps(body)


# --- the model: ground truth by running the pure core -----------------------------------------


class _Collect:
    """A publish function for the in-process processor that keeps every decision."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    async def __call__(self, decision: Decision) -> Awaitable[None]:
        self.decisions.append(decision)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _LiveStateCore(BoundCore):
    """The bound core with states kept as objects in the stores instead of bytes.

    Safe because here the core is asked not to mutate a state it was given (``step`` and
    ``advance`` work on a copy); it saves the serialization the worker's table needs and the
    model does not.
    """

    def load(self, raw: Any) -> CustomerState:
        state: CustomerState = raw
        return state

    def dump(self, state: CustomerState) -> Any:
        return state

    def step(
        self, state: CustomerState | None, event: ev.Event, now_ms: int
    ) -> tuple[CustomerState, list[Candidate], bool]:
        result = core.step(state, event, now_ms, self.params)
        return result.state, result.candidates, result.duplicate

    def advance(self, state: CustomerState, now_ms: int) -> tuple[CustomerState, list[Candidate]]:
        result = core.advance(state, now_ms, self.params)
        return result.state, result.candidates


def run_model(records: Iterable[SimRecord], config: Any = None) -> list[Candidate]:
    """Every candidate the pure core fires over ``records``, fed as the worker is fed: per
    partition in order, with the event clock (``config``: None for the defaults)."""
    return [d.candidate for d in model_decisions(records, config)]


def model_decisions(records: Iterable[SimRecord], config: Any = None) -> list[Decision]:
    """As ``run_model``, the decisions (contact-all) with the stream time each was made at."""
    decoder = Decoder()
    collect = _Collect()
    processor = Processor(
        _LiveStateCore(build_core(config if config is not None else build_config()).params),
        Stores({}, {}, {}),
        Clock("event"),
        ContactAll(),
        collect,
        Metrics(),
    )
    offsets: dict[tuple[str, int], int] = collections.defaultdict(int)

    async def feed() -> None:
        for r in records:
            offset = offsets[(r.kind, r.partition)]
            offsets[(r.kind, r.partition)] = offset + 1
            if not r.valid:
                continue
            event = decoder.decode(r.kind, r.key, r.value, r.at_ms)
            await processor.on_event(r.kind, r.partition, offset, event)

    asyncio.run(feed())
    return collect.decisions


# --- putting a run together -------------------------------------------------------------------


def _plan(config: SimConfig) -> tuple[list[tuple[str, bool]], list[str]]:
    """Which customers carry a planted scenario or a near-miss: (trigger, near_miss) pairs."""
    longest = config.days - SPAN_MARGIN_DAYS  # a scenario's span must end before this day
    fits = [t for t in scenarios.BUILDERS if scenarios.SPAN_DAYS[t] < longest]
    skipped = [t for t in scenarios.BUILDERS if t not in fits]
    plan: list[tuple[str, bool]] = []
    if not fits:
        return plan, skipped
    for near, rate in ((False, config.planted_rate), (True, config.near_miss_rate)):
        count = max(len(fits), round(config.customers * rate)) if rate > 0 else 0
        plan.extend((fits[i % len(fits)], near) for i in range(count))
    if len(plan) > config.customers:
        raise ValueError(
            f"{config.customers} customers cannot carry {len(plan)} planted scenarios and "
            "near-misses: raise --customers or lower the rates"
        )
    return plan, skipped


def _kind(event: Event) -> str:
    return "account" if event["type"] in ACCOUNT_TYPES else "usage"


def heartbeat_customer(partition: int, partitions: int) -> str:
    """The clock customer of ``partition``: ``clock-p<partition>`` if Kafka's default
    partitioner puts that key there, else the first ``clock-p<partition>-<n>`` it does. A key
    produced to another partition than its hash names is a misrouted record to the worker,
    which forwards it to the partition of its hash: that partition's stream time would move
    instead, and due items of the intended one would wait."""
    cid, n = f"{HEARTBEAT_PREFIX}{partition}", 0
    while partition_for(cid.encode(), partitions) != partition:
        n += 1
        cid = f"{HEARTBEAT_PREFIX}{partition}-{n}"
    return cid


def _heartbeats(
    timeline: list[tuple[int, int, str, str | None, Event]], config: SimConfig
) -> list[tuple[int, int, str, str | None, Event]]:
    """Clock records (profile events of one quiet customer per partition) on every day a
    partition has no event of its own, and on every partition at the very end, so that every
    partition's stream time moves steadily and passes the last due time."""
    busy: dict[int, set[int]] = collections.defaultdict(set)
    for at, partition, *_ in timeline:
        busy[partition].add((at - config.start_ms) // MS_PER_DAY)
    out: list[tuple[int, int, str, str | None, Event]] = []
    last = config.run_days
    for p in range(config.partitions):
        cid = heartbeat_customer(p, config.partitions)
        for day in range(last + 1):
            if day in busy[p] and day < last:
                continue
            at = config.start_ms + day * MS_PER_DAY + (MS_PER_DAY // 2 if day < last else 0)
            event = {
                "event_id": f"{cid}-d{day}",
                "customer_id": cid,
                "type": "profile",
                "occurred_at": format_ms(at),
                "source": "simulator-clock",
            }
            out.append((at, p, "usage", cid, event))
    return out


def generate(config: SimConfig, *, verify: bool = False) -> Simulation:
    """Build a whole run from ``config`` alone (deterministic: no clock, no global RNG).

    The model runs over the customers' histories, then once more with the planted conversions'
    goal events (``_plant_conversions``): what it fires then is the ground truth, and a
    decision a goal event causes for a planted customer (a renewed contract's next reminders)
    is added to that customer's expectations as ``caused``. The engagement answers are added
    last: they change no trigger (no trigger reads engagement or consent, and every record is
    produced in event-time order, so stream time at each customer event is that event's time
    either way), and the final clock records pin every partition's last stream time. ``verify``
    runs the model a third time over the final records and records any difference as a
    disagreement.
    """
    plan, skipped = _plan(config)
    master = random.Random(config.seed)  # noqa: S311 - a simulation, not cryptography
    order = list(range(config.customers))
    master.shuffle(order)  # planted customers hide among the others
    roles: dict[str, str] = {}
    planted: dict[str, scenarios.Scenario] = {}
    starts: dict[str, int] = {}
    timeline: list[tuple[int, int, str, str | None, Event]] = []
    width = max(5, len(str(config.customers)))

    def add(customer_id: str, events: list[Event]) -> None:
        partition = partition_for(customer_id.encode(), config.partitions)
        for e in events:
            at = parse_rfc3339_ms(e["occurred_at"]) or 0
            timeline.append((at, partition, _kind(e), customer_id, e))

    for i in range(config.customers):
        cid = f"c-{order[i]:0{width}d}"
        rng = random.Random(f"{config.seed}/{cid}")  # noqa: S311 - a simulation
        if i < len(plan):
            trigger, near = plan[i]
            latest = config.days - scenarios.SPAN_DAYS[trigger] - SPAN_MARGIN_DAYS
            start_ms = config.start_ms + rng.randrange(0, latest) * MS_PER_DAY
            start_ms += rng.randrange(8 * 3_600, 12 * 3_600) * 1_000
            scenario = scenarios.build(trigger, cid, start_ms, near_miss=near)
            roles[cid] = "near_miss" if near else "planted"
            planted[cid] = scenario
            starts[cid] = start_ms
            add(cid, scenario.events)
        else:
            roles[cid] = "background"
            add(cid, _background(cid, rng, config.start_ms, config.end_ms))

    timeline.extend(_heartbeats(timeline, config))
    first = model_decisions(_records(timeline))
    conversions, goal_events = _plant_conversions(config, first, roles, planted, starts)
    for cid, e in goal_events:
        add(cid, [e])
    records = _records(timeline)
    decisions = model_decisions(records) if goal_events else first
    disagreements = _check_conversions(first, decisions, conversions, goal_events)
    candidates = [d.candidate for d in decisions]
    policy = _policy(config)
    if config.engagement:
        answers = _engagements(
            (c for c in candidates if not c.customer_id.startswith(HEARTBEAT_PREFIX)),
            random.Random(f"{config.seed}/engagement"),  # noqa: S311 - a simulation
            config.end_ms,
            held_out=lambda c: _arm(policy, c) == "holdout",
            planted=frozenset(c.decision_id for c in conversions),
        )
        for cid, e in answers:
            timeline.append(
                (
                    parse_rfc3339_ms(e["occurred_at"]) or 0,
                    partition_for(cid.encode(), config.partitions),
                    "usage",
                    cid,
                    e,
                )
            )
        records = _records(timeline)
    records = _with_malformed(records, config)
    caused = _caused(first, decisions, roles)
    expectations, more = _truth(candidates, roles, planted, caused)
    disagreements.extend(more)
    if verify:
        again = run_model(records)
        if sorted(c.decision_id for c in again) != sorted(c.decision_id for c in candidates):
            disagreements.append("the model fires differently once engagement is added")
    for line in disagreements:
        log.warning("simulator: the core disagrees with the catalogue: %s", line)
    return Simulation(config, records, expectations, roles, skipped, disagreements, conversions)


def _policy(config: SimConfig) -> Policy:
    section = {
        "holdout_rate": config.holdout_rate,
        "global_control_rate": config.global_control_rate,
    }
    return Policy.from_config(build_config({"policy": section})["policy"])


def _arm(policy: Policy, c: Candidate) -> str:
    """The arm the ledger gives ``c`` by hash: a marketing candidate of the global control
    group or of the trigger's holdout group is held out whatever the caps say; the rest is
    contacted (or suppressed, which the simulator cannot know and plants like a contact)."""
    if c.category == MARKETING and (
        policy.in_global_control(c.customer_id) or policy.is_holdout(c.customer_id, c.trigger)
    ):
        return "holdout"
    return "contact"


def _plant_conversions(
    config: SimConfig,
    decisions: list[Decision],
    roles: dict[str, str],
    planted: dict[str, scenarios.Scenario],
    starts: dict[str, int],
) -> tuple[list[PlantedConversion], list[tuple[str, Event]]]:
    """For every planted scenario's own decisions with a goal: whether it converts (drawn with
    the arm's probability from the customer's own stream) and, if so, its goal event, inside
    the window of every decision of its group (one customer's decisions of one trigger: the
    renewal reminders), after the last of them and short of the window's end by a fifth of it,
    so that a decision made a little earlier or later once the goal event is in the stream
    still has it inside its window."""
    policy = _policy(config)
    groups: dict[tuple[str, str], list[Decision]] = collections.defaultdict(list)
    for d in decisions:
        c = d.candidate
        if roles.get(c.customer_id) != "planted" or c.trigger not in goals.BUILTIN_GOALS:
            continue
        if c.trigger not in planted[c.customer_id].expected:
            continue
        groups[(c.customer_id, c.trigger)].append(d)
    conversions: list[PlantedConversion] = []
    events: list[tuple[str, Event]] = []
    for (cid, trigger), group in sorted(groups.items()):
        group.sort(key=lambda d: (d.decided_at_ms, d.decision_id))
        rng = random.Random(f"{config.seed}/{cid}/conversion/{trigger}")  # noqa: S311
        arm = _arm(policy, group[0].candidate)
        contact, holdout = config.conversion_rates(trigger)
        p = holdout if arm == "holdout" else contact
        converted = rng.random() < p
        fraction = rng.uniform(0.1, 0.8)
        event: Event | None = None
        at: int | None = None
        if converted:
            goal = goals.BUILTIN_GOALS[trigger]
            low = group[-1].decided_at_ms
            high = min(d.decided_at_ms for d in group) + goal.window_days * MS_PER_DAY
            if goal.until_expiry:
                expiry = starts[cid] + scenarios.GOAL_EXPIRY_DAYS[trigger] * MS_PER_DAY
                high = min(high, expiry)
            at = low + round(fraction * (high - low) / 1_000) * 1_000
            event = scenarios.goal_event(trigger, cid, starts[cid], at, len(events) + 1)
            assert event is not None  # noqa: S101 - every trigger of BUILTIN_GOALS has one
            events.append((cid, event))
        conversions.extend(
            PlantedConversion(
                d.decision_id, cid, trigger, arm, p, converted,
                None if event is None else event["event_id"], at, d.candidate.category,
            )
            for d in group
        )  # fmt: skip
    return conversions, events


def _check_conversions(
    before: list[Decision],
    after: list[Decision],
    conversions: list[PlantedConversion],
    goal_events: list[tuple[str, Event]],
) -> list[str]:
    """What the goal events broke: a planted decision that no longer fires, or a goal event
    that fell outside its decision's window (a decision made later once the event is there)."""
    problems: list[str] = []
    made = {d.decision_id: d for d in after}
    for d in before:
        if d.decision_id not in made:
            problems.append(
                f"{d.candidate.customer_id}: {d.candidate.trigger} no longer fires once the "
                "planted goal events are in the stream"
            )
    for conversion in conversions:
        decision = made.get(conversion.decision_id)
        at = conversion.goal_at_ms
        if decision is None or at is None:
            continue
        goal = goals.BUILTIN_GOALS[conversion.trigger]
        if (
            not decision.decided_at_ms
            < at
            <= decision.decided_at_ms + goal.window_days * MS_PER_DAY
        ):
            problems.append(
                f"{conversion.customer_id}: the goal event of {conversion.trigger} lies outside "
                "its decision's window"
            )
    return problems


def _caused(
    before: list[Decision], after: list[Decision], roles: dict[str, str]
) -> dict[tuple[str, str], int]:
    """Decisions of planted customers that only the goal events made fire."""
    had = {d.decision_id for d in before}
    out: dict[tuple[str, str], int] = collections.Counter()
    for d in after:
        c = d.candidate
        if d.decision_id not in had and roles.get(c.customer_id) == "planted":
            out[(c.customer_id, c.trigger)] += 1
    return out


def _records(timeline: list[tuple[int, int, str, str | None, Event]]) -> list[SimRecord]:
    # Event-time order; ties keep generation order (Python's sort is stable).
    ordered = sorted(timeline, key=lambda t: t[0])
    return [
        SimRecord(at, kind, partition, None if cid is None else cid.encode(), orjson.dumps(e))
        for at, partition, kind, cid, e in ordered
    ]


def _with_malformed(records: list[SimRecord], config: SimConfig) -> list[SimRecord]:
    """Sprinkle malformed records among the valid ones, each next to a valid neighbour."""
    rng = random.Random(f"{config.seed}/malformed")  # noqa: S311 - a simulation
    count = round(len(records) * config.malformed_rate)
    if not count:
        return records
    decoder = Decoder()
    positions = sorted(rng.sample(range(len(records)), count))
    out: list[SimRecord] = []
    last = 0
    for n, pos in enumerate(positions):
        out.extend(records[last:pos])
        last = pos
        template = records[pos]
        cid = orjson.loads(template.value)["customer_id"]
        key, value = _malformed(rng, n, template, cid)
        try:  # a malformed record that slipped through would join a customer's history
            decoder.decode(template.kind, key, value, template.at_ms)
        except InvalidEvent:
            pass
        else:  # pragma: no cover - every kind above breaks a rule
            raise AssertionError(f"malformed record {value!r} was accepted")
        out.append(SimRecord(template.at_ms, template.kind, template.partition, key, value, False))
    out.extend(records[last:])
    return out


def _truth(
    candidates: list[Candidate],
    roles: dict[str, str],
    planted: dict[str, scenarios.Scenario],
    caused: dict[tuple[str, str], int] | None = None,
) -> tuple[list[Expectation], list[str]]:
    fired: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for c in candidates:
        fired[(c.customer_id, c.trigger)].append(c.instance)
    out: list[Expectation] = []
    disagreements: list[str] = []
    for cid, scenario in planted.items():
        role = roles[cid]
        own = scenario.name.removeprefix("near_miss_")
        expected = dict(scenario.expected)
        if role == "near_miss":
            expected.setdefault(own, 0)
        extra = {t: n for (c, t), n in (caused or {}).items() if c == cid}
        triggers = set(expected) | set(extra) | {t for (c, t) in fired if c == cid}
        for trigger in sorted(triggers):
            instances = tuple(fired.get((cid, trigger), ()))
            want = expected.get(trigger, 0) + extra.get(trigger, 0)
            if len(instances) != want:
                disagreements.append(
                    f"{cid} ({scenario.name}): {trigger} expected {want}, core {len(instances)}"
                )
            out.append(
                Expectation(
                    cid, trigger, want, role, scenario.name, len(instances), instances,
                    extra.get(trigger, 0),
                )
            )  # fmt: skip
    for (cid, trigger), keys in sorted(fired.items()):
        if roles.get(cid) == "background":
            n = len(keys)
            out.append(Expectation(cid, trigger, n, "background", None, n, tuple(keys)))
        elif cid not in roles and cid not in planted:  # a heartbeat customer never fires
            disagreements.append(f"{cid}: {trigger} fired for a clock record")
    return out, disagreements


# --- producing ------------------------------------------------------------------------------


Progress = Callable[[int], None]


async def produce(
    sim: Simulation,
    bootstrap_servers: str,
    topics: TopicNames,
    *,
    pace: str = "fast",
    speed: float = 86_400.0,
    max_batch_size: int = 8_192,
    on_progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    throttle: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Produce the run's records in event-time order; returns how many were sent.

    ``pace="fast"`` sends as fast as the broker acknowledges; ``"realtime"`` holds each record
    until ``(occurred_at - first) / speed`` seconds after the start (``speed`` 1 is real time,
    86,400 a simulated day per second). Small batches: Tansu handles them best. ``throttle``
    (awaited every 500 records with the count sent) lets a caller hold production back.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        linger_ms=5,
        max_batch_size=max_batch_size,
        acks=1,
    )
    await producer.start()
    sent = 0
    try:
        first = sim.records[0].at_ms if sim.records else 0
        began = time.monotonic()
        pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        for record in sim.records:
            if stop is not None and stop.is_set():
                break
            if pace == "realtime":
                due = began + (record.at_ms - first) / 1_000 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            topic = topics.account_events if record.kind == "account" else topics.usage_events
            pending.append(
                await producer.send(topic, record.value, key=record.key, partition=record.partition)
            )
            sent += 1
            # Bound what is in flight, and report progress as acknowledgements come in.
            while len(pending) > 2_000 or (pending and pending[0].done()):
                await pending.popleft()
            if sent % 500 == 0:
                if on_progress is not None:
                    on_progress(sent)
                if throttle is not None:
                    await throttle(sent)
        while pending:
            await pending.popleft()
        if on_progress is not None:
            on_progress(sent)
    finally:
        await producer.stop()
    return sent


def counts_by_role(sim: Simulation) -> dict[str, collections.Counter[str]]:
    """Expected decisions per trigger, split by role (for summaries)."""
    out: dict[str, collections.Counter[str]] = {role: collections.Counter() for role in ROLES}
    for e in sim.expectations:
        out[e.role][e.trigger] += e.expected
    return out


def index_expectations(
    expectations: Iterable[Expectation],
) -> dict[tuple[str, str], Expectation]:
    """Expectations by (customer, trigger)."""
    return {(e.customer_id, e.trigger): e for e in expectations}


def load_truth(path: Path) -> tuple[dict[str, Any], list[Expectation]]:
    """Read a ground-truth file back: its run record and its expectations."""
    run: dict[str, Any] = {}
    out: list[Expectation] = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        doc = orjson.loads(line)
        if doc.get("record") == "run":
            run = doc
        elif doc.get("record") == "expectation":
            out.append(
                Expectation(
                    doc["customer_id"],
                    doc["trigger"],
                    doc["expected"],
                    doc["role"],
                    doc.get("scenario"),
                    doc.get("model", 0),
                    tuple(doc.get("instances", ())),
                    doc.get("caused", 0),
                )
            )
    return run, out


def load_conversions(path: Path) -> list[PlantedConversion]:
    """The planted conversions of a ground-truth file."""
    out: list[PlantedConversion] = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            doc = orjson.loads(line)
            if doc.get("record") == "conversion":
                out.append(PlantedConversion.from_json(doc))
    return out


__all__ = [
    "Expectation",
    "PlantedConversion",
    "SimConfig",
    "SimRecord",
    "Simulation",
    "generate",
    "produce",
    "run_model",
]
