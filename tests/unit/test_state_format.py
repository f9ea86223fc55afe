"""The customer record's versioned encoding: records written by the code before the binary
format still load, and the current format gives back exactly what it was given.

Given / When / Then, with a comment on why each expectation holds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.decisions import Candidate
from streams.core.state import (
    DAY_MS,
    FORMAT,
    CardState,
    CategoryState,
    ContractState,
    CustomerState,
    PinnedDrop,
    SavingsAccount,
    VisitState,
    _encode,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "legacy_records.json"


def canonical(value: Any) -> Any:
    """A record as plain data, by field name (tuples as lists, the decoded slices left out):
    the form ``tests/fixtures/make_legacy_records.py`` stored, whatever the classes are."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "slices"
        }
    if isinstance(value, msgspec.Struct):
        return {name: canonical(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return value


def test_records_written_by_the_json_format_load_to_the_same_state() -> None:
    # Given records written by the code before the binary format (the bench's event mix, every
    # field and two trigger-API slices among them), with the state that code decoded them to
    records = orjson.loads(FIXTURE.read_bytes())
    assert len(records) >= 10
    for record in records:
        old = record["bytes"].encode()
        # When the current code reads them
        state = CustomerState.from_bytes(old)
        # Then the state is the same, field by field (slices included, kept as stored)
        assert canonical(state) == record["state"], record["key"]
        # and the old encoder, kept for reading old records' tests, gives back the same bytes
        assert orjson.dumps(_encode(state)) == old
        # and the next write is the current format, which reads back to the same state
        new = state.to_bytes()
        assert new[:1] == bytes([FORMAT])
        again = CustomerState.from_bytes(new)
        assert canonical(again) == record["state"], record["key"]
        assert again.to_bytes() == new


# --- a record of any content ------------------------------------------------------------------

F0 = 1_700_000_000_000
times = st.integers(F0 - 400 * DAY_MS, F0 + 400 * DAY_MS)
ids = st.text(max_size=12)
some_ids = st.text(min_size=1, max_size=12)
small = st.integers(0, 2**40)
cents = st.integers(-(2**40), 2**40)


def bounded(elements: st.SearchStrategy[Any], n: int = 4) -> st.SearchStrategy[list[Any]]:
    return st.lists(elements, max_size=n)


def keyed(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(some_ids, values, max_size=3)


days = st.integers(-400, 400).map(lambda d: (F0 // DAY_MS + d) * DAY_MS)
savings = st.builds(
    SavingsAccount,
    bounded(st.tuples(times, cents)),
    bounded(st.tuples(st.integers(19_000, 20_500), cents, st.integers(1, 50))),
    bounded(st.tuples(times, cents, ids)),
    bounded(
        st.builds(PinnedDrop, ids, times, times, cents, st.lists(ids, max_size=3).map(tuple), small)
    ),
    times,
)
contracts = st.builds(
    ContractState,
    st.none() | some_ids,  # the JSON format wrote no empty product
    bounded(st.tuples(times, ids, times, st.sampled_from([-1, 0, 1]), ids)),
    bounded(st.tuples(small, times)),
)
visits = st.builds(VisitState, ids, times, st.none() | ids, bounded(ids))
cards = st.builds(
    CardState,
    st.none() | st.tuples(times, ids),
    st.none() | times,
    bounded(st.tuples(times, ids)),
    bounded(st.tuples(times, st.sampled_from([0, 1]))),
    st.text(alphabet="01", max_size=6),
    bounded(times),
    st.booleans(),
    times,
)
categories = st.builds(
    CategoryState, bounded(st.tuples(times, ids)), small, bounded(st.tuples(small, times))
)
candidates = st.builds(
    Candidate,
    st.just("cust-1"),
    ids,
    ids,
    ids,
    ids,
    ids,
    small,
    st.lists(ids, max_size=3).map(tuple),
    times,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
ext = st.dictionaries(
    some_ids,
    st.tuples(st.integers(1, 9), json_values).map(list)
    | st.tuples(st.integers(1, 9), json_values, times).map(list),
    max_size=3,
).map(lambda d: {k: d[k] for k in sorted(d)})


@st.composite
def records(draw: st.DrawFn) -> CustomerState:
    return CustomerState(
        customer_id="cust-1",
        floor_ms=F0,
        due_ms=draw(st.none() | times),
        applied_offsets=draw(keyed(small)),
        seen=draw(bounded(st.tuples(st.integers(0, 2**48 - 1), days))),
        fired=draw(bounded(st.tuples(st.integers(0, 2**48 - 1), times))),
        savings=draw(keyed(savings)),
        follow_ups=draw(bounded(st.tuples(times, cents, st.sampled_from("cwil"), ids))),
        contracts=draw(keyed(contracts)),
        usage=draw(keyed(bounded(times))),
        complaints=draw(bounded(times)),
        visits=draw(bounded(visits)),
        cards=draw(keyed(cards)),
        categories=draw(keyed(categories)),
        segment=draw(st.none() | st.tuples(times, ids)),
        business_unit=draw(st.none() | st.tuples(times, ids)),
        timezone=draw(st.none() | st.tuples(times, ids)),
        deferred=draw(bounded(st.tuples(times, times, candidates), 2)),
        ext=draw(ext),
    )


@settings(max_examples=300, deadline=None)
@given(records())
def test_the_format_gives_back_any_record(state: CustomerState) -> None:
    # Given any record, When it is written and read back
    raw = state.to_bytes()
    again = CustomerState.from_bytes(raw)
    # Then it is the same record (the slices as stored too: ``==`` leaves them out), and it is
    # written to the same bytes again (the table and its changelog compare them)
    assert again == state
    assert again.ext == state.ext
    assert again.to_bytes() == raw


@settings(max_examples=300, deadline=None)
@given(records())
def test_any_record_in_the_json_format_reads_the_same(state: CustomerState) -> None:
    # Given any record written in the JSON format of the code before (format 1)
    old = orjson.dumps(_encode(state))
    # When the current code reads it, Then it is the same record, and so is its next write
    again = CustomerState.from_bytes(old)
    assert again == state and again.ext == state.ext
    assert CustomerState.from_bytes(again.to_bytes()) == state
