"""Log identity: a replaced input log is recognised and reset; a reprocessed one is not.

The processor counts each partition's offsets from its base
(``streams/core/log_identity.py``): after
a reset, every event of the new log lies above what any customer record applied from the old
one, and a replay of the new log is still skipped.
"""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from streams.config import load_config
from streams.core.adapter import build_core
from streams.core.clock import Clock
from streams.core.events import Visit
from streams.core.log_identity import (
    RESET_GAP,
    ChangelogVerdict,
    LogMarks,
    judge_changelog,
    marks_key,
)
from streams.kafka.processor import ContactAll, Processor, Stores
from streams.ops.metrics import Metrics

DAY_MS = 86_400_000


def test_marks_without_anything_applied_are_never_replaced() -> None:
    assert LogMarks().replaced("c1", {"account": 0, "usage": 0}) == {}


def test_an_applied_offset_at_or_past_the_end_means_a_replaced_log() -> None:
    marks = LogMarks(cluster="c1", applied={"account": 40, "usage": 9})
    # The end is the next offset to be written: offset 40 applied needs an end of 41 or more.
    assert marks.replaced("c1", {"account": 40, "usage": 10}) == {"account": "offsets"}
    assert marks.replaced("c1", {"account": 41, "usage": 10}) == {}


def test_a_reprocessing_of_the_same_log_is_not_a_replaced_one() -> None:
    # The committed offset moved back: the log still reaches past what was applied.
    marks = LogMarks(cluster="c1", applied={"account": 40})
    assert marks.replaced("c1", {"account": 500}) == {}


def test_another_cluster_replaces_every_kind_with_something_applied() -> None:
    marks = LogMarks(cluster="c1", applied={"account": 3})
    assert marks.replaced("c2", {"account": 100, "usage": 100}) == {"account": "cluster"}
    # An unknown cluster id (a broker that does not say) is no evidence either way.
    assert marks.replaced(None, {"account": 100}) == {}


@given(
    applied=st.integers(min_value=-1, max_value=10**9),
    base=st.integers(min_value=0, max_value=10**12),
    offsets=st.lists(st.integers(min_value=0, max_value=10**6), max_size=20),
)
def test_after_a_reset_every_new_offset_lies_above_the_old_marks_and_is_not_a_reset_again(
    applied: int, base: int, offsets: list[int]
) -> None:
    marks = LogMarks(cluster="c1", base={"account": base}, applied={"account": base + applied})
    old_high = marks.applied["account"]
    marks.reset({"account": "offsets"}, "c2")
    assert all(marks.base["account"] + o > old_high for o in offsets)
    # A record written up to one batch after the partition's marks is still below the base.
    assert marks.base["account"] - old_high > 10**6
    assert marks.replaced("c2", {"account": 0}) == {}
    assert marks.cluster == "c2" and marks.resets == 1
    assert LogMarks.decode(marks.encode()) == marks


def test_a_reset_computed_twice_from_the_same_marks_is_the_same() -> None:
    stored = LogMarks(cluster="c1", applied={"account": 7}).encode()
    first, second = LogMarks.decode(stored), LogMarks.decode(stored)
    first.reset({"account": "offsets"}, "c1")
    second.reset({"account": "offsets"}, "c1")
    assert first.base == second.base == {"account": 8 + RESET_GAP}


def test_changelog_verdicts() -> None:
    assert judge_changelog(None, 0) is ChangelogVerdict.OK  # nothing local
    assert judge_changelog(9, 10) is ChangelogVerdict.OK  # holds up to the last offset
    assert judge_changelog(9, 0) is ChangelogVerdict.EMPTIED
    assert judge_changelog(14, 8) is ChangelogVerdict.BEHIND  # the 14 > 8
    assert judge_changelog(10, 10) is ChangelogVerdict.BEHIND


# --- the processor counts offsets from the partition's base -------------------------------


def _visit(customer: str, event_id: str, at_ms: int) -> Visit:
    return Visit(
        event_id=event_id,
        customer_id=customer,
        occurred_at_ms=at_ms,
        venue="v",
        sentiment="neutral",
    )


def _processor(stores: Stores, metrics: Metrics) -> Processor:
    async def publish(decision: object) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    return Processor(
        build_core(load_config(None)), stores, Clock("event"), ContactAll(), publish, metrics
    )


def test_a_reset_partition_applies_the_new_log_and_still_skips_its_replays() -> None:
    stores = Stores(customers={}, due={}, clock={})
    metrics = Metrics()

    async def scenario() -> None:
        processor = _processor(stores, metrics)
        await processor.restore_partitions({0})
        for offset in range(5):  # the old log: offsets 0-4
            await processor.apply_event("usage", 0, offset, _visit("c1", f"old-{offset}", DAY_MS))
        await processor.flush()
        assert LogMarks.decode(stores.clock[marks_key(0)]).applied == {"usage": 4}

        # A new worker life meets a log of two records: offset 4 applied, the end is 2.
        processor = _processor(stores, metrics)
        await processor.restore_partitions({0})
        marks = processor.log_marks(0)
        assert marks.replaced(None, {"usage": 2}) == {"usage": "offsets"}
        marks.reset({"usage": "offsets"}, None)
        processor.marks_changed(0)
        await processor.apply_event("usage", 0, 0, _visit("c1", "new-0", 2 * DAY_MS))
        await processor.apply_event("usage", 0, 1, _visit("c1", "new-1", 2 * DAY_MS))
        await processor.flush()
        # A replay of the new log (a crash before the commit) is skipped.
        processor = _processor(stores, metrics)
        await processor.restore_partitions({0})
        assert processor.log_marks(0).replaced(None, {"usage": 2}) == {}
        await processor.apply_event("usage", 0, 1, _visit("c1", "new-1", 2 * DAY_MS))
        await processor.flush()

    asyncio.run(scenario())
    state = build_core(load_config(None)).load(stores.customers[b"c1"])
    assert len(state.seen) == 7  # the two new events applied, not taken for replays
    assert state.applied_offsets == {"usage": 4 + 1 + RESET_GAP + 1}  # new-1, from the base
    assert metrics.events_replayed.labels("usage")._value.get() == 1  # only the true replay
