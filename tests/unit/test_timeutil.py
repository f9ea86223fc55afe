"""RFC 3339 text -> epoch milliseconds: exact values, offsets, calendar edges.

Given / When / Then, with a comment on why each expectation holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core import timeutil
from streams.core.timeutil import (
    RFC3339_PATTERN,
    format_ms,
    parse_rfc3339_ms,
    parse_rfc3339_ms_reference,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST = int((datetime(1900, 1, 1, tzinfo=UTC) - EPOCH).total_seconds())
LAST = int((datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC) - EPOCH).total_seconds())


@given(
    # The wall-clock fields of the text: drawn as a UTC instant, then read with the offset.
    when=st.builds(
        lambda s, us: EPOCH + timedelta(seconds=s, microseconds=us),
        st.integers(min_value=FIRST, max_value=LAST),
        st.integers(min_value=0, max_value=999_999),
    ),
    offset_minutes=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    digits=st.integers(min_value=0, max_value=9),
    zulu=st.sampled_from(["Z", "z", None]),
)
def test_value_equals_aware_datetime_arithmetic(
    when: datetime, offset_minutes: int, digits: int, zulu: str | None
) -> None:
    # Given a local date-time with an offset (or Z) and 0 to 9 fractional digits
    if zulu is not None:
        offset_minutes, suffix = 0, zulu
    else:
        sign = "-" if offset_minutes < 0 else "+"
        suffix = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    fraction = f"{when.microsecond:06d}000"[:digits]
    text = when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "") + suffix
    # When it is parsed
    millis = parse_rfc3339_ms(text)
    # Then it is the exact distance from the epoch of that instant in UTC, sub-milliseconds
    # truncated (the offset is subtracted: local time = UTC + offset)
    aware = when.replace(microsecond=0, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    delta = aware - EPOCH
    expected = (delta.days * 86_400 + delta.seconds) * 1000 + int((fraction + "000")[:3])
    assert millis == expected


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("2000-02-29T00:00:00Z", True),  # divisible by 400: a leap year
        ("2024-02-29T00:00:00Z", True),
        ("1900-02-29T00:00:00Z", False),  # divisible by 100, not 400: not a leap year
        ("2100-02-29T00:00:00Z", False),
        ("2023-02-29T00:00:00Z", False),
        ("2026-04-31T00:00:00Z", False),  # April has 30 days
        ("2026-12-31T23:59:59.999+23:59", True),
    ],
)
def test_day_must_exist_in_its_month(text: str, valid: bool) -> None:
    # The pattern allows day 31 in every month; the calendar decides
    assert (parse_rfc3339_ms(text) is not None) == valid


def test_before_the_epoch_and_round_trip() -> None:
    # Given an instant before 1970 written with a negative offset
    millis = parse_rfc3339_ms("1969-12-31T19:00:00.250-05:00")
    # Then it is 250 ms after the epoch (19:00 at -05:00 is midnight UTC), and format_ms
    # writes it back in UTC
    assert millis == 250
    assert format_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert parse_rfc3339_ms(format_ms(-1)) == -1


# --- the fast path equals the reference parser -------------------------------------------

# Characters a mutation puts in: the separators, digits, and the look-alikes that int() or
# str.isdigit() would take for digits (fullwidth, Arabic-Indic, superscript).
MUTATION_CHARS = "0123456789TtZz :.+-_\n\u0663\uff15\u00b2"
UTC_FORMS = st.builds(
    lambda when, fraction, suffix: when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + suffix,
    st.builds(lambda s: EPOCH + timedelta(seconds=s), st.integers(min_value=FIRST, max_value=LAST)),
    st.sampled_from(["", ".250", ".999", ".000123", ".999999", ".5", ".1234567"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00"]),
)


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, str]:
    """A valid UTC timestamp (the fast path's forms and neighbours) and a copy with one to
    three characters replaced, inserted or removed."""
    valid = draw(UTC_FORMS)
    text = valid
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(MUTATION_CHARS))
        edit = draw(st.sampled_from(["replace", "insert", "remove"]))
        if edit == "insert" or at == len(text):
            text = text[:at] + char + text[at:]
        elif edit == "replace":
            text = text[:at] + char + text[at + 1 :]
        else:
            text = text[:at] + text[at + 1 :]
    return valid, text


@given(pair=near_valid())
def test_fast_path_equals_the_reference_on_near_valid_text(pair: tuple[str, str]) -> None:
    # Given a valid timestamp, parsed first so that its date is in the fast path's table
    valid, mutated = pair
    assert parse_rfc3339_ms(valid) == parse_rfc3339_ms_reference(valid) is not None
    # When a mutation of it is parsed (the date table warm or not)
    # Then the value, or the rejection, is exactly the reference parser's
    assert parse_rfc3339_ms(mutated) == parse_rfc3339_ms_reference(mutated), mutated


@given(text=st.from_regex(RFC3339_PATTERN, fullmatch=True))
def test_fast_path_equals_the_reference_on_the_contracts_pattern(text: str) -> None:
    # Any text the pattern matches (valid days or not): twice, cold and with its date cached
    expected = parse_rfc3339_ms_reference(text)
    assert parse_rfc3339_ms(text) == expected
    assert parse_rfc3339_ms(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01 09:30:00Z",  # space separator
        "2026-03-01 09:30:00.250Z",
        "2026-03-01T09:30:00",  # no offset
        "2026-03-01T09:30:00.250",
        "2026-03-01T09:30:00.250000",
        "2026-03-01T09:30:00+0000",  # offset without a colon
        "2026-03-01T09:30:60Z",  # leap second
        "2026-03-01T24:00:00Z",
        "2026-03-01T09:60:00Z",
        "2026-03-01T09:30:00.Z",
        "2026-03-01T09:30:00.1234567890Z",  # ten fractional digits
        "2026-03-01T09:30:00Z\n",
        "2026-03-01T09:30:00.250+00:00\n",
        "2026-03-01T09:30:00.\uff12\uff15\uff10Z",  # fullwidth digits
        "2026-03-01T09:30:00.250\u00b2\u00b2\u00b2Z",  # superscripts pass str.isdigit()
        "2026-03-01T09:30:00.250\u0663\u0663\u0663Z",  # Arabic-Indic digits pass int()
        "2026-03-01T09:30:0\u0663Z",
        "1899-12-31T23:59:59Z",  # out of the contract's years
        "2200-01-01T00:00:00Z",
    ],
)
def test_fast_path_rejects_what_the_contract_rejects(text: str) -> None:
    # Given the date already in the fast path's table (a valid time of the same day parsed)
    same_day = text[:10] + "T00:00:00Z"
    assert parse_rfc3339_ms(same_day) == parse_rfc3339_ms_reference(same_day)
    # When the invalid text is parsed, then it is rejected like the reference does
    assert parse_rfc3339_ms_reference(text) is None
    assert parse_rfc3339_ms(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T09:30:00Z",
        "2026-03-01t09:30:00.250z",
        "2026-03-01T09:30:00.250123+00:00",
        "2026-03-01T09:30:00-00:00",
    ],
)
def test_the_common_forms_skip_the_pattern_once_their_date_is_known(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the day seen once (the reference parser fills the date table)
    expected = parse_rfc3339_ms_reference(text)
    assert parse_rfc3339_ms(text[:10] + "T12:00:00Z") is not None

    # When the reference parser is out of reach
    def unreachable(text: str) -> int | None:
        raise AssertionError(f"the reference parser ran for {text!r}")

    monkeypatch.setattr(timeutil, "parse_rfc3339_ms_reference", unreachable)
    # Then a UTC time of that day with no fraction, or 3 or 6 digits, is read by the tables
    assert parse_rfc3339_ms(text) == expected


def test_the_date_table_stays_bounded() -> None:
    # Given more distinct valid dates than the table holds
    for day in range(timeutil._DAYS_LIMIT + 10):
        parse_rfc3339_ms(format_ms(day * 86_400_000))
    # Then it was emptied on the way instead of growing with the stream's history
    assert len(timeutil._DAYS) <= timeutil._DAYS_LIMIT


def _format_ms_by_strftime(epoch_ms: int) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@given(st.integers(min_value=-62_000_000_000_000, max_value=253_402_300_799_999))
def test_format_ms_is_strftimes_text(epoch_ms: int) -> None:
    """Years 0001 to 9999, before and after 1970, every millisecond of a day."""
    assert format_ms(epoch_ms) == _format_ms_by_strftime(epoch_ms)


def test_format_ms_at_the_edges_of_a_day() -> None:
    for epoch_ms in (0, -1, 86_399_999, 86_400_000, -86_400_000, 1_764_000_000_123):
        assert format_ms(epoch_ms) == _format_ms_by_strftime(epoch_ms)
