"""The rate-limited summary log: one detailed line and one summary per interval."""

from __future__ import annotations

import logging

import pytest

from streams.ops.ratelimited_log import SummaryLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_many_occurrences_make_one_detailed_line_and_one_summary_with_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    logger = logging.getLogger("test.summary")
    summary = SummaryLog(logger, "dead-lettered", interval=60, clock=clock)
    caplog.set_level(logging.WARNING, logger="test.summary")
    reasons = ["invalid_json"] * 400 + ["wrong_type"] * 300 + ["missing_field"] * 261
    for offset, reason in enumerate(reasons):
        clock.now += 0.05
        summary.note(reason, f"t[0]@{offset}", "dead letter %s[%d]@%d: %s", "t", 0, offset, reason)
    assert [r.getMessage() for r in caplog.records] == ["dead letter t[0]@0: invalid_json"]
    clock.now += 20
    summary.note("invalid_json", "t[1]@5", "dead letter %s[%d]@%d: %s", "t", 1, 5, "x")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert messages[1] == (
        "dead-lettered 961 records in the last 68 s: invalid_json 400, wrong_type 300, "
        "missing_field 261 (the first logged in full, the last at t[0]@960)"
    )
    assert messages[2] == "dead letter t[1]@5: x"  # a new interval starts with a full line
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_a_single_occurrence_logs_no_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    summary = SummaryLog(logging.getLogger("test.one"), "misrouted", interval=60, clock=clock)
    caplog.set_level(logging.WARNING, logger="test.one")
    summary.note("wrong_partition", "t[0]@1", "misrouted %s", "t[0]@1")
    clock.now += 61
    summary.flush()
    assert [r.getMessage() for r in caplog.records] == ["misrouted t[0]@1"]


@pytest.mark.asyncio
async def test_the_summary_comes_by_itself_on_a_running_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    summary = SummaryLog(logging.getLogger("test.loop"), "dead-lettered", interval=0.05)
    caplog.set_level(logging.WARNING, logger="test.loop")
    for offset in range(3):
        summary.note("too_large", f"t[2]@{offset}", "dead letter t[2]@%d", offset)
    await asyncio.sleep(0.2)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[1].startswith("dead-lettered 3 records in the last 0 s: too_large 3")
