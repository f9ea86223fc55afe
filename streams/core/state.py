"""Customer state: one compact, bounded record per customer, and its serialization.

The record holds only what the triggers need. Every collection is bounded twice: by time (data
no trigger can look at any more is pruned as the clock moves, see ``CustomerState.floor_ms``)
and by count (a fixed cap, oldest evicted), so a record stays small whatever the history.
Serialization is versioned: msgpack through msgspec, in one step each way (see "binary
encoding"); records in the JSON format written before it are still read.

``floor_ms`` is the pruning watermark: no occurrence due before it can fire any more, and no
event older than it can change anything (it trails both the clock and the earliest pending due
time by the allowed lateness). The trigger families prune relative to it.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import orjson

from streams.core.decisions import Candidate

DAY_MS = 86_400_000

# Count caps: the backstop behind time-based pruning (which keeps typical records far below).
MAX_SEEN = 64
MAX_FIRED = 32
MAX_SAVINGS_ACCOUNTS = 4
MAX_OBSERVATIONS = 128  # per savings account, exact ones and day buckets each
MAX_DEBITS = 32
MAX_DROPS = 8
MAX_FOLLOW_UPS = 16
MAX_CONTRACTS = 8
MAX_VERSIONS = 6
MAX_USAGE_KEYS = 12
MAX_POINTS = 8  # per thinned time list (usage per key, complaints, card activity)
MAX_VISITS = 8
MAX_CARDS = 6
MAX_STATEMENTS = 12
MAX_CATEGORIES = 8
MAX_PURCHASES = 8
PURCHASE_IDS_KEPT = 2  # event ids kept (for evidence) on the newest purchases only

Obs = tuple[int, int]  # (time, balance in cents)
DayObs = tuple[int, int, int]  # (UTC day number, sum of cents, count): older observations
Debit = tuple[int, int, str]  # (time, cents, event id)
# (time, cents, kind, id); kind: "c" internal credit to checking, "w" wire debit, "i" internal
# credit to an investment account, "l" internal credit to a loan account
FollowUp = tuple[int, int, str, str]
# (time, status, expires_at, auto_renew 1/0 or -1 "as before" for auto_renew_charged, event id)
Version = tuple[int, str, int, int, str]
Point = tuple[int, str]  # (time, event id)

T = TypeVar("T")


def id_hash(text: str) -> int:
    """A stable 48-bit hash (collisions among a few dozen ids are negligible)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=6).digest(), "big")


# --- thinned time lists -----------------------------------------------------------------
#
# "Was there an event in [x - W, x]?" is all the usage, complaint and card-activity triggers ask.
# A point may be dropped when its neighbours are at most W apart: every such question, for any
# x and any window >= W, keeps its answer (and so does every gap longer than W, which is what a
# lapse is). Daily logins thus cost a handful of points, not one per day.


def thin(items: list[T], key: Callable[[T], int], window_ms: int) -> list[T]:
    """``items`` (sorted by ``key``) without the points no window >= ``window_ms`` can miss."""
    out: list[T] = []
    for item in items:
        out.append(item)
        while len(out) >= 3 and key(out[-1]) - key(out[-3]) <= window_ms:
            del out[-2]
    return out


def insert_thinned(items: list[T], item: T, key: Callable[[T], int], window_ms: int) -> list[T]:
    """``items`` with ``item`` inserted in time order (a repeated time is ignored), thinned."""
    t = key(item)
    keys = [key(x) for x in items]
    i = bisect.bisect_left(keys, t)
    if i < len(keys) and keys[i] == t:
        return items
    if 0 < i < len(keys) and keys[i] - keys[i - 1] <= window_ms:
        # Its neighbours already answer every question it could (a replayed point that was
        # thinned away before comes back to nothing): the list stays byte-for-byte the same.
        return items
    new = list(items)
    new.insert(i, item)
    return thin(new, key, window_ms)


def keep_since(items: list[T], key: Callable[[T], int], cutoff_ms: int) -> list[T]:
    """Items at or after ``cutoff_ms`` plus the latest one before it (it answers "last ...")."""
    i = 0
    while i + 1 < len(items) and key(items[i + 1]) < cutoff_ms:
        i += 1
    if items and key(items[i]) < cutoff_ms:
        return items[i:]
    return items


def any_between(times: list[int], lo_ms: int, hi_ms: int) -> bool:
    return any(lo_ms <= t <= hi_ms for t in times)


# --- records ----------------------------------------------------------------------------

# PinnedDrop.flags
CHECKING_FIRED = 1
WIRE_FIRED = 2
UNEXPLAINED_FIRED = 4
UNEXPLAINED_DECIDED = 8
INVESTMENT_FIRED = 16
LOAN_FIRED = 32


class _Part(msgspec.Struct, array_like=True):
    """A nested part of the record: msgspec encodes and decodes it as an array, in one step
    (see "binary encoding" below). Mutable, like the record: the families change it in place."""


class PinnedDrop(_Part):
    """A savings drop something was decided on: frozen, so late debits cannot regroup it."""

    first_id: str
    start_ms: int
    drop_ms: int
    amount_cents: int
    debit_ids: tuple[str, ...]
    flags: int = 0

    def copy(self) -> PinnedDrop:
        return msgspec.structs.replace(self)  # ``flags`` changes in place


class SavingsAccount(_Part):
    obs: list[Obs] = []  # exact, near where drops can still start
    days: list[DayObs] = []  # older ones, one bucket per UTC day
    debits: list[Debit] = []  # not (yet) part of a pinned drop
    drops: list[PinnedDrop] = []
    last_ms: int = 0

    def copy(self) -> SavingsAccount:
        return msgspec.structs.replace(
            self,
            obs=list(self.obs),
            days=list(self.days),
            debits=list(self.debits),
            drops=[p.copy() for p in self.drops],
        )


class ContractState(_Part):
    product: str | None = None
    versions: list[Version] = []  # by time; older ones collapsed
    marks: list[tuple[int, int]] = []  # fired (code, due time)

    def copy(self) -> ContractState:
        return msgspec.structs.replace(self, versions=list(self.versions), marks=list(self.marks))


class VisitState(_Part):
    """A recent positive visit: a late contract event can still complete its renewal offer."""

    event_id: str
    at_ms: int
    contract_id: str | None
    fired: list[str] = []  # contract ids already offered

    def copy(self) -> VisitState:
        return msgspec.structs.replace(self, fired=list(self.fired))


class CardState(_Part):
    opened: Point | None = None
    closed_ms: int | None = None
    activity: list[Point] = []  # debits, thinned
    statements: list[tuple[int, int]] = []  # (time, paid in full 1/0)
    # Statements before the floor only matter as "paid in full" bits (every due time that can
    # still fire is after them): "1" / "0", oldest first, the last few.
    earlier: str = ""
    lapse_marks: list[int] = []  # activity times whose lapse fired
    never_done: bool = False
    last_ms: int = 0

    def copy(self) -> CardState:
        return msgspec.structs.replace(
            self,
            activity=list(self.activity),
            statements=list(self.statements),
            lapse_marks=list(self.lapse_marks),
        )


class CategoryState(_Part):
    purchases: list[Point] = []  # newest MAX_PURCHASES, by time
    count: int = 0  # purchases ever seen (the "3 or more" rule)
    marks: list[tuple[int, int]] = []  # fired (code, purchase time)

    def copy(self) -> CategoryState:
        return msgspec.structs.replace(self, purchases=list(self.purchases), marks=list(self.marks))


@dataclass(slots=True)
class CustomerState:
    """Everything the triggers remember about one customer.

    ``applied_offsets`` (topic kind -> highest applied input offset) belongs to the shell: the
    pure functions carry it through untouched. ``due_ms`` is the earliest time at which
    ``advance`` could fire something (None: nothing pending); the core keeps it current.
    """

    customer_id: str
    floor_ms: int = 0
    due_ms: int | None = None
    applied_offsets: dict[str, int] = field(default_factory=dict)
    seen: list[tuple[int, int]] = field(default_factory=list)  # (id hash, event's UTC day)
    fired: list[tuple[int, int]] = field(default_factory=list)  # (occurrence hash, keep until)
    savings: dict[str, SavingsAccount] = field(default_factory=dict)
    follow_ups: list[FollowUp] = field(default_factory=list)
    contracts: dict[str, ContractState] = field(default_factory=dict)
    usage: dict[str, list[int]] = field(default_factory=dict)  # "c:<contract>"/"p:<product>"
    complaints: list[int] = field(default_factory=list)  # thinned
    visits: list[VisitState] = field(default_factory=list)
    cards: dict[str, CardState] = field(default_factory=dict)
    categories: dict[str, CategoryState] = field(default_factory=dict)
    segment: tuple[int, str] | None = None
    business_unit: tuple[int, str] | None = None
    timezone: tuple[int, str] | None = None
    # Decisions waiting for the end of the customer's quiet hours: (until, deferred at, what).
    deferred: list[tuple[int, int, Candidate]] = field(default_factory=list)
    # The state slices of the families that are not built in (``streams.core.triggers.api``):
    # ``ext`` as stored (family name -> [version, payload] or, once the family is found not
    # installed, [version, payload, orphaned since]); ``slices`` those decoded in this call,
    # family name -> (family, slice).
    # (Not compared: a slice decoded in a call equals its stored form; compare ``to_bytes``.)
    ext: dict[str, list[Any]] = field(default_factory=dict, compare=False)
    slices: dict[str, tuple[Any, Any]] = field(default_factory=dict, compare=False)

    # --- queries --------------------------------------------------------------------------

    @property
    def last_complaint_ms(self) -> int | None:
        return self.complaints[-1] if self.complaints else None

    # --- de-duplication ---------------------------------------------------------------

    def has_seen(self, event_hash: int) -> bool:
        for h, _ in self.seen:
            if h == event_hash:
                return True
        return False

    def remember(self, event_hash: int, at_ms: int) -> None:
        # The day is enough to prune by (pruning keeps the whole day), and it serializes short.
        self.seen.append((event_hash, at_ms - at_ms % DAY_MS))
        if len(self.seen) > MAX_SEEN:
            self.seen.sort(key=lambda s: s[1])
            del self.seen[: len(self.seen) - MAX_SEEN]

    def was_fired(self, occurrence_hash: int) -> bool:
        for h, _ in self.fired:
            if h == occurrence_hash:
                return True
        return False

    # --- serialization ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The record in the current format (``FORMAT``, see "binary encoding" below)."""
        return _FORMAT_BYTE + _ENCODE(_as_row(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> CustomerState:
        """A record in the current format or in the JSON one written before it."""
        first = data[:1]
        if first == _FORMAT_BYTE:
            try:
                row = _DECODE(memoryview(data)[1:])
            except msgspec.DecodeError as e:
                raise ValueError(f"customer record (format {FORMAT}) is not readable: {e}") from e
            return _from_row(row)
        if first == b"{":
            return _decode(orjson.loads(data))
        raise ValueError(
            f"customer record starts with {first!r}: neither format {FORMAT} "
            f"({_FORMAT_BYTE!r}) nor the JSON format before it (b'{{')"
        )

    def copy(self) -> CustomerState:
        """A copy the core may change without changing this record (``step``/``advance`` of a
        record they do not own): equal to ``from_bytes(to_bytes())``, without the round trip.

        Every container the core changes in place is new (the lists and dicts, the nested
        parts); what it only ever replaces is shared (strings, numbers, tuples, candidates).
        The slices go through msgpack, as ``to_bytes`` writes them: a family's slice is its own
        kind of object, which only its ``encode_slice``/``decode_slice`` know how to copy, and
        the copy holds them undecoded in ``ext``, as a record just read does.
        """
        return CustomerState(
            self.customer_id, self.floor_ms, self.due_ms, dict(self.applied_offsets),
            list(self.seen), list(self.fired),
            {k: a.copy() for k, a in self.savings.items()} if self.savings else {},
            list(self.follow_ups),
            {k: c.copy() for k, c in self.contracts.items()} if self.contracts else {},
            {k: list(v) for k, v in self.usage.items()} if self.usage else {},
            list(self.complaints),
            [v.copy() for v in self.visits] if self.visits else [],
            {k: c.copy() for k, c in self.cards.items()} if self.cards else {},
            {k: c.copy() for k, c in self.categories.items()} if self.categories else {},
            self.segment, self.business_unit, self.timezone,
            list(self.deferred),
            _EXT_DECODE(_ENCODE(_ext(self))) if self.slices or self.ext else {},
        )  # fmt: skip


# --- binary encoding (the current format) ---------------------------------------------------
#
# One version byte, then the record as a msgpack array in ``CustomerState``'s field order (the
# slices merged into ``ext``), its nested parts arrays too (``_Part``). msgspec writes it from
# the objects and reads it back into them, typed and checked, each in one call: nothing is
# built twice, and no Python code walks the record. A record written by the code before this
# format is JSON (its first byte is "{", which is not the version byte): it is still read
# (``_decode``), and written in this format the next time the record changes.
#
# Times are absolute (msgpack stores an int in 9 bytes at most; shortening them relative to the
# floor, as the JSON format does, would take a Python pass over the record each way).
# A change to the row's layout is a new format: a new version byte, and the old one still read.

FORMAT = 2  # the JSON format before it is format 1
_FORMAT_BYTE = bytes([FORMAT])

# (until, deferred at, and the candidate's fields but its customer id)
_DeferredRow = tuple[int, int, str, str, str, str, str, int, tuple[str, ...], int]
_Row = tuple[
    str,  # customer_id
    int,  # floor_ms
    int | None,  # due_ms
    dict[str, int],  # applied_offsets
    list[tuple[int, int]],  # seen
    list[tuple[int, int]],  # fired
    dict[str, SavingsAccount],
    list[FollowUp],
    dict[str, ContractState],
    dict[str, list[int]],  # usage
    list[int],  # complaints
    list[VisitState],
    dict[str, CardState],
    dict[str, CategoryState],
    tuple[int, str] | None,  # segment
    tuple[int, str] | None,  # business_unit
    tuple[int, str] | None,  # timezone
    list[_DeferredRow],
    dict[str, list[Any]],  # ext: family name -> [version, payload(, orphaned since)]
]
_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder(_Row).decode
_EXT_DECODE = msgspec.msgpack.Decoder(dict[str, list[Any]]).decode


def _as_row(s: CustomerState) -> tuple[Any, ...]:
    deferred = s.deferred
    return (
        s.customer_id, s.floor_ms, s.due_ms, s.applied_offsets, s.seen, s.fired, s.savings,
        s.follow_ups, s.contracts, s.usage, s.complaints, s.visits, s.cards, s.categories,
        s.segment, s.business_unit, s.timezone,
        [
            (u, at, c.trigger, c.instance, c.action, c.channel, c.category, c.priority,
             c.evidence, c.triggered_at_ms)
            for u, at, c in deferred
        ] if deferred else deferred,
        _ext(s) if s.slices or s.ext else s.ext,
    )  # fmt: skip


def _ext(s: CustomerState) -> dict[str, list[Any]]:
    """The stored slices: those decoded in this call encoded again, the others as read."""
    ext = dict(s.ext)
    for name, (family, data) in s.slices.items():
        payload = family.encode_slice(data)
        if payload:
            ext[name] = [family.state_version, payload]
    # By name: the same slices give the same bytes, whichever were decoded in this call.
    return {k: ext[k] for k in sorted(ext)}


def _from_row(row: tuple[Any, ...]) -> CustomerState:
    state = CustomerState(*row)
    if state.deferred:
        cid = state.customer_id
        rows: list[_DeferredRow] = row[17]
        state.deferred = [
            (u, at, Candidate(cid, tr, ins, act, ch, cat, pr, ev, t))
            for u, at, tr, ins, act, ch, cat, pr, ev, t in rows
        ]
    return state


# --- the JSON format before it (format 1: read, and still written by ``_encode``) ---------------
#
# Short keys, empty collections left out, and every time stored relative to the floor (which is
# stored absolute): recent times then take 9-10 digits instead of 13. Day numbers of balance
# buckets are relative to the floor's day.
#
# This runs twice per event on the worker's hot path and most records are small, so it is
# written for the empty case: a field is looked at once and skipped when empty, instead of
# building an empty collection and dropping it. The bytes are the table's (and changelog's)
# format: a key's order and presence must not change.


def _encode(s: CustomerState) -> dict[str, Any]:
    b = s.floor_ms
    bd = b // DAY_MS
    o: dict[str, Any] = {"c": s.customer_id, "f": b}
    if s.due_ms is not None:
        o["n"] = s.due_ms - b
    if s.applied_offsets:
        o["o"] = s.applied_offsets
    if s.seen:
        o["s"] = [[h, t // DAY_MS - bd] for h, t in s.seen]
    if s.fired:
        o["x"] = [[h, t - b] for h, t in s.fired]
    if s.savings:
        o["sv"] = {k: _encode_savings(a, b, bd) for k, a in s.savings.items()}
    if s.follow_ups:
        o["fu"] = [[t - b, c, kind, i] for t, c, kind, i in s.follow_ups]
    if s.contracts:
        o["ct"] = {k: _encode_contract(c, b) for k, c in s.contracts.items()}
    if s.usage:
        o["u"] = {k: [t - b for t in v] for k, v in s.usage.items()}
    if s.complaints:
        o["cp"] = [t - b for t in s.complaints]
    if s.visits:
        o["v"] = [[v.event_id, v.at_ms - b, v.contract_id, v.fired] for v in s.visits]
    if s.cards:
        o["cc"] = {k: _encode_card(c, b) for k, c in s.cards.items()}
    if s.categories:
        o["pc"] = {k: _encode_category(c, b) for k, c in s.categories.items()}
    if s.segment is not None:
        o["sg"] = [s.segment[0] - b, s.segment[1]]
    if s.business_unit is not None:
        o["bu"] = [s.business_unit[0] - b, s.business_unit[1]]
    if s.timezone is not None:
        o["tz"] = [s.timezone[0] - b, s.timezone[1]]
    if s.deferred:
        o["df"] = [
            [u - b, at - b, c.trigger, c.instance, c.action, c.channel, c.category,
             c.priority, list(c.evidence), c.triggered_at_ms - b]
            for u, at, c in s.deferred
        ]  # fmt: skip
    if s.slices or s.ext:
        ext = _ext(s)
        if ext:
            o["t"] = ext
    return o


# A nested record leaves out every empty or zero field (a zero time is the floor itself).


def _encode_savings(a: SavingsAccount, b: int, bd: int) -> dict[str, Any]:
    e: dict[str, Any] = {}
    if a.obs:
        e["o"] = [[t - b, c] for t, c in a.obs]
    if a.days:
        e["b"] = [[d - bd, c] if n == 1 else [d - bd, c, n] for d, c, n in a.days]
    if a.debits:
        e["d"] = [[t - b, c, i] for t, c, i in a.debits]
    if a.drops:
        e["p"] = [
            [p.first_id, p.start_ms - b, p.drop_ms - b, p.amount_cents, p.debit_ids]
            + ([p.flags] if p.flags else [])
            for p in a.drops
        ]
    if a.last_ms != b:
        e["l"] = a.last_ms - b
    return e


def _encode_contract(c: ContractState, b: int) -> dict[str, Any]:
    e: dict[str, Any] = {}
    if c.product:
        e["p"] = c.product
    if c.versions:
        e["v"] = [[t - b, st, x - b, ar, i] for t, st, x, ar, i in c.versions]
    if c.marks:
        e["m"] = [[code, d - b] for code, d in c.marks]
    return e


def _encode_card(c: CardState, b: int) -> dict[str, Any]:
    e: dict[str, Any] = {}
    if c.opened:
        e["o"] = [c.opened[0] - b, c.opened[1]]
    if c.closed_ms is not None:
        e["x"] = [c.closed_ms - b]
    if c.activity:
        e["a"] = [[t - b, i] if i else t - b for t, i in c.activity]
    if c.statements:
        e["s"] = [[t - b, p] for t, p in c.statements]
    if c.earlier:
        e["e"] = c.earlier
    if c.lapse_marks:
        e["m"] = [u - b for u in c.lapse_marks]
    if c.never_done:
        e["n"] = 1
    if c.last_ms != b:
        e["l"] = c.last_ms - b
    return e


def _encode_category(c: CategoryState, b: int) -> dict[str, Any]:
    e: dict[str, Any] = {}
    if c.purchases:
        e["p"] = [[t - b, i] if i else t - b for t, i in c.purchases]
    if c.count:
        e["n"] = c.count
    if c.marks:
        e["m"] = [[code, t - b] for code, t in c.marks]
    return e


def _point(item: Any, b: int) -> tuple[int, str]:
    return (item[0] + b, item[1]) if isinstance(item, list) else (item + b, "")


def _decode(o: dict[str, Any]) -> CustomerState:
    b = o.get("f", 0)
    bd = b // DAY_MS
    customer_id = o["c"]
    due_ms = o["n"] + b if "n" in o else None
    applied_offsets = dict(o["o"]) if "o" in o else {}
    seen = [(h, (t + bd) * DAY_MS) for h, t in o["s"]] if "s" in o else []
    fired = [(h, t + b) for h, t in o["x"]] if "x" in o else []
    savings = {k: _decode_savings(a, b, bd) for k, a in o["sv"].items()} if "sv" in o else {}
    follow_ups = [(t + b, c, kind, i) for t, c, kind, i in o["fu"]] if "fu" in o else []
    contracts = {k: _decode_contract(c, b) for k, c in o["ct"].items()} if "ct" in o else {}
    usage = {k: [t + b for t in v] for k, v in o["u"].items()} if "u" in o else {}
    complaints = [t + b for t in o["cp"]] if "cp" in o else []
    visits = [VisitState(i, t + b, cid, list(f)) for i, t, cid, f in o["v"]] if "v" in o else []
    cards = {k: _decode_card(c, b) for k, c in o["cc"].items()} if "cc" in o else {}
    categories = {k: _decode_category(c, b) for k, c in o["pc"].items()} if "pc" in o else {}
    # "cs" (consent words by channel), written by earlier versions, is not read: opt-outs live
    # in the contact ledger. The next write leaves it out.
    segment = (o["sg"][0] + b, o["sg"][1]) if "sg" in o else None
    business_unit = (o["bu"][0] + b, o["bu"][1]) if "bu" in o else None
    timezone = (o["tz"][0] + b, o["tz"][1]) if "tz" in o else None
    deferred = (
        [
            (u + b, at + b, Candidate(customer_id, tr, ins, act, ch, cat, pr, tuple(ev), t + b))
            for u, at, tr, ins, act, ch, cat, pr, ev, t in o["df"]
        ]
        if "df" in o
        else []
    )
    ext = dict(o["t"]) if "t" in o else {}
    # Positional, in CustomerState's field order: a dataclass's __init__ costs about twice as
    # much with keywords, and this runs for every event.
    return CustomerState(
        customer_id, b, due_ms, applied_offsets, seen, fired, savings, follow_ups, contracts,
        usage, complaints, visits, cards, categories, segment, business_unit, timezone,
        deferred, ext,
    )  # fmt: skip


def _decode_savings(a: dict[str, Any], b: int, bd: int) -> SavingsAccount:
    return SavingsAccount(
        obs=[(t + b, c) for t, c in a["o"]] if "o" in a else [],
        days=[(x[0] + bd, x[1], x[2] if len(x) > 2 else 1) for x in a["b"]] if "b" in a else [],
        debits=[(t + b, c, i) for t, c, i in a["d"]] if "d" in a else [],
        drops=[
            PinnedDrop(p[0], p[1] + b, p[2] + b, p[3], tuple(p[4]), p[5] if len(p) > 5 else 0)
            for p in a["p"]
        ]
        if "p" in a
        else [],
        last_ms=a.get("l", 0) + b,
    )


def _decode_contract(c: dict[str, Any], b: int) -> ContractState:
    return ContractState(
        product=c.get("p"),
        versions=[(t + b, st, e + b, ar, i) for t, st, e, ar, i in c["v"]] if "v" in c else [],
        marks=[(code, d + b) for code, d in c["m"]] if "m" in c else [],
    )


def _decode_card(c: dict[str, Any], b: int) -> CardState:
    opened = c.get("o")
    closed = c.get("x")
    return CardState(
        opened=(opened[0] + b, opened[1]) if opened else None,
        closed_ms=closed[0] + b if closed else None,
        activity=[_point(a, b) for a in c["a"]] if "a" in c else [],
        statements=[(t + b, p) for t, p in c["s"]] if "s" in c else [],
        earlier=c.get("e", ""),
        lapse_marks=[u + b for u in c["m"]] if "m" in c else [],
        never_done=bool(c.get("n", 0)),
        last_ms=c.get("l", 0) + b,
    )


def _decode_category(c: dict[str, Any], b: int) -> CategoryState:
    return CategoryState(
        purchases=[_point(p, b) for p in c["p"]] if "p" in c else [],
        count=c.get("n", 0),
        marks=[(code, t + b) for code, t in c["m"]] if "m" in c else [],
    )
