"""The processor's clock: ``wall`` or ``event`` (per-partition stream time).

Windows, due times and ``decided_at`` all read it. In ``event`` mode, now on a partition is the
largest ``occurred_at`` seen on that partition number of either input topic; it never moves
back. In ``wall`` mode now is the wall clock, and it reaches each partition as tick records
(see ``streams/kafka/driver.py``) so that time moves in every partition's fetches, in order
with its records, even when no event comes.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.core.timeutil import wall_ms


class Clock:
    """Now per partition. ``observe`` feeds event time in; ``now`` reads the clock."""

    def __init__(self, mode: str, wall: Callable[[], int] = wall_ms) -> None:
        if mode not in ("wall", "event"):
            raise ValueError(f"clock must be wall or event, got {mode!r}")
        self.mode = mode
        self._wall = wall
        self._stream_time: dict[int, int] = {}

    @property
    def is_event_time(self) -> bool:
        return self.mode == "event"

    def stream_time(self, partition: int) -> int | None:
        """The largest event time seen on the partition (None before the first event)."""
        return self._stream_time.get(partition)

    def restore(self, partition: int, stream_time_ms: int) -> None:
        """Take a persisted stream time after a restart or rebalance (never moves back)."""
        if stream_time_ms > self._stream_time.get(partition, stream_time_ms - 1):
            self._stream_time[partition] = stream_time_ms

    def observe(self, partition: int, event_time_ms: int) -> bool:
        """Account an event's time; True when the partition's stream time moved forward."""
        if event_time_ms > self._stream_time.get(partition, event_time_ms - 1):
            self._stream_time[partition] = event_time_ms
            return True
        return False

    def forget(self, partition: int) -> None:
        """Drop a partition this worker no longer owns."""
        self._stream_time.pop(partition, None)

    def now(self, partition: int) -> int | None:
        """Now on ``partition``; None in event mode before any event was seen there."""
        if self.mode == "wall":
            return self._wall()
        return self._stream_time.get(partition)
