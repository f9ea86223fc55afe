"""Goals: what a trigger's contact is meant to cause, and whether a decision's goal was met.

Every decision of a trigger with a goal leaves a *pending goal* in the customer's record (the
``goals`` state slice, ``GoalsSlice``): the decision id, the trigger, ``decided_at``, the end of
the attribution window and the goal's *subject* (what the goal event must name: the dropped
savings account and the drop's amount, the contract, the card, the purchase category). An input
event converts it when it matches the subject and its ``occurred_at`` lies in
(``decided_at``, window end]; an ``engagement`` with ``action: converted`` naming the decision's
``decision_id`` converts it too (explicit attribution, same window). A goal not met expires when
the clock passes the window end plus the allowed lateness (so a goal event up to the lateness
behind stream time still counts, as it does for triggers): it resolves as not converted then.
Resolved goals wait in the slice as *ready outcomes* until the shell takes them
(``take_outcomes``), the way deferred decisions wait for the end of quiet hours.

The subject is derived from the decision's ``instance`` (its stable key, which names the
account, contract, card or category for every built-in trigger) and the record as it is when
the decision is made; so decision records and decision ids stay as they were.

Bounded: at most ``MAX_PENDING_GOALS`` pending per customer; beyond it the oldest (by
``decided_at``, then decision id) is dropped and counted (``dropped``).

Pure: no Faust, Redis or aiokafka here; only the core's own modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.core.decisions import Arm, Decision
from streams.core.events import (
    AccountOpened,
    AutoRenewCharged,
    Contract,
    Engagement,
    Event,
    ProductUsage,
    Purchase,
    Transaction,
    Visit,
)
from streams.core.state import DAY_MS, CustomerState
from streams.core.timeutil import format_ms, parse_rfc3339_ms

# schemas/decision_outcome.json's schema_version.
OUTCOME_SCHEMA_VERSION = 1

# The slice's name in the customer record (a family name no plugin may take).
SLICE = "goals"
MAX_PENDING_GOALS = 16
# Resolved outcomes not yet taken by the shell (it takes them in the call that resolved them;
# the cap is a backstop).
MAX_READY = 32
# The event types a goal can look at: the engine skips the goals for every other event.
GOAL_EVENTS: tuple[type, ...] = (
    AccountOpened,
    Transaction,
    Contract,
    AutoRenewCharged,
    ProductUsage,
    Visit,
    Purchase,
    Engagement,
)

# Goal kinds: what converts a decision, given its subject.
OPENED = "account_opened"  # subject {"types": [...]}: an account of one of these types opened
CREDITS = "credits"  # {"account", "drop"}: credits to the account summing to >= half the drop
OPENED_OR_CREDITS = "account_opened_or_credits"  # both of the above
RENEWED = "contract_renewed"  # {"contract"}: status renewed, or an auto-renewal charged
USED = "contract_used"  # {"contract", "product"}: product_usage/visit of it
CARD_DEBIT = "card_debit"  # {"card"}: a debit transaction on the card
PURCHASE = "purchase"  # {"category"}: a purchase of the category
KINDS = (OPENED, CREDITS, OPENED_OR_CREDITS, RENEWED, USED, CARD_DEBIT, PURCHASE)

Subject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GoalSpec:
    """A trigger's goal: its kind (``KINDS``), the default attribution window, whether the
    window also ends at the contract's expiry, and how the subject is found from the
    decision's ``instance`` and the customer's record (None: this decision has no goal)."""

    kind: str
    window_days: int
    subject: Callable[[CustomerState, str], Subject | None]
    until_expiry: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"goal kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


# --- subjects from the built-in triggers' instances ----------------------------------------


def _drop_subject(state: CustomerState, instance: str) -> Subject | None:
    # instance "<savings account>|<first debit id of the drop>"
    account_id, _, first_id = instance.partition("|")
    account = state.savings.get(account_id)
    drop = 0
    if account is not None:
        for pinned in account.drops:
            if pinned.first_id == first_id:
                drop = pinned.amount_cents
    return {"account": account_id, "drop": drop}


def _opened_subject(types: tuple[str, ...]) -> Callable[[CustomerState, str], Subject | None]:
    def subject(state: CustomerState, instance: str) -> Subject | None:
        return {"types": list(types)}

    return subject


def _opened_or_credits_subject(state: CustomerState, instance: str) -> Subject | None:
    found = _drop_subject(state, instance)
    assert found is not None  # noqa: S101 - _drop_subject always finds the account's name
    return {**found, "types": ["investment"]}


def _contract_subject(state: CustomerState, instance: str) -> Subject | None:
    # renewal_reminder / auto_renew_unused: "<contract>|<expires_at>|<suffix>";
    # renewal_after_positive_visit: "<visit event id>|<contract>".
    parts = instance.split("|")
    if len(parts) == 3:
        contract_id = parts[0]
        expires = parse_rfc3339_ms(parts[1])
    elif len(parts) == 2:
        contract_id, expires = parts[1], None
    else:
        return None
    contract = state.contracts.get(contract_id)
    if expires is None and contract is not None and contract.versions:
        expires = contract.versions[-1][2]
    product = contract.product if contract is not None else None
    return {"contract": contract_id, "product": product, "expires": expires}


def _card_subject(state: CustomerState, instance: str) -> Subject | None:
    return {"card": instance.partition("|")[0]}  # "<card>|never" or "<card>|<time>|lapse"


def _category_subject(state: CustomerState, instance: str) -> Subject | None:
    return {"category": instance.rpartition("|")[0]}  # "<category>|<purchase time>"


BUILTIN_GOALS: Mapping[str, GoalSpec] = {
    "savings_drop_to_checking": GoalSpec(OPENED, 30, _opened_subject(("loan",))),
    "savings_drop_to_wire": GoalSpec(OPENED_OR_CREDITS, 30, _opened_or_credits_subject),
    "savings_drop_unexplained": GoalSpec(CREDITS, 30, _drop_subject),
    "renewal_after_positive_visit": GoalSpec(RENEWED, 60, _contract_subject, until_expiry=True),
    "renewal_reminder": GoalSpec(RENEWED, 60, _contract_subject, until_expiry=True),
    "auto_renew_unused": GoalSpec(USED, 30, _contract_subject),
    "lapsed_transactor": GoalSpec(CARD_DEBIT, 60, _card_subject),
    "lapsed_revolver": GoalSpec(CARD_DEBIT, 60, _card_subject),
    "never_activated": GoalSpec(CARD_DEBIT, 30, _card_subject),
    "replacement_due": GoalSpec(PURCHASE, 30, _category_subject),
    "usual_booking_missed": GoalSpec(PURCHASE, 30, _category_subject),
    # auto_renew_confirmation is a service message: no goal.
}


def goal_of(trigger: str, declared: GoalSpec | None) -> GoalSpec | None:
    """A trigger's goal: the one its ``TriggerSpec`` declares, else the built-in table's."""
    return declared if declared is not None else BUILTIN_GOALS.get(trigger)


def default_goal_config(goal: GoalSpec) -> dict[str, Any]:
    """The ``triggers.<name>.goal`` section's defaults."""
    return {"enabled": True, "window_days": goal.window_days}


@dataclass(frozen=True, slots=True)
class Goal:
    """An enabled goal as configured: its spec and its window in milliseconds."""

    spec: GoalSpec
    window_ms: int


def configure(
    specs: Mapping[str, GoalSpec | None], sections: Mapping[str, Mapping[str, Any]]
) -> dict[str, Goal]:
    """The enabled goals (trigger -> ``Goal``) from each trigger's ``goal`` section."""
    out: dict[str, Goal] = {}
    for name, declared in specs.items():
        spec = goal_of(name, declared)
        section = sections.get(name, {}).get("goal")
        if spec is None or section is None or not section["enabled"]:
            continue
        out[name] = Goal(spec, int(section["window_days"] * DAY_MS))
    return out


# --- the slice ------------------------------------------------------------------------------
#
# {"p": [pending...], "r": [ready...], "x": dropped count}; a pending goal is
# {"d": decision id, "t": trigger, "a": decided_at, "e": window end, "k": kind, "s": subject,
#  "c": credits summed so far (credit goals only)}; a ready outcome is
# {"d", "t", "a", "e", "c": converted 1/0, "at": converted_at, "ev": event id, "v": cents}.


class GoalsSlice:
    """The pending goals' slice, encoded in the record like a family's (``state.ext``)."""

    name = SLICE
    state_version = 1

    def new_slice(self) -> dict[str, Any]:
        return {"p": [], "r": [], "x": 0}

    def encode_slice(self, data: dict[str, Any]) -> dict[str, Any] | None:
        out = {k: v for k, v in data.items() if v}
        return out or None

    def decode_slice(self, version: int, payload: Any) -> dict[str, Any] | None:
        if version != self.state_version or not isinstance(payload, dict):
            return None
        return {"p": list(payload.get("p", [])), "r": list(payload.get("r", [])),
                "x": int(payload.get("x", 0))}  # fmt: skip

    def holds_data(self, state: CustomerState) -> bool:
        return SLICE in state.slices or SLICE in state.ext

    def slice(self, state: CustomerState) -> dict[str, Any]:
        live = state.slices.get(SLICE)
        if live is not None:
            data: dict[str, Any] = live[1]
            return data
        raw = state.ext.pop(SLICE, None)
        decoded = None if raw is None else self.decode_slice(raw[0], raw[1])
        data = self.new_slice() if decoded is None else decoded
        state.slices[SLICE] = (self, data)
        return data


GOALS = GoalsSlice()


# --- the operations the core and the shell call ----------------------------------------------


def track(
    state: CustomerState,
    trigger: str,
    decision_id: str,
    instance: str,
    decided_at_ms: int,
    goals: Mapping[str, Goal],
) -> bool:
    """Add the pending goal of a decision (any arm) made at ``decided_at_ms``; False when the
    trigger has no (enabled) goal, the decision has no subject, or it is tracked already."""
    goal = goals.get(trigger)
    if goal is None:
        return False
    subject = goal.spec.subject(state, instance)
    if subject is None:
        return False
    end = decided_at_ms + goal.window_ms
    expires = subject.get("expires")
    if goal.spec.until_expiry and isinstance(expires, int) and expires < end:
        end = max(expires, decided_at_ms)
    data = GOALS.slice(state)
    if any(p["d"] == decision_id for p in data["p"]) or any(
        r["d"] == decision_id for r in data["r"]
    ):
        return False
    pending: dict[str, Any] = {
        "d": decision_id, "t": trigger, "a": decided_at_ms, "e": end, "k": goal.spec.kind,
        "s": subject,
    }  # fmt: skip
    data["p"].append(pending)
    if len(data["p"]) > MAX_PENDING_GOALS:
        data["p"].sort(key=lambda p: (p["a"], p["d"]))
        dropped = len(data["p"]) - MAX_PENDING_GOALS
        del data["p"][:dropped]
        _count_dropped(data, dropped)
    return True


def observe(state: CustomerState, event: Event) -> None:
    """Convert every pending goal ``event`` meets (an event of ``GOAL_EVENTS``)."""
    if not GOALS.holds_data(state):
        return
    data = GOALS.slice(state)
    if not data["p"]:
        return
    t = event.occurred_at_ms
    keep = []
    for p in data["p"]:
        if p["a"] < t <= p["e"]:
            met, value = _meets(p, event)
            if met:
                _resolve(data, p, event, value)
                continue
        keep.append(p)
    data["p"] = keep


def _meets(p: dict[str, Any], event: Event) -> tuple[bool, int | None]:
    """Whether ``event`` meets pending goal ``p`` (updating a credit goal's sum), and the
    value it carries (cents; None without an amount)."""
    if isinstance(event, Engagement):
        return event.action == "converted" and event.decision_id == p["d"], None
    kind, s = p["k"], p["s"]
    if kind in (OPENED, OPENED_OR_CREDITS) and isinstance(event, AccountOpened):
        if event.account_type in s["types"]:
            return True, None
    if kind in (CREDITS, OPENED_OR_CREDITS) and isinstance(event, Transaction):
        if event.direction == "credit" and event.account_id == s["account"] and s["drop"] > 0:
            p["c"] = p.get("c", 0) + event.amount_cents
            return 2 * p["c"] >= s["drop"], event.amount_cents
        return False, None
    if kind == RENEWED:
        if isinstance(event, Contract) and event.contract_id == s["contract"]:
            return event.status == "renewed", event.price_cents
        if isinstance(event, AutoRenewCharged) and event.contract_id == s["contract"]:
            return True, event.amount_cents
        return False, None
    if kind == USED and isinstance(event, ProductUsage | Visit):
        if event.contract_id is not None:
            return event.contract_id == s["contract"], None
        return isinstance(event, ProductUsage) and event.product == s.get("product"), None
    if kind == CARD_DEBIT and isinstance(event, Transaction):
        met = event.direction == "debit" and event.account_id == s["card"]
        return met, event.amount_cents if met else None
    if kind == PURCHASE and isinstance(event, Purchase):
        met = event.product_category == s["category"]
        return met, event.amount_cents if met else None
    return False, None


def _count_dropped(data: dict[str, Any], n: int) -> None:
    # "x" counts for the record's life; "dx" until the shell counts them (``take_dropped``).
    data["x"] += n
    data["dx"] = data.get("dx", 0) + n


def _resolve(
    data: dict[str, Any], p: dict[str, Any], event: Event | None, value: int | None
) -> None:
    ready: dict[str, Any] = {"d": p["d"], "t": p["t"], "a": p["a"], "e": p["e"]}
    if event is None:
        ready["c"] = 0
    else:
        ready.update(c=1, at=event.occurred_at_ms, ev=event.event_id)
        if value is not None:
            ready["v"] = value
    data["r"].append(ready)
    if len(data["r"]) > MAX_READY:
        dropped = len(data["r"]) - MAX_READY
        del data["r"][:dropped]
        _count_dropped(data, dropped)


def expire(state: CustomerState, now_ms: int, lateness_ms: int) -> None:
    """Resolve as not converted every pending goal whose window end plus the allowed lateness
    is at or before ``now_ms``."""
    if not GOALS.holds_data(state):
        return
    data = GOALS.slice(state)
    keep = []
    for p in sorted(data["p"], key=lambda p: (p["e"], p["d"])):
        if p["e"] + lateness_ms <= now_ms:
            _resolve(data, p, None, None)
        else:
            keep.append(p)
    if len(keep) != len(data["p"]):
        data["p"] = keep


def next_expiry_ms(state: CustomerState, lateness_ms: int) -> int | None:
    """When the earliest pending goal expires (None: nothing pending). Ready outcomes count as
    due at once (``-inf`` is not needed: the shell takes them in the call that made them)."""
    if not GOALS.holds_data(state):
        return None
    data = GOALS.slice(state)
    if not data["p"]:
        return None
    return min(p["e"] for p in data["p"]) + lateness_ms


@dataclass(frozen=True, slots=True)
class Resolved:
    """A decision's goal, resolved: what the outcome record says besides the decision's own
    fields (arm, action, channel)."""

    decision_id: str
    trigger: str
    decided_at_ms: int
    window_end_ms: int
    converted: bool
    converted_at_ms: int | None = None
    converting_event_id: str | None = None
    value_cents: int | None = None


def take_outcomes(state: CustomerState) -> list[Resolved]:
    """Remove and return the resolved goals, in the order they resolved."""
    if not GOALS.holds_data(state):
        return []
    data = GOALS.slice(state)
    if not data["r"]:
        return []
    out = [
        Resolved(r["d"], r["t"], r["a"], r["e"], bool(r["c"]), r.get("at"), r.get("ev"),
                 r.get("v"))
        for r in data["r"]
    ]  # fmt: skip
    data["r"] = []
    return out


def take_dropped(state: CustomerState) -> int:
    """How many goals the bound dropped since the last call (the shell counts them)."""
    if not GOALS.holds_data(state):
        return 0
    return int(GOALS.slice(state).pop("dx", 0))


def dropped(state: CustomerState) -> int:
    """How many pending goals this customer's bound has dropped so far."""
    return int(GOALS.slice(state)["x"]) if GOALS.holds_data(state) else 0


def pending(state: CustomerState) -> list[dict[str, Any]]:
    """The pending goals (read only; for tests and tools)."""
    return list(GOALS.slice(state)["p"]) if GOALS.holds_data(state) else []


def outcome_record(resolved: Resolved, decision: Decision) -> dict[str, Any]:
    """The ``decision-outcomes`` record of ``decision``'s goal (see ``outcome_of``)."""
    if resolved.decision_id != decision.decision_id:
        raise ValueError(f"outcome of {resolved.decision_id} given decision {decision.decision_id}")
    c = decision.candidate
    arm = Arm(
        decision.outcome, decision.channel or c.channel, decision.global_control,
        decision.decided_at_ms,
    )  # fmt: skip
    return outcome_of(resolved, c.customer_id, c.action, arm)


def outcome_of(resolved: Resolved, customer_id: str, action: str, arm: Arm) -> dict[str, Any]:
    """The ``decision-outcomes`` record (schemas/decision_outcome.json) of a resolved goal, given
    what the policy decided (``arm``): a pure function of the two, so a replay publishes the same
    bytes."""
    record: dict[str, Any] = {
        "decision_id": resolved.decision_id,
        "customer_id": customer_id,
        "trigger": resolved.trigger,
        "action": action,
        "channel": arm.channel,
        "arm": arm.outcome,
        "converted": resolved.converted,
    }
    if arm.global_control:
        record["global_control"] = True
    if resolved.converted:
        assert resolved.converted_at_ms is not None  # noqa: S101 - set with converted
        record["converted_at"] = format_ms(resolved.converted_at_ms)
        record["converting_event_id"] = resolved.converting_event_id
        if resolved.value_cents is not None:
            record["value"] = resolved.value_cents / 100
    # The decision's own decided_at (the ledger's first result) where known: the one on the
    # decision record, even if a replay with the processing-time clock tracked the goal later.
    decided = resolved.decided_at_ms if arm.decided_at_ms is None else arm.decided_at_ms
    record["decided_at"] = format_ms(decided)
    record["window_end"] = format_ms(resolved.window_end_ms)
    record["schema_version"] = OUTCOME_SCHEMA_VERSION
    return record
