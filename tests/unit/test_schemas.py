"""The wire contract as JSON Schema (``schemas/``), its examples, and the decoder.

The schemas are what producers and consumers outside the project read; ``streams/core/ingest.py``
is what the processor runs. These tests prove that the schemas are valid draft-07, that every
example means what it says, and that the decoder accepts exactly what the input-event schemas
accept: on the examples, on events generated from the schemas, and on mutations of them.
"""

from __future__ import annotations

import calendar
import json
import math
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning
from hypothesis_jsonschema import from_schema
from jsonschema import Draft7Validator, ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT7

from streams.core import decisions, ingest
from streams.core import events as ev
from streams.core.catalogue import builtin_registry
from streams.core.errors import InvalidEvent
from streams.core.timeutil import RFC3339_PATTERN

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
EXAMPLE_DIR = SCHEMA_DIR / "examples"
MESSAGE_SCHEMAS = (
    "account_event",
    "usage_event",
    "contact_decision",
    "dead_letter",
    "decision_outcome",
)
# Input-event schema -> the topic kind streams.core.ingest.validate_payload takes.
EVENT_KINDS = {"account_event": "account", "usage_event": "usage"}
TOPIC_TYPES = {"account_event": ev.ACCOUNT_EVENT_TYPES, "usage_event": ev.USAGE_EVENT_TYPES}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.json"))
DOCS: dict[str, dict[str, Any]] = {path.stem: _load(path) for path in SCHEMA_FILES}
REGISTRY: Registry = Registry().with_resources(
    (doc["$id"], DRAFT7.create_resource(doc)) for doc in DOCS.values()
)
COMMON = DOCS["common"]["definitions"]


def validator(name: str) -> Draft7Validator:
    return Draft7Validator(
        DOCS[name], registry=REGISTRY, format_checker=Draft7Validator.FORMAT_CHECKER
    )


VALIDATORS = {name: validator(name) for name in MESSAGE_SCHEMAS}


def schema_accepts(name: str, message: Any) -> bool:
    return VALIDATORS[name].is_valid(message)


def decoder_accepts(name: str, message: Any) -> bool:
    try:
        ingest.validate_payload(EVENT_KINDS[name], message)
    except InvalidEvent:
        return False
    return True


def _examples(name: str, verdict: str) -> list[Path]:
    return sorted((EXAMPLE_DIR / name / verdict).glob("*.json"))


def _example_params(names: tuple[str, ...], verdict: str) -> list[Any]:
    return [
        pytest.param(name, path, id=f"{name}/{path.stem}")
        for name in names
        for path in _examples(name, verdict)
    ]


def _all_errors(errors: Iterator[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        yield error
        yield from _all_errors(iter(error.context))


def _dotted(error: ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path)


# --- the schema files -------------------------------------------------------------------


def test_every_message_schema_and_its_examples_exist() -> None:
    assert set(DOCS) == {*MESSAGE_SCHEMAS, "common"}
    for name in MESSAGE_SCHEMAS:
        assert _examples(name, "valid"), name
        assert _examples(name, "invalid"), name


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_valid_draft7(path: Path) -> None:
    doc = _load(path)
    Draft7Validator.check_schema(doc)
    assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert doc["$id"] == f"https://lifecycle-triggers.dev/schemas/{path.name}"


def test_format_checker_checks_date_time() -> None:
    # Without rfc3339-validator installed, "format" would silently check nothing.
    assert "date-time" in Draft7Validator.FORMAT_CHECKER.checkers


@pytest.mark.parametrize("name", MESSAGE_SCHEMAS)
def test_every_ref_resolves(name: str) -> None:
    resolver = REGISTRY.resolver(base_uri=DOCS[name]["$id"])

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(DOCS[name]):
        assert resolver.lookup(ref).contents is not None, ref


# --- the schemas and the code cannot drift apart --------------------------------------


def test_patterns_equal_the_decoders() -> None:
    assert COMMON["timestamp"]["pattern"] == RFC3339_PATTERN
    assert COMMON["timezone"]["pattern"] == ingest.TIMEZONE_PATTERN


def test_limits_equal_the_decoders() -> None:
    assert COMMON["id"]["maxLength"] == ingest.ID_MAX_LENGTH
    assert COMMON["text"]["maxLength"] == ingest.TEXT_MAX_LENGTH
    assert COMMON["timezone"]["maxLength"] == ingest.TIMEZONE_MAX_LENGTH
    limit = ingest.MONEY_LIMIT
    assert COMMON["amount"]["exclusiveMinimum"] == 0
    assert COMMON["amount"]["maximum"] == limit
    assert (COMMON["signed_money"]["minimum"], COMMON["signed_money"]["maximum"]) == (
        -limit,
        limit,
    )
    assert (COMMON["non_negative_money"]["minimum"], COMMON["non_negative_money"]["maximum"]) == (
        0,
        limit,
    )


def test_enums_equal_the_decoders() -> None:
    assert COMMON["account_type"]["enum"] == list(ev.ACCOUNT_TYPES)
    assert COMMON["direction"]["enum"] == list(ev.DIRECTIONS)
    assert COMMON["rail"]["enum"] == list(ev.RAILS)
    assert COMMON["contract_status"]["enum"] == list(ev.CONTRACT_STATUSES)
    assert COMMON["sentiment"]["enum"] == list(ev.SENTIMENTS)
    assert COMMON["channel"]["enum"] == list(ev.CHANNELS)
    assert COMMON["consent_channel"]["enum"] == list(ev.CONSENT_CHANNELS)
    assert COMMON["consent_status"]["enum"] == list(ev.CONSENT_STATUSES)
    assert COMMON["engagement_action"]["enum"] == list(ev.ENGAGEMENT_ACTIONS)


def test_decision_enums_equal_the_code() -> None:
    properties = DOCS["contact_decision"]["properties"]
    assert properties["trigger"]["enum"] == list(builtin_registry().names)
    assert properties["reasons"]["items"]["enum"] == list(decisions.REASON_CODES)
    outcome = DOCS["decision_outcome"]["properties"]
    assert outcome["trigger"]["enum"] == list(builtin_registry().names)
    assert outcome["channel"] == properties["channel"]
    assert properties["outcome"]["enum"] == list(decisions.OUTCOMES)
    assert decisions.SCHEMA_VERSION >= properties["schema_version"]["minimum"]


def _type_blocks(name: str) -> dict[str, dict[str, Any]]:
    """Event type -> the ``then`` of its ``if type == X`` block."""
    blocks = {}
    for block in DOCS[name]["allOf"]:
        assert block["if"]["required"] == ["type"]
        blocks[block["if"]["properties"]["type"]["const"]] = block["then"]
    return blocks


@pytest.mark.parametrize("name", EVENT_KINDS)
def test_event_types_and_fields_equal_the_decoders(name: str) -> None:
    doc = DOCS[name]
    assert doc["properties"]["type"]["enum"] == list(TOPIC_TYPES[name])
    assert doc["required"] == ["event_id", "customer_id", "type", "occurred_at"]
    assert doc["additionalProperties"] is True
    blocks = _type_blocks(name)
    assert list(blocks) == list(TOPIC_TYPES[name])
    for type_name, then in blocks.items():
        specs = ingest.FIELDS[type_name]
        assert set(then["properties"]) == {spec.name for spec in specs}, type_name
        assert set(then.get("required", [])) == {s.name for s in specs if s.required}, type_name


# --- examples ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "path"), _example_params(MESSAGE_SCHEMAS, "valid"))
def test_valid_example_passes(name: str, path: Path) -> None:
    errors = [f"{_dotted(e)}: {e.message}" for e in VALIDATORS[name].iter_errors(_load(path))]
    assert errors == []


@pytest.mark.parametrize(("name", "path"), _example_params(MESSAGE_SCHEMAS, "invalid"))
def test_invalid_example_fails_for_the_stated_reason(name: str, path: Path) -> None:
    example = _load(path)
    assert set(example) == {"reason", "message"}
    reason = example["reason"]
    errors = list(_all_errors(VALIDATORS[name].iter_errors(example["message"])))
    assert errors, "the example is valid"
    found = {(_dotted(error), error.validator) for error in errors}
    assert (reason["path"], reason["keyword"]) in found


@pytest.mark.parametrize("name", EVENT_KINDS)
def test_valid_examples_cover_every_event_type(name: str) -> None:
    types = {_load(path)["type"] for path in _examples(name, "valid")}
    assert types == set(TOPIC_TYPES[name])


@pytest.mark.parametrize(("name", "path"), _example_params(tuple(EVENT_KINDS), "valid"))
def test_decoder_accepts_valid_example(name: str, path: Path) -> None:
    message = _load(path)
    event = ingest.validate_payload(EVENT_KINDS[name], message)
    assert event.type == message["type"]
    # A JSON text of the example goes through the whole record decoder too.
    value = orjson.dumps(message)
    assert (
        ingest.Decoder().decode(
            EVENT_KINDS[name], message["customer_id"].encode(), value, now_ms=event.occurred_at_ms
        )
        == event
    )


@pytest.mark.parametrize(("name", "path"), _example_params(tuple(EVENT_KINDS), "invalid"))
def test_decoder_rejects_invalid_example_naming_the_field(name: str, path: Path) -> None:
    example = _load(path)
    message, reason = example["message"], example["reason"]
    with pytest.raises(InvalidEvent) as caught:
        ingest.validate_payload(EVENT_KINDS[name], message)
    text = caught.value.message
    if reason["path"]:
        assert text.startswith(reason["path"].split(".")[0] + ":"), text
    elif reason["keyword"] == "required":
        missing = [
            field
            for error in VALIDATORS[name].iter_errors(message)
            if error.validator == "required"
            for field in error.validator_value
            if field not in message
        ]
        assert any(text.startswith(f"{field}:") for field in missing), text
    else:
        assert text.startswith("value:"), text


# --- hypothesis: generated events -------------------------------------------------------


def _inline(node: Any, resolver: Any) -> Any:
    """``node`` with every ``$ref`` replaced by its target (the schemas are not recursive)."""
    if isinstance(node, dict):
        if "$ref" in node:
            resolved = resolver.lookup(node["$ref"])
            return _inline(resolved.contents, resolved.resolver)
        return {k: _inline(v, resolver) for k, v in node.items() if k not in ("$id", "$schema")}
    if isinstance(node, list):
        return [_inline(v, resolver) for v in node]
    return node


INLINED = {
    name: _inline(DOCS[name], REGISTRY.resolver(base_uri=DOCS[name]["$id"]))
    for name in MESSAGE_SCHEMAS
}


def type_schema(name: str, type_name: str) -> dict[str, Any]:
    """The ``type_name`` events of schema ``name``, as one flat object schema."""
    doc = INLINED[name]
    then = _type_blocks(name)[type_name]
    fields = _inline(then, REGISTRY.resolver(base_uri=DOCS[name]["$id"]))
    return {
        "type": "object",
        "required": [*doc["required"], *fields.get("required", [])],
        "properties": {
            **doc["properties"],
            **fields["properties"],
            "type": {"const": type_name},
        },
    }


@st.composite
def rfc3339_texts(draw: st.DrawFn, any_day: bool = False) -> str:
    """Timestamps the contract accepts; with ``any_day``, also days 29-31 of any month."""
    year, month = draw(st.integers(1900, 2199)), draw(st.integers(1, 12))
    last_day = 31 if any_day else calendar.monthrange(year, month)[1]
    date = f"{year:04d}-{month:02d}-{draw(st.integers(1, last_day)):02d}"
    time = (
        f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:"
        f"{draw(st.integers(0, 59)):02d}"
    )
    fraction = draw(st.none() | st.from_regex(r"\.[0-9]{1,9}", fullmatch=True))
    offset = draw(
        st.sampled_from(["Z", "z"])
        | st.builds(
            "{}{:02d}:{:02d}".format,
            st.sampled_from("+-"),
            st.integers(0, 23),
            st.integers(0, 59),
        )
    )
    return f"{date}{draw(st.sampled_from('Tt'))}{time}{fraction or ''}{offset}"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _value_strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    with warnings.catch_warnings():
        # Overriding the standard "date-time" strategy: it draws years 1-9999, 6 fraction
        # digits at most, and never "t" or "z".
        warnings.simplefilter("ignore", HypothesisWarning)
        return from_schema(schema, custom_formats={"date-time": rfc3339_texts()})


def _event_strategy(name: str, type_name: str) -> st.SearchStrategy[Any]:
    """Events of one type: each field drawn by hypothesis-jsonschema from its schema.

    The object itself is assembled here: hypothesis-jsonschema 0.23's object strategy calls a
    Hypothesis internal (``many.more()``) that current Hypothesis no longer has.
    """
    schema = type_schema(name, type_name)
    required = set(schema["required"])
    fields = {key: _value_strategy(value) for key, value in schema["properties"].items()}
    known = st.fixed_dictionaries(
        {key: fields[key] for key in schema["required"]},
        optional={key: s for key, s in fields.items() if key not in required},
    )
    extra = st.dictionaries(
        st.text(max_size=12).filter(lambda key: key not in fields), JSON_VALUES, max_size=2
    )
    return st.builds(lambda k, x: {**x, **k}, known, extra)


EVENT_TYPES = [(name, type_name) for name in EVENT_KINDS for type_name in TOPIC_TYPES[name]]
EVENT_STRATEGIES = {key: _event_strategy(*key) for key in EVENT_TYPES}
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _epoch_ms(text: str) -> int:
    """An independent reading of a valid timestamp: datetime.fromisoformat, truncated to ms."""
    moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def expected_attributes(name: str, message: dict[str, Any]) -> dict[str, Any]:
    """What the typed event must hold, read from the schema: money in cents, times in ms."""
    expected: dict[str, Any] = {
        "event_id": message["event_id"],
        "customer_id": message["customer_id"],
        "occurred_at_ms": _epoch_ms(message["occurred_at"]),
        "source": message.get("source"),
    }
    for field, schema in type_schema(name, message["type"])["properties"].items():
        if field in ("event_id", "customer_id", "type", "occurred_at", "source"):
            continue
        value = message.get(field)
        if schema.get("format") == "date-time":
            expected[f"{field}_ms"] = None if value is None else _epoch_ms(value)
        elif schema.get("type") == "number":
            expected[f"{field}_cents"] = None if value is None else round(value * 100)
        else:
            expected[field] = value
    return expected


@pytest.mark.parametrize(("name", "type_name"), EVENT_TYPES)
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_generated_event_is_accepted_and_typed(
    name: str, type_name: str, data: st.DataObject
) -> None:
    message = data.draw(EVENT_STRATEGIES[(name, type_name)])
    assert schema_accepts(name, message)
    event = ingest.validate_payload(EVENT_KINDS[name], message)
    assert type(event) is TOPIC_TYPES[name][type_name]
    for attribute, value in expected_attributes(name, message).items():
        assert getattr(event, attribute) == value, attribute
    # The fast path gives the same event, or hands the record over where it holds a field
    # the contract does not name for the type (it never decides on a value it has not read).
    fast = fast_path_event(name, message)
    if fast is not None:
        assert fast == event and type(fast) is type(event)
    else:
        known = {*DOCS[name]["properties"], *type_schema(name, type_name)["properties"]}
        assert set(message) - known, message


# --- hypothesis: mutations --------------------------------------------------------------

LIMIT = ingest.MONEY_LIMIT
BOUNDARY_NUMBERS = [
    0,
    0.0,
    -0.0,
    1,
    -1,
    0.001,
    0.005,
    0.01,
    -0.01,
    5e-324,
    -5e-324,
    LIMIT,
    LIMIT + 1,
    LIMIT - 1,
    -LIMIT,
    -LIMIT - 1,
    -LIMIT + 1,
    float(LIMIT),
    math.nextafter(float(LIMIT), math.inf),
    math.nextafter(float(LIMIT), 0),
    -float(LIMIT),
    math.nextafter(-float(LIMIT), -math.inf),
    math.nextafter(-float(LIMIT), 0),
    1e308,
    -1e308,
    10**30,
]
# Strings at the length limits, in 1-, 2- and 4-byte UTF-8 characters (length counts code
# points in both the schema and the decoder); letters only, so timezone names match too.
BOUNDARY_STRINGS = [
    char * n for n in (0, 1, 2, 63, 64, 65, 127, 128, 129) for char in ("a", "é", "\U0001f4b3")
] + ["Etc/" + "b" * 59, "Etc/" + "b" * 60, "Etc/" + "b" * 61]
BOUNDARY_TIMESTAMPS = [
    "2026-03-01T09:30:00Z",
    "2026-03-01t09:30:00.123456789z",
    "2026-03-01T09:30:00.1234567890Z",
    "2026-03-01T09:30:00Z\n",
    "2026-03-01T09:30:00Z ",
    " 2026-03-01T09:30:00Z",
    "2026-03-01T09:30:00",
    "2026-03-01",
    "٢٠٢٦-03-01T09:30:00Z",
    "2026-02-29T00:00:00Z",
    "2028-02-29T00:00:00Z",
    "2100-02-29T00:00:00Z",
    "2000-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-03-01T09:30:60Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T09:30:00+24:00",
    "2026-03-01T09:30:00+23:59",
    "2026-03-01T09:30:00-00:00",
    "2026-03-01T09:30:00+0100",
    "2026-03-01T09:30:00.Z",
    "2026-03-01T09:30:00,5Z",
    "2026-03-01T09:30Z",
    "20260301T093000Z",
    "1899-12-31T23:59:59Z",
    "1900-01-01T00:00:00Z",
    "1900-01-01T00:00:00+23:59",
    "2199-12-31T23:59:59.999999999-23:59",
    "2200-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
]
ENUM_WORDS = sorted(
    {
        value
        for definition in COMMON.values()
        for value in definition.get("enum", [])
        if isinstance(value, str)
    }
    | set(ev.ACCOUNT_EVENT_TYPES)
    | set(ev.USAGE_EVENT_TYPES)
)
BOUNDARY_OTHERS = [None, True, False, [], {}, ["a"], {"a": 1}, "UTC", "Europe/Berlin\n"]
BOUNDARY_VALUES = [
    *BOUNDARY_NUMBERS,
    *BOUNDARY_STRINGS,
    *BOUNDARY_TIMESTAMPS,
    *ENUM_WORDS,
    *(word.upper() for word in ENUM_WORDS),
    *BOUNDARY_OTHERS,
]

NUMBERS = st.one_of(
    st.sampled_from(BOUNDARY_NUMBERS),
    st.integers(-2 * LIMIT, 2 * LIMIT),
    st.floats(-2e12, 2e12, allow_nan=False),
    st.floats(-1, 1, allow_nan=False),
)
AROUND_LIMITS = st.one_of(
    st.sampled_from(BOUNDARY_STRINGS),
    st.sampled_from([0, 1, 2, 63, 64, 65, 127, 128, 129]).flatmap(
        lambda n: st.text(min_size=n, max_size=n)
    ),
)
WORDS = st.sampled_from(ENUM_WORDS).flatmap(
    lambda w: st.sampled_from([w, w.upper(), w.capitalize(), f" {w}", f"{w}\n", w[:-1]])
)


@st.composite
def edited(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:
    """A text with a few characters inserted, deleted, replaced, or text appended."""
    text = draw(texts)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        piece = draw(
            st.text(min_size=1, max_size=3)
            | st.sampled_from(["0", "9", "3", "-", ":", "+", ".", "Z", "T", " ", "\n", "٣"])
        )
        match draw(st.sampled_from(["insert", "delete", "replace", "append"])):
            case "insert":
                text = text[:at] + piece + text[at:]
            case "delete":
                text = text[:at] + text[at + 1 :]
            case "replace":
                text = text[:at] + piece + text[at + len(piece) :]
            case _:
                text += piece
    return text


SUFFIXES = st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", "\u2028"])
TIMESTAMPS = st.one_of(
    st.sampled_from(BOUNDARY_TIMESTAMPS),
    rfc3339_texts(any_day=True),
    edited(rfc3339_texts()),
    st.builds(str.__add__, rfc3339_texts(), SUFFIXES),
    # Python-flavoured matches: Unicode digits for \d, a final line feed before "$".
    st.from_regex(RFC3339_PATTERN),
)
TIMEZONES = st.one_of(
    st.from_regex(ingest.TIMEZONE_PATTERN),
    st.builds(str.__add__, st.from_regex(ingest.TIMEZONE_PATTERN, fullmatch=True), SUFFIXES),
    st.from_regex(ingest.TIMEZONE_PATTERN, fullmatch=True).map(lambda s: (s * 64)[:64]),
    edited(st.sampled_from(["UTC", "Europe/Berlin", "Etc/GMT+5", "America/Indiana/Knox"])),
)
MUTATED_VALUES = st.one_of(JSON_VALUES, NUMBERS, AROUND_LIMITS, WORDS, TIMESTAMPS, TIMEZONES)


def _targeted_values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values near the edges of what a field's (inlined) schema accepts, or anything."""
    if schema.get("format") == "date-time":
        targeted = TIMESTAMPS
    elif "pattern" in schema:
        targeted = TIMEZONES | AROUND_LIMITS
    elif schema.get("type") == "number":
        targeted = NUMBERS
    elif schema.get("type") == "string":
        targeted = AROUND_LIMITS | WORDS
    else:
        targeted = WORDS
    return st.one_of(targeted, targeted, MUTATED_VALUES)


def _field_names(name: str) -> list[str]:
    """Every field any type of the topic knows, plus an unknown one."""
    names = set(DOCS[name]["properties"])
    for then in _type_blocks(name).values():
        names |= set(then["properties"])
    return sorted(names | {"not_in_the_contract"})


def _examples_of(name: str, type_name: str) -> list[dict[str, Any]]:
    examples = [_load(path) for path in _examples(name, "valid")]
    return [example for example in examples if example["type"] == type_name]


def _json_text(message: Any) -> bytes | None:
    """The message as a producer would send it (integers of any size, text as it is), or None
    for a value JSON cannot carry (NaN, infinity)."""
    try:
        text = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return None
    # A lone surrogate becomes the bytes a careless producer would write: invalid UTF-8.
    return text.encode("utf-8", "surrogatepass")


def fast_path_event(name: str, message: Any) -> ev.Event | None:
    """The decoder's fast path (msgspec) on the message's JSON text: the event, or None where
    it hands the record to the validator."""
    raw = _json_text(message)
    return None if raw is None else ingest.decode_fast(EVENT_KINDS[name], raw)


def _disagreement(name: str, message: Any) -> str | None:
    """Schema, validator and fast path on one message: None when they agree. The fast path
    may hand over what the schema accepts (the validator then accepts it), never the reverse,
    and what it accepts is the validator's event exactly."""
    in_schema, in_decoder = schema_accepts(name, message), decoder_accepts(name, message)
    fast = fast_path_event(name, message)
    if in_schema == in_decoder:
        if fast is None:
            return None
        if not in_schema:
            return f"the fast path accepts what the schema rejects: {message!r} -> {fast!r}"
        slow = ingest.validate_payload(EVENT_KINDS[name], message)
        return None if fast == slow else f"fast path {fast!r} != validator {slow!r}"
    errors = [f"{_dotted(e)}: {e.message}" for e in VALIDATORS[name].iter_errors(message)]
    return f"schema {in_schema}, decoder {in_decoder}: {message!r} {errors}"


@pytest.mark.parametrize(("name", "type_name"), EVENT_TYPES)
def test_schema_and_decoder_agree_at_the_boundaries(name: str, type_name: str) -> None:
    """Every field of the type, set to every boundary value (or removed): same verdict."""
    base = _examples_of(name, type_name)[0]
    disagreements = []
    for field in [*type_schema(name, type_name)["properties"], "not_in_the_contract"]:
        removed = {k: v for k, v in base.items() if k != field}
        candidates = [removed] + [{**base, field: value} for value in BOUNDARY_VALUES]
        disagreements += filter(None, (_disagreement(name, c) for c in candidates))
    assert disagreements == []


@pytest.mark.parametrize(("name", "type_name"), EVENT_TYPES)
@settings(SETTINGS, max_examples=100)
@given(data=st.data())
def test_schema_and_decoder_agree_on_mutations(
    name: str, type_name: str, data: st.DataObject
) -> None:
    message = dict(
        data.draw(
            st.sampled_from(_examples_of(name, type_name)) | EVENT_STRATEGIES[(name, type_name)],
            label="valid message",
        )
    )
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        own_fields = type_schema(name, type_name)["properties"]
        field = data.draw(
            st.sampled_from(sorted(own_fields)) | st.sampled_from(_field_names(name)),
            label="field",
        )
        if data.draw(st.integers(0, 9), label="delete?") == 0:
            message.pop(field, None)
        elif field in own_fields:
            message[field] = data.draw(_targeted_values(own_fields[field]), label="value")
        else:
            message[field] = data.draw(MUTATED_VALUES, label="value")
    assert _disagreement(name, message) is None


@pytest.mark.parametrize("name", EVENT_KINDS)
@settings(SETTINGS, max_examples=300)
@given(message=JSON_VALUES)
def test_schema_and_decoder_agree_on_any_json(name: str, message: Any) -> None:
    assert _disagreement(name, message) is None


# --- outputs ----------------------------------------------------------------------------


@settings(SETTINGS, max_examples=100)
@given(
    topic=st.sampled_from(["account-events", "usage-events"]),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    key=st.none() | st.binary(max_size=40) | st.text(max_size=40).map(str.encode),
    value=st.none() | st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    received_at_ms=st.integers(
        _epoch_ms("1970-01-01T00:00:00Z"), _epoch_ms("2199-12-31T23:59:59.999Z")
    ),
    # Small bounds too: cut copies (and their base64 groups) must match the schema as well.
    max_value_bytes=st.integers(1, 300),
)
def test_decoder_dead_letters_match_the_schema(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    received_at_ms: int,
    max_value_bytes: int,
) -> None:
    try:
        ingest.Decoder().decode(topic.split("-")[0], key, value, now_ms=received_at_ms)
    except InvalidEvent as exc:
        error = exc
    else:
        error = InvalidEvent("test", "value: not rejected, dead-lettered anyway for the test")
    record = orjson.loads(
        ingest.dead_letter(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            error=error,
            received_at_ms=received_at_ms,
            max_value_bytes=max_value_bytes,
        )
    )
    errors = [f"{_dotted(e)}: {e.message}" for e in VALIDATORS["dead_letter"].iter_errors(record)]
    assert errors == []


IDS = st.text(min_size=1, max_size=128)
TIMES_MS = st.integers(0, _epoch_ms("2199-12-31T23:59:59.999Z"))
CATEGORIES = DOCS["contact_decision"]["properties"]["category"]["enum"]


@st.composite
def decisions_made(draw: st.DrawFn) -> decisions.Decision:
    """Any decision the policy could make, as streams.core.decisions builds it."""
    outcome = draw(st.sampled_from(decisions.OUTCOMES))
    candidate = decisions.Candidate(
        customer_id=draw(IDS),
        trigger=draw(st.sampled_from(builtin_registry().names)),
        instance=draw(st.text(max_size=40)),
        action=draw(IDS),
        channel=draw(st.sampled_from(ev.CHANNELS)),
        category="marketing" if outcome == "holdout" else draw(st.sampled_from(CATEGORIES)),
        priority=draw(st.integers(-1000, 1000)),
        evidence=tuple(draw(st.lists(IDS, max_size=4))),
        triggered_at_ms=draw(TIMES_MS),
    )
    reasons = (
        draw(st.lists(st.sampled_from(decisions.REASON_CODES), min_size=1, max_size=3, unique=True))
        if outcome == "suppressed"
        else []
    )
    return decisions.Decision(
        candidate=candidate,
        outcome=outcome,
        reasons=tuple(reasons),
        decided_at_ms=draw(TIMES_MS),
        channel=draw(st.sampled_from(["", *ev.CHANNELS])),
        details={
            **draw(
                st.dictionaries(st.sampled_from(["channel_7d", "global_7d"]), st.integers(0, 10**6))
            ),
            # The ledger's mark of the global control group (published only on holdouts).
            **draw(st.sampled_from([{}, {"global_control": True}])),
        },
    )


@settings(SETTINGS, max_examples=100)
@given(decision=decisions_made())
def test_published_decisions_match_the_schema(decision: decisions.Decision) -> None:
    record = orjson.loads(orjson.dumps(decision.to_record()))
    errors = [
        f"{_dotted(e)}: {e.message}" for e in VALIDATORS["contact_decision"].iter_errors(record)
    ]
    assert errors == []
