"""Event-time merging of the two input topics of a partition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.core.ordering import EventTimeMerger

TOPICS = ("account", "usage")


def test_waits_for_the_other_topic_while_it_has_records_pending() -> None:
    merger: EventTimeMerger[str] = EventTimeMerger(TOPICS)
    merger.add(0, "account", 500, arrived_ms=0, item="a@500")
    # usage-events has records we have not received: a@500 must wait for them.
    assert merger.release(0, 10, lambda t, since: True) == []
    merger.add(0, "usage", 100, arrived_ms=10, item="u@100")
    # Now both have a head: the earlier event time goes first; a@500 waits for more usage.
    assert merger.release(0, 10, lambda t, since: t == "usage") == ["u@100"]
    # Usage is caught up: nothing can come before a@500 any more.
    assert merger.release(0, 11, lambda t, since: False) == ["a@500"]


def test_unknown_backlog_waits_a_bounded_time() -> None:
    merger: EventTimeMerger[str] = EventTimeMerger(TOPICS, wait_unknown_ms=100)
    merger.add(0, "account", 1, arrived_ms=0, item="a")
    assert merger.release(0, 99, lambda t, since: None) == []
    assert merger.release(0, 100, lambda t, since: None) == ["a"]


def test_a_known_backlog_is_waited_for_however_long_it_takes() -> None:
    # A deep backlog: the other topic's records arrive long after, while the worker is busy.
    merger: EventTimeMerger[str] = EventTimeMerger(TOPICS)
    merger.add(0, "account", 1, arrived_ms=0, item="a")
    assert merger.release(0, 3_600_000, lambda t, since: True) == []
    assert merger.release(0, 3_600_001, lambda t, since: False) == ["a"]


def test_memory_stays_bounded() -> None:
    merger: EventTimeMerger[int] = EventTimeMerger(TOPICS, max_held=3)
    for i in range(5):
        merger.add(0, "account", i, arrived_ms=0, item=i)
    assert merger.release(0, 0, lambda t, since: True) == [0, 1]
    assert sorted(merger.drop(0)) == [2, 3, 4]


def test_crowded_names_the_topic_partitions_holding_the_limit_or_more() -> None:
    merger: EventTimeMerger[int] = EventTimeMerger(TOPICS)
    for i in range(3):
        merger.add(0, "usage", 100 + i, arrived_ms=0, item=i)
    merger.add(0, "account", 1, arrived_ms=0, item=9)
    merger.add(1, "usage", 5, arrived_ms=0, item=8)
    assert merger.crowded(3) == [(0, "usage")]
    assert sorted(merger.crowded(1)) == [(0, "account"), (0, "usage"), (1, "usage")]
    # Released records no longer count.
    assert merger.release(0, 0, lambda t, since: False) == [9, 0, 1, 2]
    assert merger.crowded(1) == [(1, "usage")]


def test_partitions_are_independent_and_drop_returns_held() -> None:
    merger: EventTimeMerger[str] = EventTimeMerger(TOPICS)
    merger.add(1, "usage", 5, arrived_ms=0, item="u1")
    assert merger.release(0, 0, lambda t, since: False) == []
    assert merger.partitions() == [1]
    assert merger.drop(1) == ["u1"]
    assert merger.partitions() == []


@given(
    st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 50)), max_size=40),
    st.randoms(use_true_random=False),
)
def test_once_both_topics_are_drained_the_output_is_in_event_time_order(
    records: list[tuple[str, int]], rnd: object
) -> None:
    # Given each topic's records in offset order (event times ascending within a topic, as a
    # well-behaved producer writes them), arriving interleaved in any way,
    per_topic = {t: sorted(ts for tt, ts in records if tt == t) for t in TOPICS}
    arrival = [(t, ts) for t in TOPICS for ts in per_topic[t]]
    rnd.shuffle(arrival)  # type: ignore[attr-defined]
    cursor = {t: 0 for t in TOPICS}
    merger: EventTimeMerger[tuple[str, int]] = EventTimeMerger(TOPICS)
    out: list[tuple[str, int]] = []
    for topic, _ in arrival:
        ts = per_topic[topic][cursor[topic]]
        cursor[topic] += 1
        merger.add(0, topic, ts, arrived_ms=0, item=(topic, ts))
        remaining = {t: cursor[t] < len(per_topic[t]) for t in TOPICS}
        out += merger.release(0, 0, lambda t, since, r=remaining: r[t])
    out += merger.release(0, 0, lambda t, since: False)
    # then the merged output is ordered by event time, whatever the arrival interleaving.
    assert [ts for _, ts in out] == sorted(ts for _, ts in records)


def test_the_other_topic_is_asked_about_news_since_the_waiting_record_arrived() -> None:
    merger: EventTimeMerger[str] = EventTimeMerger(TOPICS, wait_unknown_ms=100)
    merger.add(0, "account", 500, arrived_ms=40, item="a@500")
    asked: list[tuple[str, int]] = []

    def pending(topic: str, since_ms: int) -> bool | None:
        asked.append((topic, since_ms))
        return None  # no fetch response for usage since 40 yet

    assert merger.release(0, 60, pending) == []
    assert asked == [("usage", 40)]
    assert merger.release(0, 140, pending) == ["a@500"]  # the bounded wait ran out
