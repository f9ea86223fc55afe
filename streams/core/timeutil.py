"""RFC 3339 timestamps <-> epoch milliseconds, always timezone-aware UTC.

Event time travels through the system as integer epoch milliseconds: cheap to compare, store
and hash. The accepted text form is exactly what ``schemas/common.json#/definitions/timestamp``
accepts: RFC 3339 ``date-time`` with a ``Z`` or ``+hh:mm`` offset (no leap second), fractional
seconds of 1 to 9 digits, years 1900-2199.
"""

from __future__ import annotations

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


def parse_rfc3339_ms(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date-time with offset, or None if it is not one.

    Sub-millisecond digits are truncated (event time has millisecond resolution).
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


def format_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC text with millisecond precision, e.g. ``2026-03-01T09:30:00.000Z``."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def wall_ms() -> int:
    """The wall clock in epoch milliseconds (``time.time``: the same clock as
    ``datetime.now(UTC).timestamp()``, without building a datetime per input record)."""
    return int(time.time() * MS_PER_SECOND)
