"""Ingest: raw Kafka record bytes -> a validated, typed event, or a dead letter.

We decode and validate ourselves instead of relying on Faust's decode-error path, which
commits and forgets. Every rule here mirrors ``schemas/``; the test suite proves the decoder
accepts exactly what the schemas accept. Record-level rules the schemas cannot express (the
key, the size limit, ``occurred_at`` too far ahead of the wall clock) are checked here too.

Two paths, one result. The fast path is msgspec: the record's bytes straight into the typed
event (``streams.core.events``), the schema's rules checked by the decoder as it goes, in
C; then money to cents and timestamps to epoch ms. It accepts only what the schemas accept
and rejects a little more (a field the contract does not name, an unusual timestamp form).
Whatever it rejects goes through the validator (orjson and ``validate_payload``, plain
checks in the schema's order), which accepts it or names the bounded ``error_code`` and the
field. So a dead letter reads exactly as before, and rejection, the rare case, pays for both.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
from msgspec.structs import force_setattr

from streams.core import events as ev
from streams.core.errors import InvalidEvent
from streams.core.timeutil import MS_PER_SECOND, format_ms, parse_rfc3339_ms

# The schema's bounds, shared with the fast path's field types (streams.core.events).
ID_MAX_LENGTH = ev.ID_MAX_LENGTH
TEXT_MAX_LENGTH = ev.TEXT_MAX_LENGTH
TIMEZONE_MAX_LENGTH = ev.TIMEZONE_MAX_LENGTH
MONEY_LIMIT = ev.MONEY_LIMIT
TIMEZONE_PATTERN = ev.TIMEZONE_PATTERN
_TIMEZONE = re.compile(TIMEZONE_PATTERN, re.ASCII)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_MAX_FUTURE_SECONDS = 86_400
# A dead letter's copy of the original key and of the value is cut to this many bytes of its
# JSON text (stream.dead_letter_max_value_bytes).
DEFAULT_DEAD_LETTER_MAX_VALUE_BYTES = 64 * 1024
# The largest bound the configuration takes: a dead letter carries the key twice (as the
# record's key and in its "key" field) and the value once, each cut to the bound, plus the
# error and its position; all of it must fit the producer's request limit (Faust's
# producer_max_request_size, 1,000,000 bytes).
DEAD_LETTER_MAX_VALUE_BYTES_LIMIT = 256 * 1024
# An error text longer than this is cut (an exception's message may quote anything).
DEAD_LETTER_MAX_ERROR_CHARS = 1_000


# --- field checks: each returns the typed value or raises InvalidEvent ------------------

Check = Callable[[str, Any], Any]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string(max_length: int) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidEvent("wrong_type", f"{name}: must be a string, got {_describe(value)}")
        if not 1 <= len(value) <= max_length:
            raise InvalidEvent(
                "out_of_range",
                f"{name}: must be 1 to {max_length} characters long, got {len(value)}",
            )
        return value

    return check


def _enum(allowed: tuple[str, ...]) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise InvalidEvent(
                "invalid_value",
                f"{name}: must be one of {', '.join(allowed)}; got {_describe(value)}",
            )
        return value

    return check


def _number(name: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("wrong_type", f"{name}: must be a number, got {_describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):  # orjson never yields one
        raise InvalidEvent("invalid_value", f"{name}: must be a finite number")
    return value


def _cents(value: float | int) -> int:
    return round(value * 100)


def _amount(name: str, value: Any) -> int:
    number = _number(name, value)
    if not 0 < number <= MONEY_LIMIT:
        raise InvalidEvent(
            "out_of_range",
            f"{name}: must be greater than 0 and at most {MONEY_LIMIT}, got {number!r}",
        )
    return _cents(number)


def _non_negative_money(name: str, value: Any) -> int:
    number = _number(name, value)
    if not 0 <= number <= MONEY_LIMIT:
        raise InvalidEvent(
            "out_of_range", f"{name}: must be between 0 and {MONEY_LIMIT}, got {number!r}"
        )
    return _cents(number)


def _money(name: str, value: Any) -> int:
    number = _number(name, value)
    if not -MONEY_LIMIT <= number <= MONEY_LIMIT:
        raise InvalidEvent(
            "out_of_range",
            f"{name}: must be between -{MONEY_LIMIT} and {MONEY_LIMIT}, got {number!r}",
        )
    return _cents(number)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{name}: must be true or false, got {_describe(value)}")
    return value


def _timestamp(name: str, value: Any) -> int:
    if not isinstance(value, str):
        raise InvalidEvent(
            "wrong_type", f"{name}: must be an RFC 3339 date-time string, got {_describe(value)}"
        )
    millis = parse_rfc3339_ms(value)
    if millis is None:
        raise InvalidEvent(
            "bad_timestamp",
            f"{name}: {value[:64]!r} is not an RFC 3339 date-time with offset between the years "
            "1900 and 2199 (e.g. 2026-03-01T09:30:00Z or 2026-03-01T10:30:00+01:00)",
        )
    return millis


def _timezone(name: str, value: Any) -> str:
    text: str = _string(TIMEZONE_MAX_LENGTH)(name, value)
    if _TIMEZONE.fullmatch(text) is None:  # fullmatch: "$" alone lets a final "\n" through
        raise InvalidEvent(
            "invalid_value", f"{name}: {text!r} is not an IANA time zone name like Europe/Berlin"
        )
    return text


_ID = _string(ID_MAX_LENGTH)
_TEXT = _string(TEXT_MAX_LENGTH)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an event type: JSON name, check, required, attribute on the typed event."""

    name: str
    check: Check
    required: bool = True
    attribute: str = ""

    @property
    def target(self) -> str:
        return self.attribute or self.name


def _f(name: str, check: Check, required: bool = True, unit: str = "") -> Field:
    return Field(name, check, required, f"{name}_{unit}" if unit else "")


_ACCOUNT = (_f("account_id", _ID), _f("account_type", _enum(ev.ACCOUNT_TYPES)))

FIELDS: Mapping[str, tuple[Field, ...]] = {
    "account_opened": _ACCOUNT,
    "account_closed": _ACCOUNT,
    "balance": (*_ACCOUNT, _f("balance", _money, unit="cents")),
    "transaction": (
        *_ACCOUNT,
        _f("direction", _enum(ev.DIRECTIONS)),
        _f("amount", _amount, unit="cents"),
        _f("rail", _enum(ev.RAILS)),
        _f("balance_after", _money, required=False, unit="cents"),
        _f("transfer_id", _ID, required=False),
        _f("counterparty_account_id", _ID, required=False),
    ),
    "statement": (
        _f("account_id", _ID),
        _f("statement_balance", _non_negative_money, unit="cents"),
        _f("amount_paid", _non_negative_money, unit="cents"),
        _f("minimum_due", _non_negative_money, unit="cents"),
    ),
    "contract": (
        _f("contract_id", _ID),
        _f("product", _TEXT),
        _f("status", _enum(ev.CONTRACT_STATUSES)),
        _f("expires_at", _timestamp, unit="ms"),
        _f("auto_renew", _boolean),
        _f("price", _amount, required=False, unit="cents"),
    ),
    "auto_renew_charged": (
        _f("contract_id", _ID),
        _f("amount", _amount, unit="cents"),
        _f("expires_at", _timestamp, unit="ms"),
    ),
    "visit": (
        _f("venue", _TEXT),
        _f("sentiment", _enum(ev.SENTIMENTS)),
        _f("contract_id", _ID, required=False),
    ),
    "complaint": (_f("category", _TEXT), _f("resolved", _boolean, required=False)),
    "product_usage": (
        _f("product", _TEXT),
        _f("activity", _TEXT),
        _f("contract_id", _ID, required=False),
    ),
    "purchase": (_f("product_category", _TEXT), _f("amount", _amount, unit="cents")),
    "engagement": (
        _f("channel", _enum(ev.CHANNELS)),
        _f("action", _enum(ev.ENGAGEMENT_ACTIONS)),
        _f("decision_id", _ID, required=False),
    ),
    "consent": (
        _f("channel", _enum(ev.CONSENT_CHANNELS)),
        _f("status", _enum(ev.CONSENT_STATUSES)),
    ),
    "profile": (
        _f("segment", _TEXT, required=False),
        _f("business_unit", _TEXT, required=False),
        _f("timezone", _timezone, required=False),
    ),
}

# FIELDS as plain tuples (name, check, required, attribute): validate_payload reads them for
# every record, without a property call per field.
_PLANS: Mapping[str, tuple[tuple[str, Check, bool, str], ...]] = {
    type_name: tuple((f.name, f.check, f.required, f.target) for f in fields)
    for type_name, fields in FIELDS.items()
}

TOPIC_TYPES: Mapping[str, Mapping[str, type[ev.Event]]] = {
    "account": ev.ACCOUNT_EVENT_TYPES,
    "usage": ev.USAGE_EVENT_TYPES,
}


class _NotFast(Exception):
    """The fast path does not take this record; the validator decides."""


def _union(classes: Iterable[type[ev.Event]]) -> Any:
    return functools.reduce(operator.or_, classes)


# One msgspec decoder per input topic: a union of the topic's event types, told apart by
# their "type" tag.
_FAST_DECODERS: Mapping[str, Callable[[bytes], ev.Event]] = {
    kind: msgspec.json.Decoder(_union(types.values())).decode for kind, types in TOPIC_TYPES.items()
}
# Per event type, the fields the fast path converts after the decode: (attribute, True for a
# timestamp / False for money). From FIELDS, so both paths convert the same fields alike.
_CONVERSIONS: Mapping[type[ev.Event], tuple[tuple[str, bool], ...]] = {
    TOPIC_TYPES[kind][type_name]: tuple(
        (f.attribute, f.attribute.endswith("_ms")) for f in fields if f.attribute
    )
    for kind, types in TOPIC_TYPES.items()
    for type_name, fields in FIELDS.items()
    if type_name in types
}


def _finish(event: ev.Event) -> ev.Event:
    """The event msgspec decoded, with money in cents and times in epoch ms (in place: the
    event is not yet shared). Raises _NotFast for a timestamp the contract rejects."""
    # Until here the attribute holds the wire's text (see streams.core.events).
    millis = parse_rfc3339_ms(event.occurred_at_ms)  # type: ignore[arg-type]
    if millis is None:
        raise _NotFast
    force_setattr(event, "occurred_at_ms", millis)
    for name, is_time in _CONVERSIONS[type(event)]:
        value = getattr(event, name)
        if value is None:
            continue
        if is_time:
            value = parse_rfc3339_ms(value)
            if value is None:
                raise _NotFast
        else:
            value = _cents(value)
        force_setattr(event, name, value)
    return event


def decode_fast(kind: str, value: bytes) -> ev.Event | None:
    """The typed event of a record's value if the fast path takes it, else None (the
    validator then decides: ``decode_payload``). Never accepts what the schemas reject."""
    try:
        return _finish(_FAST_DECODERS[kind](value))
    except (msgspec.MsgspecError, RecursionError, _NotFast):
        return None


def decode_payload(kind: str, value: bytes) -> ev.Event:
    """The validator's path: orjson, then ``validate_payload`` (the exact error if any)."""
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"value: not valid UTF-8 JSON ({exc})") from None
    return validate_payload(kind, payload)


def validate_payload(kind: str, payload: Any) -> ev.Event:
    """Validate a decoded JSON value from the ``kind`` (``account``/``usage``) input topic.

    Returns the typed event; raises InvalidEvent naming the field and the problem. Accepts
    exactly what the topic's JSON Schema accepts. Unknown extra fields are ignored.
    """
    if not isinstance(payload, dict):
        raise InvalidEvent(
            "not_an_object", f"value: must be a JSON object, got {_describe(payload)}"
        )
    types = TOPIC_TYPES[kind]
    for name in ("event_id", "customer_id", "type", "occurred_at"):
        if name not in payload:
            raise InvalidEvent("missing_field", f"{name}: required field is missing")
    type_name = payload["type"]
    cls = types.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise InvalidEvent(
            "unknown_type",
            f"type: must be one of {', '.join(types)} on the {kind}-events topic; "
            f"got {_describe(type_name)}",
        )
    values: dict[str, Any] = {
        "event_id": _ID("event_id", payload["event_id"]),
        "customer_id": _ID("customer_id", payload["customer_id"]),
        "occurred_at_ms": _timestamp("occurred_at", payload["occurred_at"]),
    }
    if "source" in payload:
        values["source"] = _TEXT("source", payload["source"])
    for name, check, required, target in _PLANS[type_name]:
        if name in payload:
            values[target] = check(name, payload[name])
        elif required:
            raise InvalidEvent(
                "missing_field", f"{name}: required field of a {type_name} event is missing"
            )
    return cls(**values)


@dataclass(frozen=True, slots=True)
class Decoder:
    """Bytes of one input record -> typed event, under the record-level limits."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_future_seconds: int = DEFAULT_MAX_FUTURE_SECONDS

    def decode(self, kind: str, key: bytes | None, value: bytes | None, now_ms: int) -> ev.Event:
        """Decode a record of the ``kind`` input topic; raises InvalidEvent for bad input."""
        if value is None or len(value) == 0:
            raise InvalidEvent("empty_value", "value: the record has no value (empty or null)")
        if len(value) > self.max_message_bytes:
            raise InvalidEvent(
                "too_large",
                f"value: {len(value)} bytes exceeds the limit of {self.max_message_bytes} bytes",
            )
        if key is None:
            raise InvalidEvent(
                "missing_key", "key: the record has no key; it must be the customer_id"
            )
        event = decode_fast(kind, value)
        if event is None:
            event = decode_payload(kind, value)
        if key != event.customer_id.encode():
            raise InvalidEvent(
                "key_mismatch",
                f"key: {key[:64]!r} does not equal customer_id {event.customer_id[:64]!r}",
            )
        if event.occurred_at_ms > now_ms + self.max_future_seconds * MS_PER_SECOND:
            raise InvalidEvent(
                "future_timestamp",
                f"occurred_at: {format_ms(event.occurred_at_ms)} is more than "
                f"{self.max_future_seconds} s ahead of the processor's clock {format_ms(now_ms)}",
            )
        return event


def _json_text_bytes(text: str) -> int:
    """The bytes ``text`` takes inside a JSON string (escapes included, quotes not)."""
    return len(orjson.dumps(text)) - 2


def _bounded(raw: bytes, limit: int) -> tuple[str, bool, bool]:
    """``raw`` as dead-letter text: (text, whether base64, whether cut).

    UTF-8 becomes text, anything else base64; either is cut to the longest prefix of ``raw``
    whose JSON encoding takes at most ``limit`` bytes. Escapes make JSON text up to six times
    the UTF-8 bytes (a control character is ``\\u0001``), base64 is 4/3 of them.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if 4 * ((len(raw) + 2) // 3) <= limit:
            return base64.b64encode(raw).decode("ascii"), True, False
        kept = raw[: limit // 4 * 3]
        return base64.b64encode(kept).decode("ascii"), True, True
    # JSON text is never shorter than the UTF-8 bytes (orjson writes non-ASCII as is).
    if len(raw) <= limit and _json_text_bytes(text) <= limit:
        return text, False, False
    # Every character takes at least one byte: the longest prefix that fits has at most
    # ``limit`` characters. Binary search on it (only ever done for an oversized record).
    low, high = 0, min(len(text), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if _json_text_bytes(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low], False, True


def bounded_key(
    key: bytes | None, limit: int = DEFAULT_DEAD_LETTER_MAX_VALUE_BYTES
) -> bytes | None:
    """A dead letter's record key: the original key, cut to ``limit`` bytes when longer."""
    return key if key is None or len(key) <= limit else key[:limit]


def dead_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: InvalidEvent,
    received_at_ms: int,
    max_value_bytes: int = DEFAULT_DEAD_LETTER_MAX_VALUE_BYTES,
) -> bytes:
    """The contract's dead-letter record (JSON bytes) for a rejected input record.

    The copies of the key and the value are each cut to ``max_value_bytes`` of JSON text, so
    a dead letter always fits the producer's request limit whatever the record held; their
    original length (``*_bytes``) and SHA-256 (``*_sha256``) are kept, and ``*_truncated``
    says whether the copy is whole. The original is on the input topic at its position.
    """
    message = error.message
    if len(message) > DEAD_LETTER_MAX_ERROR_CHARS:
        message = message[: DEAD_LETTER_MAX_ERROR_CHARS - 3] + "..."
    record: dict[str, Any] = {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": None,
        "value": None,
        "error": message,
        "error_code": error.code,
        "received_at": format_ms(received_at_ms),
    }
    for name, raw in (("key", key), ("value", value)):
        if raw is None:
            continue
        record[name], encoded, truncated = _bounded(raw, max_value_bytes)
        if encoded:
            record[f"{name}_encoding"] = "base64"
        record[f"{name}_bytes"] = len(raw)
        record[f"{name}_sha256"] = hashlib.sha256(raw).hexdigest()
        record[f"{name}_truncated"] = truncated
    return orjson.dumps(record)
