"""Which input log a partition's state belongs to, and what happens when that log is replaced.

A customer record remembers the highest input offset it has applied per topic kind, so that a
replay after a crash or a rebalance never applies an event twice. That mark is only meaningful
against the log it was taken from. A worker that keeps its state (a RocksDB volume, a restored
changelog) and meets a new log (a fresh broker, recreated topics) would otherwise take every
new event at or below an old mark for a replay and skip it without a word.

So each input partition has ``LogMarks``, kept in the stream-time table (it moves with the
partition, through its changelog): the cluster the log lives in, the highest offset applied per
topic kind, and a *base* per kind that is added to the current log's offsets before they are
compared with or written into a customer record. At assignment the marks are checked against
the broker (``LogMarks.replaced``): a different cluster id, or a highest applied offset at or
beyond the partition's end, means the log was replaced. The reset (``LogMarks.reset``) moves
the base above every offset applied from the old log, so each event of the new log is applied,
while the customer state (which describes the customer, not the log) is kept. A deliberate
reprocessing of the same log (the committed offset moved back) is no reset: its offsets stay
below the end, and what was applied is skipped as before.

The partition's marks are written after its customer records (``streams/kafka/processor.py``), so
after a crash a record can carry a mark up to one batch above the partition's; the reset
therefore leaves a gap (``RESET_GAP``) far larger than any batch above the highest mark.

The pure part (``LogMarks``, ``ChangelogVerdict``) is here; the worker's shell reads end offsets
and the cluster id from the broker (``streams/kafka/driver.py``,
``streams/kafka/changelog_repair.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import orjson

REPARTITION = "repartition"  # the ends key of the internal repartition topic
LANE_PREFIX = "r:"  # marks of records forwarded through it, one per source lane
# Offsets of a log after a reset start this far above the highest offset applied before it.
RESET_GAP = 1 << 32
ON_REPLACED = ("reset", "fail")


def marks_key(partition: int) -> bytes:
    """The key of a partition's marks in the stream-time table (whose other keys are plain
    partition numbers)."""
    return b"log:%d" % partition


@dataclass
class LogMarks:
    """One input partition's log identity: the cluster, and per topic kind the base added to
    the current log's offsets and the highest offset applied (base included)."""

    cluster: str | None = None
    base: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    resets: int = 0

    def replaced(self, cluster: str | None, ends: Mapping[str, int]) -> dict[str, str]:
        """Which topic kinds' logs are not the ones this state was built from, with why:
        ``cluster`` (another cluster id) or ``offsets`` (an offset at or past the end of the
        partition, ``ends``: the next offset to be written, per kind, was applied)."""
        found: dict[str, str] = {}
        other_cluster = self.cluster is not None and cluster is not None and cluster != self.cluster
        for kind, applied in sorted(self.applied.items()):
            if other_cluster:
                found[kind] = "cluster"
                continue
            # The lanes of the repartition topic (``r:<lane>``) share its end.
            end = ends.get(REPARTITION if kind.startswith(LANE_PREFIX) else kind)
            if end is not None and applied - self.base.get(kind, 0) >= end:
                found[kind] = "offsets"
        return found

    def reset(self, kinds: Mapping[str, str] | tuple[str, ...], cluster: str | None) -> None:
        """Count the current logs of ``kinds`` from above every offset applied so far."""
        for kind in kinds:
            applied = self.applied.get(kind, self.base.get(kind, 0) - 1)
            self.base[kind] = applied + 1 + RESET_GAP
            self.applied[kind] = self.base[kind] - 1
        self.resets += 1
        if cluster is not None:
            self.cluster = cluster

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "cluster": self.cluster,
                "base": self.base,
                "applied": self.applied,
                "resets": self.resets,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> LogMarks:
        if raw is None:
            return cls()
        o = orjson.loads(raw)
        return cls(
            cluster=o.get("cluster"),
            base={k: int(v) for k, v in o.get("base", {}).items()},
            applied={k: int(v) for k, v in o.get("applied", {}).items()},
            resets=int(o.get("resets", 0)),
        )


class ChangelogVerdict(Enum):
    """What a local store's persisted changelog offset says of the changelog partition."""

    OK = "ok"
    EMPTIED = "changelog_emptied"  # the changelog has nothing: write local state back
    BEHIND = "changelog_behind"  # it ends before what the store holds: restore from it


def judge_changelog(persisted: int | None, end: int) -> ChangelogVerdict:
    """Compare a store's persisted offset (the last changelog offset it holds, or None) with the
    changelog partition's end (the next offset to be written)."""
    if persisted is None or persisted < end:
        return ChangelogVerdict.OK
    if end == 0:
        return ChangelogVerdict.EMPTIED
    return ChangelogVerdict.BEHIND
