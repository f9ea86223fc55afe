"""RFC 3339 timestamps <-> epoch milliseconds, always timezone-aware UTC.

Event time travels through the system as integer epoch milliseconds: cheap to compare, store
and hash. The accepted text form is exactly what ``schemas/common.json#/definitions/timestamp``
accepts: RFC 3339 ``date-time`` with a ``Z`` or ``+hh:mm`` offset (no leap second), fractional
seconds of 1 to 9 digits, years 1900-2199.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, date, datetime, timedelta

# Kept in step with the schema's "pattern"; tests/unit/test_schemas.py proves they agree.
RFC3339_PATTERN = (
    r"^(19\d{2}|2[01]\d{2})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]"
    r"([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(\.\d{1,9})?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
_RFC3339 = re.compile(RFC3339_PATTERN, re.ASCII)

MS_PER_SECOND = 1_000
MS_PER_DAY = 86_400_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_rfc3339_ms_reference(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time with offset, or None if it is not one.

    The reference parser: the contract's pattern, then the calendar. ``parse_rfc3339_ms`` is
    the same function, faster on the common forms; tests/unit/test_timeutil.py proves they
    agree. Sub-millisecond digits are truncated (event time has millisecond resolution).
    """
    m = _RFC3339.fullmatch(text)  # not match: "$" would let a final line feed through
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, offset, _ = m.groups()
    try:
        # Days since the epoch: exact integer arithmetic (datetime.timestamp() goes through a
        # float), and no aware datetime per event (this runs for every input record).
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # day out of range for the month (e.g. 2026-02-30)
        return None
    seconds = days * 86_400 + int(hour) * 3_600 + int(minute) * 60 + int(second)
    if offset not in ("Z", "z"):
        east = int(offset[1:3]) * 3_600 + int(offset[4:6]) * 60
        seconds += east if offset[0] == "-" else -east  # local time = UTC + offset
    millis = int((frac[1:] + "00")[:3]) if frac else 0
    return seconds * MS_PER_SECOND + millis


# The fast path reads the common forms by table look-ups of fixed slices: a table holds only
# text that the pattern accepts at that place, so a look-up that hits has checked the slice
# (digits, ranges, separators) and converted it at once. Anything else goes to the reference.
# "YYYY-MM-DD" -> days since the epoch: filled by the reference parser with the dates it
# accepted (a real calendar day in the contract's years), emptied when full. The dates of a
# stream's events are few at any time, so this stays small and hits nearly always.
_DAYS: dict[str, int] = {}
_DAYS_LIMIT = 4_096
# "Thh:mm" (or "t") -> minutes of the day; "ss" -> seconds; "fff" -> milliseconds.
_MINUTES = {f"{t}{h:02d}:{m:02d}": h * 60 + m for t in "Tt" for h in range(24) for m in range(60)}
_SECONDS = {f"{s:02d}": s for s in range(60)}
_MILLIS = {f"{ms:03d}": ms for ms in range(1_000)}
# The UTC designators of the fast path; any other offset takes the reference parser.
_UTC_SUFFIXES = {"Z": 1, "z": 1, "+00:00": 6, "-00:00": 6}


def parse_rfc3339_ms(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time with offset, or None if it is not one.

    Exactly ``parse_rfc3339_ms_reference``; a UTC time with no fraction or with 3 or 6
    fractional digits (``2026-03-01T09:30:00.250Z``, Python's ``+00:00``) skips the pattern.
    Sub-millisecond digits are truncated (event time has millisecond resolution).
    """
    size = len(text)
    if 20 <= size <= 32:
        suffix = _UTC_SUFFIXES.get(text[-1]) or _UTC_SUFFIXES.get(text[-6:])
        days = _DAYS.get(text[:10])
        minute = _MINUTES.get(text[10:16])
        second = _SECONDS.get(text[17:19])
        if suffix and days is not None and minute is not None and second is not None:
            body = size - suffix  # the length without the offset
            if text[16] == ":":
                ms = ((days * 1_440 + minute) * 60 + second) * MS_PER_SECOND
                if body == 19:
                    return ms
                millis = _MILLIS.get(text[20:23])
                if millis is not None and text[19] == ".":
                    if body == 23:
                        return ms + millis
                    micros = text[23:26]
                    if body == 26 and micros.isascii() and micros.isdigit():
                        return ms + millis
    millis_or_none = parse_rfc3339_ms_reference(text)
    if millis_or_none is not None:
        if len(_DAYS) >= _DAYS_LIMIT:
            _DAYS.clear()
        _DAYS[text[:10]] = date(int(text[:4]), int(text[5:7]), int(text[8:10])).toordinal() - (
            _EPOCH_ORDINAL
        )
    return millis_or_none


def format_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC text with millisecond precision, e.g. ``2026-03-01T09:30:00.000Z``.

    The date is ``strftime``'s, remembered per day (instance names and decision records
    format a few days' times over and over); the time of day is arithmetic. The text is the
    one ``(epoch + timedelta(milliseconds=epoch_ms)).strftime(...)`` gives, in a third of its
    time (a unit test compares the two).
    """
    day, ms = divmod(epoch_ms, MS_PER_DAY)
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{_day_text(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}Z"


@functools.lru_cache(maxsize=4096)
def _day_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def wall_ms() -> int:
    """The wall clock in epoch milliseconds (``time.time``: the same clock as
    ``datetime.now(UTC).timestamp()``, without building a datetime per input record)."""
    return int(time.time() * MS_PER_SECOND)
