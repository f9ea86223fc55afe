"""Rate-limited log lines for things that happen once per record.

A producer that changes its format makes every record a dead letter: one WARNING each buried
the log (961 of 1,419 lines in 13 minutes). ``SummaryLog`` logs the first occurrence of an
interval in full (where and why), counts the rest by reason, and at the end of the interval
logs one summary line: "dead-lettered 961 records in the last 60 s: invalid_json 400, ...".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

DEFAULT_INTERVAL_SECONDS = 60.0


class SummaryLog:
    """Counts occurrences by reason; at most one detailed line and one summary per interval.

    ``what`` names the occurrences in the summary ("dead-lettered %d records"). The summary is
    logged by a timer on the running event loop when there is one, else by the next ``note``
    or ``flush`` after the interval.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._interval = interval
        self._level = level
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._started: float | None = None
        self._last_where = ""
        self._timer: asyncio.TimerHandle | None = None

    def note(self, reason: str, where: str, message: str, *args: object) -> None:
        """One occurrence of ``reason`` at ``where`` (``topic[partition]@offset``); ``message``
        and ``args`` are logged (lazily formatted) only for the first of an interval."""
        now = self._clock()
        if self._started is not None and now - self._started >= self._interval:
            self.flush()
        if self._started is None:
            self._started = now
            self._log.log(self._level, message, *args)
            self._schedule()
        self._counts[reason] += 1
        self._last_where = where

    def flush(self) -> None:
        """Log the summary of the interval so far (if more than its first line happened)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, started = self._counts, self._started
        self._counts, self._started = Counter(), None
        total = sum(counts.values())
        if started is None or total <= 1:
            return
        elapsed = max(self._clock() - started, 0.0)
        by_reason = ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
        self._log.log(
            self._level,
            "%s %d records in the last %.0f s: %s (the first logged in full, the last at %s)",
            self._what,
            total,
            elapsed,
            by_reason,
            self._last_where,
        )

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test, a script): the next note or flush logs the summary
        self._timer = loop.call_later(self._interval, self.flush)
