"""The decoder on its own: typed events out of valid bytes, precise reasons for bad ones."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from streams.core import events as ev
from streams.core.errors import InvalidEvent
from streams.core.ingest import Decoder, dead_letter, decode_fast, validate_payload
from streams.core.timeutil import parse_rfc3339_ms

NOW_MS = parse_rfc3339_ms("2026-03-01T12:00:00Z") or 0


def _txn(**over: Any) -> dict[str, Any]:
    base = {
        "event_id": "e1",
        "customer_id": "c1",
        "type": "transaction",
        "occurred_at": "2026-03-01T09:30:00Z",
        "account_id": "a1",
        "account_type": "savings",
        "direction": "debit",
        "amount": 0.29,
        "rail": "internal",
    }
    base.update(over)
    return base


def _reason(
    kind: str, key: bytes | None, value: bytes | None, decoder: Decoder | None = None
) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        (decoder or Decoder()).decode(kind, key, value, NOW_MS)
    return info.value


def test_valid_transaction_becomes_a_typed_event_in_cents() -> None:
    event = Decoder().decode("account", b"c1", orjson.dumps(_txn(balance_after=-3)), NOW_MS)
    assert isinstance(event, ev.Transaction)
    # 0.29 * 100 is 28.999...; the contract compares in integer cents, so it must be 29.
    assert event.amount_cents == 29
    assert event.balance_after_cents == -300
    assert event.occurred_at_ms == parse_rfc3339_ms("2026-03-01T09:30:00Z")
    assert event.transfer_id is None


def test_unknown_fields_are_ignored() -> None:
    event = validate_payload("account", _txn(new_field={"nested": [1, 2]}))
    assert isinstance(event, ev.Transaction)


def test_the_fast_path_decodes_a_plain_record_to_the_validators_event() -> None:
    # Given a record with only the contract's fields, money as a float, a 3-digit fraction
    value = orjson.dumps(_txn(occurred_at="2026-03-01T09:30:00.250Z", balance_after=12.5))
    # When the fast path (msgspec) decodes it
    event = decode_fast("account", value)
    # Then it is the validator's event: a frozen Struct in cents and epoch ms, nothing else
    assert event == validate_payload("account", orjson.loads(value))
    assert isinstance(event, ev.Transaction) and isinstance(event, ev.AccountEvent)
    assert (event.amount_cents, event.balance_after_cents) == (29, 1250)
    assert event.occurred_at_ms == parse_rfc3339_ms("2026-03-01T09:30:00.250Z")
    assert event.type == "transaction" and event.topic_kind == "account"
    with pytest.raises(AttributeError):
        event.amount_cents = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        # A field the contract does not name: msgspec would skip its value unread (it takes
        # invalid UTF-8 or a number beyond a double there), so the validator reads the record.
        (orjson.dumps(_txn(note="ok")), None),
        (orjson.dumps(_txn())[:-1] + b',"note":"\xff"}', "invalid_json"),
        (orjson.dumps(_txn())[:-1] + b',"note":1e400}', "invalid_json"),
        (orjson.dumps(_txn())[:-1] + b',"note":"\xed\xa0\x80"}', "invalid_json"),
        # A form of timestamp the fast path does not take: the validator's verdict.
        (orjson.dumps(_txn(occurred_at="2026-03-01T10:30:00+01:00")), None),
        (orjson.dumps(_txn(occurred_at="2026-03-01 09:30:00Z")), "bad_timestamp"),
        (orjson.dumps(_txn(occurred_at="2026-03-01T09:30:00")), "bad_timestamp"),
        # Duplicate keys: the last one counts, on both paths (orjson's and JSON's usual rule).
        (orjson.dumps(_txn())[:-1] + b',"amount":"x"}', "wrong_type"),
        (orjson.dumps(_txn(amount="x"))[:-1] + b',"amount":0.5}', None),
    ],
)
def test_what_the_fast_path_hands_over_gets_the_validators_verdict(
    value: bytes, code: str | None
) -> None:
    if code is None:
        event = Decoder().decode("account", b"c1", value, NOW_MS)
        assert event == validate_payload("account", orjson.loads(value))
    else:
        assert _reason("account", b"c1", value).code == code


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (_txn(amount=0), "out_of_range", "amount"),
        (_txn(amount=-0.01), "out_of_range", "amount"),
        (_txn(amount=1e12 + 1), "out_of_range", "amount"),
        (_txn(amount=False), "wrong_type", "amount"),
        (_txn(direction="up"), "invalid_value", "direction"),
        (_txn(rail=None), "invalid_value", "rail"),
        (_txn(occurred_at="2026-03-01T09:30:00+24:00"), "bad_timestamp", "occurred_at"),
        (_txn(occurred_at="2026-03-01T09:30:60Z"), "bad_timestamp", "occurred_at"),
        (_txn(occurred_at="1899-12-31T23:59:59Z"), "bad_timestamp", "occurred_at"),
        (_txn(source=""), "out_of_range", "source"),
        (_txn(transfer_id=5), "wrong_type", "transfer_id"),
        ({**_txn(), "type": ["transaction"]}, "unknown_type", "type"),
    ],
)
def test_invalid_fields_are_named_in_the_reason(
    payload: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_payload("account", payload)
    assert info.value.code == code
    assert info.value.message.startswith(f"{field}:")


def test_amount_boundaries_are_inclusive_at_the_top() -> None:
    assert validate_payload("account", _txn(amount=1e12)).amount_cents == 100_000_000_000_000  # type: ignore[attr-defined]


def test_type_must_belong_to_the_topic() -> None:
    reason = _reason("usage", b"c1", orjson.dumps(_txn()))
    assert reason.code == "unknown_type"
    assert "usage-events" in reason.message


def test_record_level_rules() -> None:
    body = orjson.dumps(_txn())
    assert _reason("account", None, body).code == "missing_key"
    assert _reason("account", b"c2", body).code == "key_mismatch"
    assert _reason("account", b"c1", b"").code == "empty_value"
    assert _reason("account", b"c1", None).code == "empty_value"
    small = Decoder(max_message_bytes=len(body) - 1)
    assert _reason("account", b"c1", body, small).code == "too_large"
    assert Decoder(max_message_bytes=len(body)).decode("account", b"c1", body, NOW_MS)


def test_future_limit_is_one_day_ahead_of_the_wall_clock() -> None:
    one_day = "2026-03-02T12:00:00Z"  # exactly one day ahead: still accepted
    just_over = "2026-03-02T12:00:00.001Z"
    assert Decoder().decode("account", b"c1", orjson.dumps(_txn(occurred_at=one_day)), NOW_MS)
    reason = _reason("account", b"c1", orjson.dumps(_txn(occurred_at=just_over)))
    assert reason.code == "future_timestamp"


def test_dead_letter_keeps_text_as_text_and_binary_as_base64() -> None:
    error = InvalidEvent("invalid_json", "value: not valid UTF-8 JSON")
    text = orjson.loads(
        dead_letter(
            source_topic="t",
            partition=3,
            offset=42,
            key=b"c1",
            value=b"{oops",
            error=error,
            received_at_ms=NOW_MS,
        )
    )
    assert text == {
        "source_topic": "t",
        "partition": 3,
        "offset": 42,
        "key": "c1",
        "value": "{oops",
        "error": "value: not valid UTF-8 JSON",
        "error_code": "invalid_json",
        "received_at": "2026-03-01T12:00:00.000Z",
        "key_bytes": 2,
        "key_sha256": hashlib.sha256(b"c1").hexdigest(),
        "key_truncated": False,
        "value_bytes": 5,
        "value_sha256": hashlib.sha256(b"{oops").hexdigest(),
        "value_truncated": False,
    }
    binary = orjson.loads(
        dead_letter(
            source_topic="t",
            partition=0,
            offset=1,
            key=b"\xff",
            value=b"\x00\xff",
            error=error,
            received_at_ms=NOW_MS,
        )
    )
    assert binary["key_encoding"] == "base64" and base64.b64decode(binary["key"]) == b"\xff"
    assert binary["value_encoding"] == "base64"
    assert base64.b64decode(binary["value"]) == b"\x00\xff"
    none = orjson.loads(
        dead_letter(
            source_topic="t",
            partition=0,
            offset=1,
            key=None,
            value=None,
            error=error,
            received_at_ms=NOW_MS,
        )
    )
    assert none["key"] is None and none["value"] is None
