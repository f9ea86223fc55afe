"""Bad input at scale: the decoder never lets anything but InvalidEvent escape.

Given valid events of every type (the scenarios' histories and the schema examples), when
more than 100,000 mutated records go through ``Decoder.decode`` (byte-level mutations:
truncation, bit flips, inserted garbage, huge numbers, deep nesting, long strings, duplicate
keys, wrong types, absurd timestamps, oversized values, bad keys), then every one is either
accepted as a typed event or rejected with InvalidEvent carrying a known reason code and a
message; and hypothesis explores arbitrary JSON values and byte strings on top.

The decoder has two paths (streams/core/ingest.py): msgspec's fast path and the validator.
On every one of these records the fast path either hands over or gives exactly the
validator's event, and the decoder's verdict (event, or reason code and message) is the one
the validator alone gives.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core import ingest
from streams.core.errors import InvalidEvent
from streams.core.events import ACCOUNT_EVENT_TYPES, Event
from streams.core.ingest import DEFAULT_MAX_MESSAGE_BYTES, Decoder, decode_fast, decode_payload
from streams.core.timeutil import parse_rfc3339_ms
from streams.tools.scenarios import all_scenarios

NOW = parse_rfc3339_ms("2026-03-01T09:30:00Z") or 0
DECODER = Decoder()
REASONS = {
    "empty_value",
    "too_large",
    "missing_key",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "unknown_type",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "bad_timestamp",
    "key_mismatch",
    "future_timestamp",
}
ACCOUNT_TYPES = frozenset(ACCOUNT_EVENT_TYPES)  # the types of account-events
MUTATED_RECORDS = 110_000


def _seeds() -> list[tuple[str, dict[str, Any]]]:
    start = parse_rfc3339_ms("2024-01-01T00:00:00Z") or 0
    seeds = []
    for scenario in all_scenarios(start, "fz"):
        for event in scenario.events:
            kind = "account" if event["type"] in ACCOUNT_TYPES else "usage"
            seeds.append((kind, event))
    return seeds


SEEDS = _seeds()
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    10**30,
    -(10**30),
    1e308,
    -1e-308,
    0.000001,
    "",
    "x" * 129,
    "x" * 10_000,
    "\u0000",
    "\ud7ff\ue000",
    "😀" * 100,
    [],
    [1, 2, 3],
    {},
    {"a": {"b": {"c": []}}},
    "1900-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
    "2199-12-31T23:59:59+23:59",
    "2200-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-02-29T00:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T09:30:00.1234567890Z",
    "2026-03-01T09:30:00Z\n",
    "2026-03-01 09:30:00Z",
    "NaN",
    "Europe/Berlin",
]
RAW_NUMBERS = [
    b"1e400",
    b"-1e400",
    b"123456789012345678901234567890",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1" * 5000,
    b"0." + b"0" * 5000 + b"1",
    b"NaN",
    b"Infinity",
    b"-0",
    b"01",
    b"1.",
    b".5",
    b"0x10",
]
GARBAGE = [b"\x00", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"{", b"}", b"[", b"]", b'"', b",", b":"]


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _dumps(obj: Any) -> bytes:
    # The standard library, not orjson: it writes integers of any size, as hostile producers do.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class Mutator:
    """A seeded generator of hostile records built from valid ones."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def record(self) -> tuple[str, bytes | None, bytes | None]:
        rng = self.rng
        kind, event = rng.choice(SEEDS)
        kind = kind if rng.random() > 0.05 else ("usage" if kind == "account" else "account")
        key: bytes | None = event["customer_id"].encode()
        if rng.random() < 0.03:
            key = rng.choice([None, b"", b"\xff\xfe", b"other", key + b" "])
        mutate = rng.choice(
            [
                self.valid,
                self.field_value,
                self.drop_field,
                self.extra_field,
                self.truncate,
                self.bit_flips,
                self.insert_garbage,
                self.raw_number,
                self.deep_nesting,
                self.duplicate_key,
                self.huge,
                self.not_an_object,
            ]
        )
        return kind, key, mutate(dict(event))

    def valid(self, event: dict[str, Any]) -> bytes:
        return _dumps(event)

    def field_value(self, event: dict[str, Any]) -> bytes:
        name = self.rng.choice(list(event))
        event[name] = self.rng.choice(ODD_VALUES)
        return _dumps(event)

    def drop_field(self, event: dict[str, Any]) -> bytes:
        event.pop(self.rng.choice(list(event)))
        return _dumps(event)

    def extra_field(self, event: dict[str, Any]) -> bytes:
        event[self.rng.choice(["x", "note", "nested", "type2"])] = self.rng.choice(ODD_VALUES)
        return _dumps(event)

    def truncate(self, event: dict[str, Any]) -> bytes:
        raw = _dumps(event)
        return raw[: self.rng.randrange(len(raw))]

    def bit_flips(self, event: dict[str, Any]) -> bytes:
        raw = bytearray(_dumps(event))
        for _ in range(self.rng.randint(1, 4)):
            raw[self.rng.randrange(len(raw))] ^= 1 << self.rng.randrange(8)
        return bytes(raw)

    def insert_garbage(self, event: dict[str, Any]) -> bytes:
        raw = _dumps(event)
        at = self.rng.randrange(len(raw) + 1)
        junk = b"".join(self.rng.choice(GARBAGE) for _ in range(self.rng.randint(1, 5)))
        return raw[:at] + junk + raw[at:]

    def raw_number(self, event: dict[str, Any]) -> bytes:
        name = self.rng.choice(list(event))
        text = _dumps({**event, name: "__RAW__"})
        return text.replace(b'"__RAW__"', self.rng.choice(RAW_NUMBERS))

    def deep_nesting(self, event: dict[str, Any]) -> bytes:
        depth = self.rng.choice([10, 200, 1024, 5000, 20_000])
        name = self.rng.choice(["extra", "amount", "event_id"])
        text = _dumps({**event, name: "__RAW__"})
        nested = _deep(depth) if self.rng.random() < 0.5 else b"[" * depth + b"]" * depth
        return text.replace(b'"__RAW__"', nested)

    def duplicate_key(self, event: dict[str, Any]) -> bytes:
        name = self.rng.choice(list(event))
        raw = _dumps(event)
        dup = _dumps({name: self.rng.choice(ODD_VALUES)})[1:-1]
        return raw[:-1] + b"," + dup + b"}"

    def huge(self, event: dict[str, Any]) -> bytes:
        size = self.rng.choice([DEFAULT_MAX_MESSAGE_BYTES - 200, DEFAULT_MAX_MESSAGE_BYTES + 1])
        event["padding"] = "p" * size
        if self.rng.random() < 0.5:
            event["list"] = list(range(self.rng.choice([10, 10_000])))
        return _dumps(event)

    def not_an_object(self, event: dict[str, Any]) -> bytes:
        return self.rng.choice(
            [b"null", b"[]", b"1", b'"s"', b"true", b"", b" ", b"\xef\xbb\xbf{}"]
        )


def _decode(kind: str, key: bytes | None, value: bytes | None) -> Event | InvalidEvent:
    """One record through the decoder: the event, or the InvalidEvent it raised. Anything else
    propagates and fails the test."""
    try:
        return DECODER.decode(kind, key, value, NOW)
    except InvalidEvent as exc:
        assert exc.code in REASONS, exc.code
        assert exc.message and len(exc.message) < 1000, exc.code
        return exc


def _fast_path_agrees(kind: str, value: bytes | None) -> bool:
    """Whether the fast path took the value; fails the test if it took it otherwise than the
    validator (which must accept it, with an equal event of the same class)."""
    if not value:
        return False
    fast = decode_fast(kind, value)
    if fast is None:
        return False
    slow = decode_payload(kind, value)  # raises InvalidEvent (fails the test) if it rejects
    assert fast == slow and type(fast) is type(slow), (value, fast, slow)
    return True


@contextmanager
def _validator_only() -> Iterator[None]:
    """The decoder as it was before the fast path: every record through the validator."""
    with mock.patch.object(ingest, "decode_fast", lambda kind, value: None):
        yield


def _verdict(result: Event | InvalidEvent) -> Any:
    return result if isinstance(result, Event) else (result.code, result.message)


def test_more_than_100k_mutated_records_are_accepted_or_rejected_with_a_reason() -> None:
    mutator = Mutator(seed=20260301)
    outcomes: Counter[str] = Counter()
    for _ in range(MUTATED_RECORDS):
        kind, key, value = mutator.record()
        result = _decode(kind, key, value)
        outcomes["accepted" if isinstance(result, Event) else result.code] += 1
        outcomes["fast path"] += _fast_path_agrees(kind, value)
    assert sum(outcomes[r] for r in (*REASONS, "accepted")) == MUTATED_RECORDS
    # The generator reaches both sides and most reasons (else it tests too little).
    assert outcomes["accepted"] > MUTATED_RECORDS // 20, outcomes
    assert len(set(outcomes) & REASONS) >= 11, outcomes
    # The fast path takes a good share of the accepted records (else the equality of the two
    # paths above is vacuous).
    assert outcomes["fast path"] > outcomes["accepted"] // 4, outcomes


def test_the_fast_path_leaves_every_verdict_as_the_validator_gives_it() -> None:
    """Dead letters read exactly as before the fast path: same reason code, same message."""
    mutator = Mutator(seed=20260302)
    records = [mutator.record() for _ in range(20_000)]
    with_fast_path = [_verdict(_decode(*record)) for record in records]
    with _validator_only():
        validator_alone = [_verdict(_decode(*record)) for record in records]
    assert with_fast_path == validator_alone


def test_every_seed_is_accepted_and_every_limit_is_exact() -> None:
    """The seeds are valid (so mutations start from the accepted side), and the documented
    limits sit exactly where docs-reliability.md says."""
    for kind, event in SEEDS:
        assert isinstance(_decode(kind, event["customer_id"].encode(), _dumps(event)), Event)
    kind, event = next((k, e) for k, e in SEEDS if e["type"] == "purchase")
    key = event["customer_id"].encode()

    def code(**changes: Any) -> str:
        result = _decode(kind, key, _dumps({**event, **changes}))
        return "accepted" if isinstance(result, Event) else result.code

    assert code(product_category="x" * 128) == "accepted"
    assert code(product_category="x" * 129) == "out_of_range"
    assert code(event_id="e" * 128) == "accepted"
    assert code(amount=10**12) == "accepted"
    assert code(amount=10**12 + 1) == "out_of_range"
    assert code(occurred_at="1900-01-01T00:00:00Z") == "accepted"
    assert code(occurred_at="1899-12-31T23:59:59Z") == "bad_timestamp"
    assert code(occurred_at="2199-12-31T23:59:59Z") == "future_timestamp"  # valid, too far ahead
    assert code(occurred_at="2200-01-01T00:00:00Z") == "bad_timestamp"
    # Unknown fields are ignored, whatever their shape, up to the size limit.
    assert code(extra=[list(range(100))] * 50) == "accepted"
    nested = _dumps({**event, "extra": "__RAW__"}).replace(b'"__RAW__"', _deep(1000))
    assert isinstance(_decode(kind, key, nested), Event)
    too_deep = _dumps({**event, "extra": "__RAW__"}).replace(b'"__RAW__"', _deep(1100))
    assert _decode(kind, key, too_deep).code == "invalid_json"  # type: ignore[union-attr]
    padded = _dumps({**event, "pad": ""})
    fill = DEFAULT_MAX_MESSAGE_BYTES - len(padded)
    exact = _dumps({**event, "pad": "p" * fill})
    assert len(exact) == DEFAULT_MAX_MESSAGE_BYTES and isinstance(_decode(kind, key, exact), Event)
    over = _dumps({**event, "pad": "p" * (fill + 1)})
    assert _decode(kind, key, over).code == "too_large"  # type: ignore[union-attr]


PURCHASE = (
    b'{"type":"purchase","event_id":"e","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z",'
    b'"product_category":"X","amount":5}'
)


@pytest.mark.parametrize(
    "value",
    [
        # Bytes no JSON text may hold, in a contract field or between tokens.
        *(
            PURCHASE.replace(b'"X"', b'"' + raw + b'"')
            for raw in (b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xed\xa0\x80", b"\\x")
        ),
        *(
            PURCHASE.replace(b',"amount"', ws + b'"amount"')
            for ws in (b"\x0c", b"\x0b", b"\xc2\xa0")
        ),
        PURCHASE + b"\x00",
        # Escapes in names, the tag and values: the same text once unescaped.
        PURCHASE.replace(b'"amount"', b'"amo\\u0075nt"'),
        PURCHASE.replace(b'"purchase"', b'"purch\\u0061se"'),
        PURCHASE.replace(b'"type"', b'"typ\\u0065"'),
        PURCHASE.replace(b'"X"', b'"\\u00E9\\/\x7f"'),
        # Number forms and values at the edges of a double and of the money bounds.
        *(
            PURCHASE.replace(b'"amount":5', b'"amount":' + number)
            for number in (
                b"5.",
                b"+5",
                b"5e",
                b"1E2",
                b"1e-2",
                b"0.015",
                b"123456.785",
                b"4.9e-324",
                b"1e-400",
                b"18446744073709551616",
                b"999999999999.995",
                b"1000000000000.0000001",
                b"0.1000000000000000055511151231257827",
                b"-0",
                b"-0.0",
            )
        ),
    ],
)
def test_the_fast_path_and_the_validator_agree_on_raw_json_edges(value: bytes) -> None:
    _fast_path_agrees("usage", value)
    with_fast_path = _verdict(_decode("usage", b"c", value))
    with _validator_only():
        assert _verdict(_decode("usage", b"c", value)) == with_fast_path


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["account", "usage"]),
    seed=st.sampled_from(range(len(SEEDS))),
    overrides=st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "customer_id",
                "type",
                "occurred_at",
                "amount",
                "balance",
                "account_type",
                "channel",
                "expires_at",
                "timezone",
                "x",
            ]
        ),
        json_values,
        max_size=3,
    ),
)
def test_hypothesis_field_values_never_escape(
    kind: str, seed: int, overrides: dict[str, Any]
) -> None:
    event = {**SEEDS[seed][1], **overrides}
    cid = event.get("customer_id")
    key = cid.encode() if isinstance(cid, str) else b"k"
    value = _dumps(event)
    _decode(kind, key, value)
    _fast_path_agrees(kind, value)


@settings(max_examples=1500, deadline=None)
@given(
    kind=st.sampled_from(["account", "usage"]),
    key=st.none() | st.binary(max_size=8),
    value=st.none() | st.binary(max_size=300),
)
def test_hypothesis_arbitrary_bytes_never_escape(
    kind: str, key: bytes | None, value: bytes | None
) -> None:
    _decode(kind, key, value)
    _fast_path_agrees(kind, value)
