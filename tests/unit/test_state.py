"""Customer state: serialization, carried-through fields, pruning and the size bound.

Given / When / Then, with a comment on why each expectation holds.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import default_trigger_params
from streams.core import events as ev
from streams.core.decisions import Candidate
from streams.core.engine import advance, next_due_ms, step
from streams.core.state import (
    FORMAT,
    CardState,
    CategoryState,
    ContractState,
    CustomerState,
    PinnedDrop,
    SavingsAccount,
    VisitState,
    _encode,
    any_between,
    insert_thinned,
    thin,
)
from streams.core.timeutil import parse_rfc3339_ms

DAY = 86_400_000
T0 = parse_rfc3339_ms("2023-01-02T00:00:00Z") or 0
PARAMS = default_trigger_params()


def feed(events: list[ev.Event], sizes: list[int] | None = None) -> CustomerState:
    """Shell-like: advance to every due time before an event, step, advance at its time."""
    state: CustomerState | None = None
    now = T0
    for event in sorted(events, key=lambda e: e.occurred_at_ms):
        while state is not None and (due := next_due_ms(state)) is not None:
            if due >= event.occurred_at_ms:
                break
            state = advance(state, due, PARAMS).state
        now = max(now, event.occurred_at_ms)
        state = step(state, event, now, PARAMS).state
        state = advance(state, now, PARAMS).state
        if sizes is not None:
            sizes.append(len(state.to_bytes()))
    assert state is not None
    return state


def realistic_history(years: int, seed: int = 7, heavy: bool = False) -> list[ev.Event]:
    """A bank-and-subscription customer, UUID event ids, every family active for years.

    Typical: weekly savings balances and a few transfers a month, a checking account, two cards
    used a few times a week with monthly statements, two yearly contracts renewed on time with
    weekly usage, monthly visits, air filters every quarter, a yearly holiday, a phone. Heavy:
    daily balances and daily card use on top.
    """
    rng = random.Random(seed)
    out: list[ev.Event] = []

    def add(cls: type[ev.Event], day: float, **fields: object) -> None:
        t = T0 + int(day * DAY) + rng.randrange(3_600_000)
        out.append(
            cls(
                event_id=str(uuid.UUID(int=rng.getrandbits(128))),
                customer_id="cust-42",
                occurred_at_ms=t,
                **fields,
            )
        )  # type: ignore[arg-type]

    add(ev.Profile, 0, segment="standard", business_unit="retail", timezone="Europe/Berlin")
    add(ev.Consent, 1, channel="sms", status="opted_out")
    for card in ("cc-a", "cc-b"):
        add(ev.AccountOpened, 2, account_id=card, account_type="credit_card")
    days = years * 365
    balance = 3_000_000
    for day in range(0, days):
        if day % 7 == 0 or heavy:
            add(ev.Balance, day, account_id="sav-1", account_type="savings", balance_cents=balance)
        if day % 10 == 3:
            balance += 50_000
            add(
                ev.Transaction,
                day,
                account_id="sav-1",
                account_type="savings",
                direction="credit",
                amount_cents=50_000,
                rail="ach",
                balance_after_cents=balance,
            )
        if day % 14 == 5:
            add(
                ev.Transaction,
                day,
                account_id="chk-1",
                account_type="checking",
                direction="credit",
                amount_cents=40_000,
                rail="internal",
                transfer_id="tr",
            )
        for card in ("cc-a", "cc-b"):
            if heavy or day % 3 == 0:
                add(
                    ev.Transaction,
                    day,
                    account_id=card,
                    account_type="credit_card",
                    direction="debit",
                    amount_cents=2_000,
                    rail="card",
                )
            if day % 30 == 20:
                add(
                    ev.Statement,
                    day,
                    account_id=card,
                    statement_balance_cents=50_000,
                    amount_paid_cents=50_000 if rng.random() < 0.7 else 5_000,
                    minimum_due_cents=2_500,
                )
        if day % 365 == 30:
            for cid, product in (("ct-pass", "annual_pass"), ("ct-sw", "software_license")):
                add(
                    ev.Contract,
                    day,
                    contract_id=cid,
                    product=product,
                    status="active",
                    expires_at_ms=T0 + (day + 365) * DAY,
                    auto_renew=cid == "ct-sw",
                )
        if day % 7 == 1:
            add(ev.ProductUsage, day, product="software_license", activity="login")
        if day % 30 == 11:
            add(ev.Visit, day, venue="annual_pass", sentiment=rng.choice(["positive", "neutral"]))
        if day % 180 == 90:
            add(ev.Complaint, day, category="billing")
        if day % 90 == 15:
            add(ev.Purchase, day, product_category="air_filter", amount_cents=3_000)
        if day % 365 == 200:
            add(ev.Purchase, day, product_category="holiday", amount_cents=150_000)
        if day % 30 == 25:
            add(ev.Engagement, day, channel="email", action="opened")
    add(ev.Purchase, 50, product_category="phone", amount_cents=80_000)
    return out


# --- serialization ----------------------------------------------------------------------------


def test_round_trip_keeps_everything() -> None:
    # Given a state built from a year of realistic history
    state = feed(realistic_history(1))
    # When it is serialized and read back
    again = CustomerState.from_bytes(state.to_bytes())
    # Then it is equal and serializes to the same bytes (the table stores exactly this)
    assert again == state
    assert again.to_bytes() == state.to_bytes()


def test_applied_offsets_are_carried_through_untouched() -> None:
    # Given a state whose shell recorded applied offsets
    state = feed(realistic_history(1))
    state.applied_offsets = {"account": 41, "usage": 7}
    event = ev.Complaint(
        event_id="x-1", customer_id="cust-42", occurred_at_ms=T0 + 400 * DAY, category="fees"
    )
    # When the pure functions run on it
    after_step = step(state, event, T0 + 400 * DAY, PARAMS).state
    after_advance = advance(after_step, T0 + 500 * DAY, PARAMS).state
    # Then the shell's offsets come out unchanged (the shell alone sets them)
    assert (
        after_step.applied_offsets == after_advance.applied_offsets == {"account": 41, "usage": 7}
    )
    assert CustomerState.from_bytes(after_advance.to_bytes()).applied_offsets == {
        "account": 41,
        "usage": 7,
    }


def test_step_never_mutates_its_input() -> None:
    # Given a state and its bytes
    state = feed(realistic_history(1))
    before = state.to_bytes()
    # When an event and the clock are applied
    event = ev.Purchase(
        event_id="p-x",
        customer_id="cust-42",
        occurred_at_ms=T0 + 366 * DAY,
        product_category="air_filter",
        amount_cents=100,
    )
    step(state, event, T0 + 366 * DAY, PARAMS)
    advance(state, T0 + 900 * DAY, PARAMS)
    # Then the input is as it was: the functions are pure
    assert state.to_bytes() == before


def test_encoding_is_the_table_format() -> None:
    # Given a record with every field set, and empty nested records
    state = _every_field()
    # When it is serialized
    raw = state.to_bytes()
    # Then the bytes are exactly these: the version byte, then the msgpack row (the customers
    # table and its changelog hold them, so a change here is a new format), and they read back
    # to the same record
    assert raw == bytes.fromhex(
        "02dc0013a6637573742d37cf0000018bcfe56800cf0000018be9a5340082a76163636f756e7429a575736167"
        "65079292ce075bcd15cf0000018bcb20b40092ce3ade68b1cf0000018bd04710009192cd022bcf0000018bcf"
        "e5680982a57361762d31959192cf0000018bcfe56801cd27109293cd4cd8cd61a80193cd4cd9cdc350029193"
        "cf0000018bcfe56802cd1388a3652d649296a3652d31cf0000018bcfe56803cf0000018bcfe56804cd232892"
        "a3652d31a3652d320096a3652d33cf0000018bcfe56805cf0000018bcfe56806cd03e89003cf0000018bcfe5"
        "6807a97361762d656d7074799590909090cf0000018bcfe568009194cf0000018bcfe56808cd1b58a177a365"
        "2d7782a36b2d3193a973747265616d696e679195cf0000018bcfe567f7a6616374697665cf0000018c6a6430"
        "0001a3652d6b919202cf0000018bcfe56801a36b2d3293c0909082a5633a6b2d3192cf0000018bcfe567ffcf"
        "0000018bcfe56801a6703a6e6f6e659091cf0000018bcfe567fe9294a3652d76cf0000018bcfe56803a36b2d"
        "3191a36b2d3194a4652d7632cf0000018bcfe56804c09082a463632d319892cf0000018bcfe567f6a3652d6f"
        "cf0000018bcfe5680b9292cf0000018bcfe56801a3652d6192cf0000018bcfe56802a09192cf0000018bcfe5"
        "67fb01a2313091cf0000018bcfe567fcc3cf0000018bcfe5680ca463632d3298c0c09090a090c2cf0000018b"
        "cfe5680082a6636f66666565939292cf0000018bcfe567f9a3652d7092cf0000018bcfe567faa003919201cf"
        "0000018bcfe567faa37465619390009092cf0000018bcfe567eca46d61737392cf0000018bcfe567eba67265"
        "7461696c92cf0000018bcfe567eaad4575726f70652f4265726c696e919acf0000018bd50bc400cf0000018b"
        "cfe56800b072656e6577616c5f72656d696e646572a86b2d317c542d3330b072656e6577616c5f72656d696e"
        "646572a5656d61696ca96d61726b6574696e672891a3652d6bcf0000018bcfe567fd80"
    )
    assert raw[:1] == bytes([FORMAT])
    assert CustomerState.from_bytes(raw) == state


def test_the_json_format_before_it_is_still_read() -> None:
    # Given the same record as written by the code before the binary format (format 1, JSON)
    old = (
        b'{"c":"cust-7","f":1700000000000,"n":432000000,"o":{"account":41,"usage":7},'
        b'"s":[[123456789,0],[987654321,1]],"x":[[555,9]],"sv":{"sav-1":{"o":[[1,10000]],'
        b'"b":[[-3,25000],[-2,50000,2]],"d":[[2,5000,"e-d"]],"p":[["e-1",3,4,9000,["e-1",'
        b'"e-2"]],["e-3",5,6,1000,[],3]],"l":7},"sav-empty":{}},"fu":[[8,7000,"w","e-w"]],'
        b'"ct":{"k-1":{"p":"streaming","v":[[-9,"active",2592000000,1,"e-k"]],"m":[[2,1]]},'
        b'"k-2":{}},"u":{"c:k-1":[-1,1],"p:none":[]},"cp":[-2],"v":[["e-v",3,"k-1",["k-1"]],'
        b'["e-v2",4,null,[]]],"cc":{"cc-1":{"o":[-10,"e-o"],"x":[11],"a":[[1,"e-a"],2],'
        b'"s":[[-5,1]],"e":"10","m":[-4],"n":1,"l":12},"cc-2":{}},"pc":{"coffee":{"p":[[-7,'
        b'"e-p"],-6],"n":3,"m":[[1,-6]]},"tea":{}},"sg":[-20,"mass"],'
        b'"bu":[-21,"retail"],"tz":[-22,"Europe/Berlin"],"df":[[86400000,0,"renewal_reminder",'
        b'"k-1|T-30","renewal_reminder","email","marketing",40,["e-k"],-3]]}'
    )
    # When it is read
    state = CustomerState.from_bytes(old)
    # Then it is the same record, the old encoder (kept for this) gives the same bytes, and
    # the next write is in the current format
    assert state == _every_field()
    assert orjson.dumps(_encode(state)) == old
    assert state.to_bytes()[:1] == bytes([FORMAT])


def test_a_record_in_neither_format_is_refused_with_a_clear_error() -> None:
    # Given bytes that start with neither the version byte nor "{" (a future format, say)
    # When they are read, Then the error names the first byte and the formats read
    with pytest.raises(ValueError, match=r"starts with b'\\x07'.*format 2"):
        CustomerState.from_bytes(b"\x07\x90")
    # and a damaged record of the current format names its format
    with pytest.raises(ValueError, match="format 2"):
        CustomerState.from_bytes(bytes([FORMAT]) + b"\x93\x01")


def _every_field() -> CustomerState:
    f = 1_700_000_000_000
    return CustomerState(
        customer_id="cust-7",
        floor_ms=f,
        due_ms=f + 5 * DAY,
        applied_offsets={"account": 41, "usage": 7},
        seen=[(123456789, f - f % DAY), (987654321, f + DAY - f % DAY)],
        fired=[(555, f + 9)],
        savings={
            "sav-1": SavingsAccount(
                obs=[(f + 1, 100_00)],
                days=[(f // DAY - 3, 250_00, 1), (f // DAY - 2, 500_00, 2)],
                debits=[(f + 2, 50_00, "e-d")],
                drops=[
                    PinnedDrop("e-1", f + 3, f + 4, 90_00, ("e-1", "e-2")),
                    PinnedDrop("e-3", f + 5, f + 6, 10_00, (), 3),
                ],
                last_ms=f + 7,
            ),
            "sav-empty": SavingsAccount(last_ms=f),
        },
        follow_ups=[(f + 8, 70_00, "w", "e-w")],
        contracts={
            "k-1": ContractState(
                "streaming", [(f - 9, "active", f + 30 * DAY, 1, "e-k")], [(2, f + 1)]
            ),
            "k-2": ContractState(None, [], []),
        },
        usage={"c:k-1": [f - 1, f + 1], "p:none": []},
        complaints=[f - 2],
        visits=[VisitState("e-v", f + 3, "k-1", ["k-1"]), VisitState("e-v2", f + 4, None, [])],
        cards={
            "cc-1": CardState(
                (f - 10, "e-o"), f + 11, [(f + 1, "e-a"), (f + 2, "")], [(f - 5, 1)], "10",
                [f - 4], True, f + 12,
            ),
            "cc-2": CardState(last_ms=f),
        },
        categories={
            "coffee": CategoryState([(f - 7, "e-p"), (f - 6, "")], 3, [(1, f - 6)]),
            "tea": CategoryState(),
        },
        segment=(f - 20, "mass"),
        business_unit=(f - 21, "retail"),
        timezone=(f - 22, "Europe/Berlin"),
        deferred=[
            (
                f + DAY,
                f,
                Candidate(
                    "cust-7", "renewal_reminder", "k-1|T-30", "renewal_reminder", "email",
                    "marketing", 40, ("e-k",), f - 3,
                ),
            )
        ],
    )  # fmt: skip


# --- size ---------------------------------------------------------------------------------


def test_typical_record_stays_under_2_25_kb_over_three_years() -> None:
    # Given three years of a typical customer (about 1,400 events, UUID event ids)
    sizes: list[int] = []
    events = realistic_history(3)
    feed(events, sizes)
    # Then after the first year the typical (median) record is at most 2.25 KB and none exceeds
    # 2.75 KB, however long the history: every collection is pruned by time and capped by count.
    # (2 KB and 2.5 KB before the usage-lapse and price-rise slices: they add about 200 bytes
    # here, the usage times of two products and a complaint.)
    steady = sorted(sizes[len(sizes) // 3 :])
    assert len(events) > 1_200
    median = steady[len(steady) // 2]
    assert median <= 2_304, (median, steady[-1])
    assert steady[-1] <= 2_816, (median, steady[-1])


def test_heavy_record_is_bounded() -> None:
    # Given two years of a heavy customer (daily balances, daily use of two cards)
    sizes: list[int] = []
    feed(realistic_history(2, heavy=True), sizes)
    # Then the record is still bounded (day buckets of the 90-day baseline dominate)
    assert max(sizes) <= 8_192, max(sizes)


def test_old_data_is_pruned_as_the_clock_moves() -> None:
    # Given a year of history, then a year of silence
    state = feed(realistic_history(1))
    later = advance(state, T0 + 1_100 * DAY, PARAMS).state
    # Then the balances, follow-ups, visits and de-dup ids of long ago are gone; what remains
    # is the long-lived part (open dates, last purchases, the cards' last activity)
    assert later.savings == {} and later.follow_ups == [] and later.visits == []
    assert later.seen == []
    assert len(later.to_bytes()) < len(state.to_bytes()) // 2


# A record as the code before the trigger API wrote it (savings, contract, usage, complaint,
# visit, card, category, consent words and profile), byte for byte: what a table and its
# changelog hold when the new code first starts on them.
OLD_RECORD = (
    b'{"c":"cust-1","f":1767830400000,"n":8035200000,"s":[[255687422014056,0],'
    b"[96982591275512,1],[189203455214537,2],[215147098673104,3],[197207075731737,4],"
    b'[37184759476753,5],[227225824928584,6],[218488239719966,7]],"sv":{"sav-1":{"o":'
    b'[[-259200000,2000000]],"d":[[-172800000,50000,"e2"]],"l":-172800000}},"ct":{"ct-1":{"p":'
    b'"annual_pass","v":[[-86400000,"active",17020800000,1,"e3"]]}},"u":{"c:ct-1":[0],'
    b'"p:zoo":[172800000]},"cp":[86400000],"v":[["e6",172800000,null,[]]],"cc":{"cc-1":{"o":'
    b'[259200000,"e7"],"l":259200000}},"pc":{"air_filter":{"p":[[345600000,"e8"]],"n":1}},'
    b'"cs":{"sms":[432000000,1],"email":[518400000,1]},"sg":[604800000,"high_affinity"],'
    b'"tz":[604800000,"Europe/Berlin"]}'
)


def test_a_record_written_before_the_trigger_api_still_loads() -> None:
    # Given a record written by the code before the trigger API (with the consent words the
    # record no longer keeps)
    # When it is read
    state = CustomerState.from_bytes(OLD_RECORD)
    # Then every field the triggers use is there
    f = 1767830400000
    assert state.customer_id == "cust-1" and state.floor_ms == f
    assert state.due_ms == f + 8035200000
    assert len(state.seen) == 8
    assert state.savings["sav-1"].obs == [(f - 259200000, 2000000)]
    assert state.savings["sav-1"].debits == [(f - 172800000, 50000, "e2")]
    assert state.contracts["ct-1"].product == "annual_pass"
    assert state.contracts["ct-1"].versions == [(f - 86400000, "active", f + 17020800000, 1, "e3")]
    assert state.usage == {"c:ct-1": [f], "p:zoo": [f + 172800000]}
    assert state.complaints == [f + 86400000]
    assert state.visits[0].event_id == "e6"
    assert state.cards["cc-1"].opened == (f + 259200000, "e7")
    assert state.categories["air_filter"].count == 1
    assert state.segment == (f + 604800000, "high_affinity")
    assert state.timezone == (f + 604800000, "Europe/Berlin")
    # and the next write leaves the consent words out and changes nothing else
    again = orjson.loads(orjson.dumps(_encode(state)))
    old = orjson.loads(OLD_RECORD)
    del old["cs"]
    assert again == old
    # and the core goes on from it
    event = ev.Transaction(
        event_id="e99",
        customer_id="cust-1",
        occurred_at_ms=f + 10 * DAY,
        account_id="sav-1",
        account_type="savings",
        direction="debit",
        amount_cents=1_500_000,
        rail="wire",
    )
    fired = step(state, event, f + 10 * DAY, PARAMS).candidates
    assert [c.trigger for c in fired] == ["savings_drop_to_wire"]


def test_consent_and_unsubscribes_leave_the_record_alone() -> None:
    # Given a customer record
    state = step(None, _profile("k0", 0), T0, PARAMS).state
    before = state.to_bytes()
    # When consent words and an unsubscribe arrive (the contact ledger's business)
    for i, (cls, fields) in enumerate(
        [
            (ev.Consent, {"channel": "all", "status": "opted_out"}),
            (ev.Engagement, {"channel": "push", "action": "unsubscribed"}),
        ],
        start=1,
    ):
        event = cls(event_id=f"k{i}", customer_id="c", occurred_at_ms=T0, **fields)
        state = step(state, event, T0, PARAMS).state
    # Then only their ids were remembered (for de-duplication)
    assert len(state.seen) == 3
    state.seen = CustomerState.from_bytes(before).seen
    assert state.to_bytes() == before


def _profile(event_id: str, day: int) -> ev.Event:
    return ev.Profile(
        event_id=event_id, customer_id="c", occurred_at_ms=T0 + day * DAY, segment="mass"
    )


# --- thinned time lists -------------------------------------------------------------------

times_st = st.lists(st.integers(0, 2_000), min_size=0, max_size=40, unique=True)


def _windows(points: list[int]) -> Iterator[int]:
    yield from range(-5, 2_100, 7)


@settings(max_examples=150, deadline=None)
@given(times=times_st, window=st.integers(1, 300), extra=st.integers(0, 200))
def test_thinning_keeps_every_answer(times: list[int], window: int, extra: int) -> None:
    # Given any set of event times, inserted in any order and thinned for `window`
    thinned: list[int] = []
    for t in times:
        thinned = insert_thinned(thinned, t, lambda x: x, window)
    full = sorted(times)
    # Then "any event in [x - w, x]" has the same answer for every x and every w >= window,
    # and every gap longer than `window` (a lapse) starts at the same point
    for w in (window, window + extra):
        for x in _windows(full):
            assert any_between(thinned, x - w, x) == any_between(full, x - w, x), (x, w)

    def gaps(points: list[int]) -> list[int]:
        nexts: list[int | None] = [*points[1:], None][: len(points)]
        return [a for a, b in zip(points, nexts, strict=True) if b is None or b - a > window]

    assert gaps(thinned) == gaps(full)
    # ... and thinning what is already thinned changes nothing (replays are no-ops)
    assert thin(thinned, lambda x: x, window) == thinned
    for t in times:
        assert insert_thinned(thinned, t, lambda x: x, window) == thinned
