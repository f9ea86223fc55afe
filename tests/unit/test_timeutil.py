"""RFC 3339 text -> epoch milliseconds: exact values, offsets, calendar edges.

Given / When / Then, with a comment on why each expectation holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.timeutil import format_ms, parse_rfc3339_ms

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
