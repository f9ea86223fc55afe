"""Labelled customer histories: for every trigger, a planted scenario and a near-miss.

Each scenario is one customer's events (contract JSON, ready to produce) and the triggers that
must fire for that customer once stream time has moved past ``settle_ms``. A near-miss stays
just on the wrong side of one clause of its trigger and must fire nothing (or only what is
listed). The integration tests, the simulator and the benchmarks share them. Pure: no I/O.

Time-based near-misses use a clause that no amount of waiting changes (too few statements, a
closed card, no configured cycle), because other customers move a partition's stream time
arbitrarily far.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.core.timeutil import MS_PER_DAY, format_ms

Event = dict[str, Any]


@dataclass
class Scenario:
    """One customer's history and what it must cause."""

    name: str
    customer_id: str
    events: list[Event] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)  # trigger -> decisions expected
    settle_ms: int = 0  # stream time needed before every expected decision is due

    @property
    def planted(self) -> bool:
        return not self.name.startswith("near_miss")


class _History:
    def __init__(self, customer_id: str, start_ms: int) -> None:
        self.customer_id = customer_id
        self.start_ms = start_ms
        self.events: list[Event] = []

    def at(self, day: float) -> int:
        return self.start_ms + round(day * MS_PER_DAY)

    def add(self, day: float, type_: str, **fields: Any) -> int:
        at = self.at(day)
        self.events.append(
            {
                "event_id": f"{self.customer_id}-e{len(self.events) + 1}",
                "customer_id": self.customer_id,
                "type": type_,
                "occurred_at": format_ms(at),
                **fields,
            }
        )
        return at


def _savings(h: _History, baseline: float = 20_000) -> None:
    h.add(0, "account_opened", account_id="sav", account_type="savings")
    h.add(0, "account_opened", account_id="chk", account_type="checking")
    for day in (1, 30, 60, 85):
        h.add(day, "balance", account_id="sav", account_type="savings", balance=baseline)


def _debit(
    h: _History,
    day: float,
    amount: float,
    rail: str = "internal",
    account: str = "sav",
    account_type: str = "savings",
) -> None:
    h.add(
        day,
        "transaction",
        account_id=account,
        account_type=account_type,
        direction="debit",
        amount=amount,
        rail=rail,
    )


def _credit(h: _History, day: float, amount: float) -> None:
    h.add(
        day,
        "transaction",
        account_id="chk",
        account_type="checking",
        direction="credit",
        amount=amount,
        rail="internal",
    )


def _drop(h: _History) -> None:
    # Baseline 20,000; 6,000 on day 90 and 5,000 on day 92: a drop of 11,000 on day 92.
    _debit(h, 90, 6_000)
    _debit(h, 92, 5_000)


LATENESS_DAYS = 7


def savings_drop_to_checking(h: _History, near_miss: bool) -> dict[str, int]:
    _savings(h)
    _drop(h)
    # 80 % of 11,000 is 8,800: that matches; 8,799 does not, and the drop stays unexplained.
    _credit(h, 93, 8_799 if near_miss else 8_800)
    return {"savings_drop_unexplained": 1} if near_miss else {"savings_drop_to_checking": 1}


def savings_drop_to_wire(h: _History, near_miss: bool) -> dict[str, int]:
    _savings(h)
    # The wire comes first: a follow-up up to 7 days before the drop still matches.
    _debit(
        h, 88, 8_799 if near_miss else 8_800, rail="wire", account="chk", account_type="checking"
    )
    _drop(h)
    return {"savings_drop_unexplained": 1} if near_miss else {"savings_drop_to_wire": 1}


def savings_drop_unexplained(h: _History, near_miss: bool) -> dict[str, int]:
    # Near miss: the baseline is 9,999.99 (below 10,000), so no drop at all.
    _savings(h, baseline=9_999.99 if near_miss else 20_000)
    if near_miss:
        _debit(h, 90, 6_000)
    else:
        _drop(h)
    return {} if near_miss else {"savings_drop_unexplained": 1}


def renewal_after_positive_visit(h: _History, near_miss: bool) -> dict[str, int]:
    # Auto-renewing, used contract: no reminders and no unused check, only the visit trigger.
    h.add(
        0,
        "contract",
        contract_id="pass",
        product="annual_pass",
        status="active",
        expires_at=format_ms(h.at(100)),
        auto_renew=True,
    )
    # Used on day 25: the visit on day 81 comes within 60 days, so the use never lapses.
    h.add(25, "product_usage", product="annual_pass", activity="login", contract_id="pass")
    if near_miss:
        h.add(52, "complaint", category="queue")  # 29 days before the visit: excluded
    h.add(81, "visit", venue="north gate", sentiment="positive", contract_id="pass")
    return {} if near_miss else {"renewal_after_positive_visit": 1}


def renewal_reminder(h: _History, near_miss: bool) -> dict[str, int]:
    h.add(
        0,
        "contract",
        contract_id="ins",
        product="auto_insurance",
        status="active",
        expires_at=format_ms(h.at(120)),
        auto_renew=False,
    )
    if near_miss:
        h.add(
            80,
            "contract",
            contract_id="ins",
            product="auto_insurance",
            status="cancelled",
            expires_at=format_ms(h.at(120)),
            auto_renew=False,
        )
        return {}
    return {"renewal_reminder": 2}  # 30 and 7 days before the expiry


def auto_renew_confirmation(h: _History, near_miss: bool) -> dict[str, int]:
    # A quarterly licence, used in every term, so the charge is the only decision: the first
    # term's unused-check (day 70) sees the use on day 50, the renewed term's (day 170) the use
    # on day 120, and the renewed term then expires quietly on day 200.
    h.add(
        0,
        "contract",
        contract_id="lic",
        product="software_license",
        status="active",
        expires_at=format_ms(h.at(100)),
        auto_renew=True,
    )
    h.add(50, "product_usage", product="software_license", activity="software_update")
    if near_miss:  # never charged: the licence simply runs out on day 100
        return {}
    h.add(95, "auto_renew_charged", contract_id="lic", amount=99.0, expires_at=format_ms(h.at(200)))
    # Used at least every 60 days while the licence runs: no usage lapse either.
    h.add(105, "product_usage", product="software_license", activity="login")
    h.add(120, "product_usage", product="software_license", activity="login")
    h.add(160, "product_usage", product="software_license", activity="login")
    return {"auto_renew_confirmation": 1}


def auto_renew_unused(h: _History, near_miss: bool) -> dict[str, int]:
    h.add(
        0,
        "contract",
        contract_id="gym",
        product="gym_membership",
        status="active",
        expires_at=format_ms(h.at(150)),
        auto_renew=True,
    )
    # The check is due at day 120 and looks back 90 days, to day 30: usage on day 31 counts.
    h.add(31 if near_miss else 29, "visit", venue="gym", sentiment="neutral", contract_id="gym")
    # That single use also lapses 60 days later (days 89 and 91), while the contract is open.
    return {"usage_lapsed": 1} if near_miss else {"auto_renew_unused": 1, "usage_lapsed": 1}


def _card(h: _History, statements: list[tuple[float, float]]) -> None:
    h.add(0, "account_opened", account_id="cc", account_type="credit_card")
    _debit(h, 5, 120, rail="card", account="cc", account_type="credit_card")
    for i, (balance, paid) in enumerate(statements):
        h.add(
            30 * (i + 1),
            "statement",
            account_id="cc",
            statement_balance=balance,
            amount_paid=paid,
            minimum_due=round(balance * 0.03, 2),
        )


def lapsed_transactor(h: _History, near_miss: bool) -> dict[str, int]:
    # Paid in full 2 of 3 times: more than half. Near miss: a single statement cannot classify.
    _card(h, [(500, 500)] if near_miss else [(500, 500), (300, 300), (200, 20)])
    return {} if near_miss else {"lapsed_transactor": 1}


def lapsed_revolver(h: _History, near_miss: bool) -> dict[str, int]:
    # Paid in full 1 of 2 times: not more than half, so a revolver. Near miss: the card closes.
    _card(h, [(500, 500), (300, 30)])
    if near_miss:
        h.add(100, "account_closed", account_id="cc", account_type="credit_card")
        return {}
    return {"lapsed_revolver": 1}


def never_activated(h: _History, near_miss: bool) -> dict[str, int]:
    h.add(0, "account_opened", account_id="cc2", account_type="credit_card")
    if near_miss:  # activated on day 89; with no statements a lapse can never be classified
        _debit(h, 89, 15, rail="card", account="cc2", account_type="credit_card")
        return {}
    return {"never_activated": 1}


def replacement_due(h: _History, near_miss: bool) -> dict[str, int]:
    if near_miss:  # no configured cycle for this category and only two purchases
        h.add(0, "purchase", product_category="garden_hose", amount=25)
        h.add(40, "purchase", product_category="garden_hose", amount=25)
        return {}
    h.add(0, "purchase", product_category="air_filter", amount=19.99)  # configured: 90 days
    return {"replacement_due": 1}


def usual_booking_missed(h: _History, near_miss: bool) -> dict[str, int]:
    # Two bookings a year apart make a habit; 334 days apart do not.
    h.add(0, "purchase", product_category="ski_trip", amount=900)
    h.add(334 if near_miss else 365, "purchase", product_category="ski_trip", amount=950)
    return {} if near_miss else {"usual_booking_missed": 1}


def _internal_credit(h: _History, day: float, amount: float, account_type: str) -> None:
    h.add(
        day,
        "transaction",
        account_id=account_type[:3],
        account_type=account_type,
        direction="credit",
        amount=amount,
        rail="internal",
    )


def savings_drop_to_own_investment(h: _History, near_miss: bool) -> dict[str, int]:
    _savings(h)
    _drop(h)
    # 80 % of 11,000 goes to the customer's own investment account (8,799: unexplained).
    _internal_credit(h, 94, 8_799 if near_miss else 8_800, "investment")
    return {"savings_drop_unexplained": 1} if near_miss else {"savings_drop_to_own_investment": 1}


def savings_drop_to_loan_payoff(h: _History, near_miss: bool) -> dict[str, int]:
    _savings(h)
    _drop(h)
    # The loan account is credited 7 days after the drop (8 days: too late, unexplained).
    _internal_credit(h, 100 if near_miss else 99, 11_000, "loan")
    return {"savings_drop_unexplained": 1} if near_miss else {"savings_drop_to_loan_payoff": 1}


def usage_lapsed(h: _History, near_miss: bool) -> dict[str, int]:
    # An auto-renewing streaming contract used on day 10, then not for 60 days: a lapse on day
    # 70 (its unused check-in of day 70 sees the use, so it stays quiet). Near miss: the
    # contract is cancelled on day 69, before the lapse.
    h.add(
        0,
        "contract",
        contract_id="tv",
        product="streaming",
        status="active",
        expires_at=format_ms(h.at(100)),
        auto_renew=True,
    )
    h.add(10, "product_usage", product="streaming", activity="watch", contract_id="tv")
    if near_miss:
        h.add(
            69,
            "contract",
            contract_id="tv",
            product="streaming",
            status="cancelled",
            expires_at=format_ms(h.at(100)),
            auto_renew=True,
        )
        return {}
    return {"usage_lapsed": 1}


def price_increase_at_risk(h: _History, near_miss: bool) -> dict[str, int]:
    # A complaint on day 1, then the price goes from 100.00 to 110.00 (near miss: 109.99) on
    # day 20, after the policy's 14 quiet days that follow a complaint; the contract is
    # cancelled on day 30 (no reminders, nothing more).
    def contract(day: float, status: str, price: float) -> None:
        h.add(
            day,
            "contract",
            contract_id="plan",
            product="mobile_plan",
            status=status,
            expires_at=format_ms(h.at(365)),
            auto_renew=True,
            price=price,
        )

    contract(0, "active", 100.0)
    h.add(1, "complaint", category="billing")
    contract(20, "active", 109.99 if near_miss else 110.0)
    contract(30, "cancelled", 110.0)
    return {} if near_miss else {"price_increase_at_risk": 1}


Builder = Callable[[_History, bool], dict[str, int]]

BUILDERS: dict[str, Builder] = {
    "savings_drop_to_checking": savings_drop_to_checking,
    "savings_drop_to_wire": savings_drop_to_wire,
    "savings_drop_unexplained": savings_drop_unexplained,
    "renewal_after_positive_visit": renewal_after_positive_visit,
    "renewal_reminder": renewal_reminder,
    "auto_renew_confirmation": auto_renew_confirmation,
    "auto_renew_unused": auto_renew_unused,
    "lapsed_transactor": lapsed_transactor,
    "lapsed_revolver": lapsed_revolver,
    "never_activated": never_activated,
    "replacement_due": replacement_due,
    "usual_booking_missed": usual_booking_missed,
    "savings_drop_to_own_investment": savings_drop_to_own_investment,
    "savings_drop_to_loan_payoff": savings_drop_to_loan_payoff,
    "usage_lapsed": usage_lapsed,
    "price_increase_at_risk": price_increase_at_risk,
}

# Per trigger, the day (from the scenario's start) by which its planted decisions and its
# near-miss's are all due, absence triggers' lateness included, and after which nothing more
# can come due for that customer: a scenario placed so that stream time passes start + span
# is complete, wherever the run ends after that. The simulator places scenarios with it.
SPAN_DAYS: dict[str, int] = {
    "savings_drop_to_checking": 92 + 7 + LATENESS_DAYS,
    "savings_drop_to_wire": 92 + 7 + LATENESS_DAYS,
    "savings_drop_unexplained": 92 + 7 + LATENESS_DAYS,
    "renewal_after_positive_visit": 100,  # the visit on day 81; the contract ends on day 100
    "renewal_reminder": 120,  # reminders on days 90 and 113; expiry on day 120
    "auto_renew_confirmation": 200,  # the renewed term ends on day 200
    "auto_renew_unused": 150,  # the check on day 120; the renewal on day 150
    "lapsed_transactor": 5 + 180,
    "lapsed_revolver": 5 + 180,
    "never_activated": 90,
    "replacement_due": 90,
    "usual_booking_missed": 365 + 365 + 14,
    "savings_drop_to_own_investment": 92 + 7 + LATENESS_DAYS,
    "savings_drop_to_loan_payoff": 92 + 8 + 7 + LATENESS_DAYS,
    "usage_lapsed": 100,  # the lapse on day 70; the contract ends on day 100
    "price_increase_at_risk": 30,  # the rise on day 20; cancelled on day 30
}

# Every expected decision is due by start + SETTLE_DAYS (absence triggers wait for the
# lateness too), and nothing further is due before start + HORIZON_DAYS: a run is complete
# when stream time ends between the two.
SETTLE_DAYS = 800
HORIZON_DAYS = 1000


def build(trigger: str, customer_id: str, start_ms: int, near_miss: bool = False) -> Scenario:
    """The planted scenario (or its near-miss) of ``trigger`` for one customer."""
    history = _History(customer_id, start_ms)
    expected = BUILDERS[trigger](history, near_miss)
    name = f"near_miss_{trigger}" if near_miss else trigger
    return Scenario(name, customer_id, history.events, expected, history.at(SETTLE_DAYS))


def all_scenarios(start_ms: int, prefix: str = "c") -> list[Scenario]:
    """One planted scenario and one near-miss per trigger, each its own customer."""
    return [
        build(trigger, f"{prefix}-{'miss' if near else 'hit'}-{trigger}", start_ms, near)
        for trigger in BUILDERS
        for near in (False, True)
    ]


# --- conversions: the goal event of a planted scenario's decision ---------------------------
#
# The goal (``streams/core/goals.py``, docs/outcomes.md's table) of each planted trigger that has
# one, as an event of the scenario's own accounts, contracts and categories. ``GOAL_EXPIRY_DAYS``
# is the day of the scenario's contract expiry, where a goal's window ends at the expiry.

GOAL_EXPIRY_DAYS: dict[str, int] = {"renewal_after_positive_visit": 100, "renewal_reminder": 120}


def goal_event(trigger: str, customer_id: str, start_ms: int, at_ms: int, n: int) -> Event | None:
    """The event that meets the goal of ``trigger``'s planted scenario (placed at ``start_ms``),
    at ``at_ms``; None when the trigger has no goal. ``n`` numbers the customer's goal events."""
    fields: dict[str, Any]
    if trigger == "savings_drop_to_checking":
        fields = {"type": "account_opened", "account_id": "loan", "account_type": "loan"}
    elif trigger == "savings_drop_to_wire":
        fields = {"type": "account_opened", "account_id": "inv", "account_type": "investment"}
    elif trigger == "savings_drop_unexplained":
        # The drop is 11,000: 6,000 back into the savings account is more than half of it.
        fields = {
            "type": "transaction", "account_id": "sav", "account_type": "savings",
            "direction": "credit", "amount": 6_000.0, "rail": "internal",
        }  # fmt: skip
    elif trigger in ("renewal_after_positive_visit", "renewal_reminder"):
        contract, product, auto = (
            ("pass", "annual_pass", True)
            if trigger == "renewal_after_positive_visit"
            else ("ins", "auto_insurance", False)
        )
        expires = start_ms + (GOAL_EXPIRY_DAYS[trigger] + 365) * MS_PER_DAY
        fields = {
            "type": "contract", "contract_id": contract, "product": product,
            "status": "renewed", "expires_at": format_ms(expires), "auto_renew": auto,
        }  # fmt: skip
    elif trigger == "auto_renew_unused":
        fields = {"type": "visit", "venue": "gym", "sentiment": "neutral", "contract_id": "gym"}
    elif trigger in ("lapsed_transactor", "lapsed_revolver", "never_activated"):
        card = "cc2" if trigger == "never_activated" else "cc"
        fields = {
            "type": "transaction", "account_id": card, "account_type": "credit_card",
            "direction": "debit", "amount": 80.0, "rail": "card",
        }  # fmt: skip
    elif trigger == "replacement_due":
        fields = {"type": "purchase", "product_category": "air_filter", "amount": 19.99}
    elif trigger == "usual_booking_missed":
        fields = {"type": "purchase", "product_category": "ski_trip", "amount": 950.0}
    else:
        return None
    return {
        "event_id": f"{customer_id}-goal{n}",
        "customer_id": customer_id,
        "occurred_at": format_ms(at_ms),
        **fields,
    }
