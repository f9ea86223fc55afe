"""The clock and the due-time index on their own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.core.clock import Clock
from streams.core.due_index import DueIndex


def test_event_clock_is_per_partition_stream_time_and_never_moves_back() -> None:
    clock = Clock("event")
    assert clock.now(0) is None  # nothing seen yet: no time on this partition
    assert clock.observe(0, 1_000)
    assert not clock.observe(0, 500)  # a late event does not move stream time back
    assert clock.now(0) == 1_000
    assert clock.now(1) is None  # partitions keep their own time
    clock.restore(0, 900)
    assert clock.now(0) == 1_000
    clock.restore(0, 2_000)
    assert clock.now(0) == 2_000


def test_wall_clock_reads_the_wall() -> None:
    clock = Clock("wall", wall=lambda: 42)
    assert clock.now(3) == 42


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.binary(min_size=1, max_size=3),
            st.one_of(st.none(), st.integers(0, 100)),
        )
    ),
    st.integers(0, 100),
)
def test_due_index_pops_exactly_the_due_entries(
    ops: list[tuple[int, bytes, int | None]], now: int
) -> None:
    index = DueIndex()
    model: dict[tuple[int, bytes], int] = {}
    for partition, customer, due in ops:
        index.set(partition, customer, due)
        if due is None:
            model.pop((partition, customer), None)
        else:
            model[(partition, customer)] = due
    for partition in range(3):
        expected = sorted(
            (due, c) for (p, c), due in model.items() if p == partition and due <= now
        )
        assert index.pop_due_items(partition, now) == [(c, d) for d, c in expected]
        left = {c: d for (p, c), d in model.items() if p == partition and d > now}
        assert index.size(partition) == len(left)
        assert index.next_due(partition) == (min(left.values()) if left else None)


def test_rebuild_replaces_a_partition() -> None:
    index = DueIndex()
    index.set(0, b"a", 5)
    index.rebuild(0, [(b"b", 7), (b"c", 3)])
    assert index.pop_due_items(0, 10) == [(b"c", 3), (b"b", 7)]


def test_superseded_entries_do_not_accumulate() -> None:
    # A busy customer moves its far-away due time on every event: the heap must not grow with
    # the number of events, only with the number of customers that have something due.
    index = DueIndex()
    for i in range(10_000):
        index.set(0, b"busy", 1_000_000 + i)
    assert index.size(0) == 1
    assert index.heap_size(0) <= 2 * index.size(0) + 65
    assert index.pop_due_items(0, 2_000_000) == [(b"busy", 1_009_999)]
