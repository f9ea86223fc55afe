"""The record cache between the processor and its tables (streams/core/pending_writes.py)."""

from __future__ import annotations

from streams.core.pending_writes import PendingWrites


class CountingStore(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, bytes | None]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.writes.append((key, None))
        super().__delitem__(key)


def test_reads_see_pending_values_before_the_store() -> None:
    store = CountingStore()
    store[b"a"] = b"old"
    store.writes.clear()
    cache = PendingWrites(store)
    assert cache.get(b"a") == b"old"
    cache.put(0, b"a", b"new")
    assert cache.get(b"a") == b"new"
    assert store[b"a"] == b"old"  # nothing written before the flush
    cache.put(0, b"a", None)
    assert cache.get(b"a") is None
    assert cache.get(b"missing") is None


def test_flush_writes_only_the_last_value_per_key_of_its_partition() -> None:
    store = CountingStore()
    cache = PendingWrites(store)
    for i in range(5):
        cache.put(0, b"a", f"v{i}".encode())
    cache.put(1, b"b", b"x")
    assert cache.partitions() == {0, 1}
    assert len(cache) == 2
    layer = cache.seal()
    assert cache.write(layer, 0) == 1
    assert store.writes == [(b"a", b"v4")]
    assert cache.partitions() == {1}
    assert cache.get(b"b") == b"x" and b"b" not in store
    assert cache.write(layer, 0) == 0
    cache.write(layer, 1)
    cache.release(layer)
    assert store == {b"a": b"v4", b"b": b"x"}
    assert len(cache) == 0


def test_deletes_reach_the_store_only_for_existing_keys() -> None:
    store = CountingStore()
    store[b"a"] = b"1"
    store.writes.clear()
    cache = PendingWrites(store)
    cache.put(0, b"a", None)
    cache.put(0, b"never-written", b"2")
    cache.put(0, b"never-written", None)
    cache.write(cache.seal(), 0)
    assert store.writes == [(b"a", None)]
    assert store == {}


def test_discard_forgets_revoked_partitions_only() -> None:
    store = CountingStore()
    cache = PendingWrites(store)
    cache.put(0, b"a", b"1")
    cache.put(1, b"b", b"2")
    assert cache.discard({1, 7}) == 1
    assert cache.get(b"b") is None
    assert cache.partitions() == {0}
    cache.write(cache.seal(), 0)
    assert store == {b"a": b"1"}


def test_a_sealed_layer_writes_its_own_values_and_reads_see_the_newest() -> None:
    store = CountingStore()
    cache = PendingWrites(store)
    cache.put(0, b"a", b"batch1")
    cache.put(0, b"b", b"batch1")
    first = cache.seal()
    assert cache.get(b"a") == b"batch1"  # the next batch reads the sealed one's state
    cache.put(0, b"a", b"batch2")  # ... and writes over it in its own layer
    assert cache.get(b"a") == b"batch2" and cache.get(b"b") == b"batch1"
    assert cache.partitions() == {0} and len(cache) == 3
    assert cache.write(first, 0) == 2
    cache.release(first)
    # Only the sealed batch's values reached the store; the open layer still holds its own.
    assert store == {b"a": b"batch1", b"b": b"batch1"}
    assert cache.get(b"a") == b"batch2"
    second = cache.seal()
    cache.write(second, 0)
    cache.release(second)
    assert store == {b"a": b"batch2", b"b": b"batch1"} and len(cache) == 0


def test_a_released_layer_drops_what_it_did_not_write() -> None:
    store = CountingStore()
    cache = PendingWrites(store)
    cache.put(0, b"a", b"1")
    cache.put(3, b"c", b"3")
    sealed = cache.seal()
    cache.write(sealed, 0)  # partition 3 is not ours any more: not written
    cache.release(sealed)
    assert store == {b"a": b"1"}
    assert cache.get(b"c") is None and cache.partitions() == set()


def test_discard_reaches_sealed_layers() -> None:
    store = CountingStore()
    cache = PendingWrites(store)
    cache.put(1, b"a", b"sealed")
    sealed = cache.seal()
    cache.put(1, b"b", b"open")
    cache.put(2, b"c", b"open")
    assert cache.discard({1}) == 2
    assert cache.get(b"a") is None and cache.get(b"b") is None
    assert cache.partitions() == {2}
    assert cache.write(sealed, 1) == 0


def test_a_key_written_on_two_partitions_keeps_a_value_on_each() -> None:
    # Misrouted input applied where it is (stream.repartition: off) writes one customer's
    # record on two partitions: neither write may read or drop the other.
    store: dict[bytes, bytes] = {}
    cache = PendingWrites(store)
    cache.put(1, b"split", b"account side")
    cache.put(3, b"split", b"usage side")
    assert cache.get(b"split", 1) == b"account side"
    assert cache.get(b"split", 3) == b"usage side"
    layer = cache.seal()
    assert cache.get(b"split", 1) == b"account side"  # from the sealed layer
    assert cache.write(layer, 1) == 1 and store[b"split"] == b"account side"
    assert cache.get(b"split", 3) == b"usage side"  # still pending, not lost with the other
    assert cache.write(layer, 3) == 1 and store[b"split"] == b"usage side"


class BatchStore(CountingStore):
    """A store that takes a layer's writes in one call (as the worker's tables do)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[bytes, bytes | None]]] = []

    def write_many(self, items: list[tuple[bytes, bytes | None]]) -> None:
        self.calls.append(list(items))
        for key, value in items:
            if value is None:
                del self[key]
            else:
                self[key] = value


def test_a_store_with_write_many_gets_a_layers_writes_in_one_call() -> None:
    """The same writes, in the same order, as one by one; deletes of keys the store lacks
    are left out as well."""
    one_by_one, batched = CountingStore(), BatchStore()
    for store in (one_by_one, batched):
        store[b"old"] = b"0"
        store.writes.clear()
        cache = PendingWrites(store)
        cache.put(0, b"a", b"1")
        cache.put(0, b"old", None)
        cache.put(0, b"never-written", None)
        cache.put(0, b"b", b"2")
        cache.put(0, b"a", b"3")
        cache.put(1, b"c", b"4")
        layer = cache.seal()
        assert cache.write(layer, 0) == 4
    assert batched.calls == [[(b"a", b"3"), (b"old", None), (b"b", b"2")]]
    assert batched.writes == one_by_one.writes == [(b"a", b"3"), (b"old", None), (b"b", b"2")]
    assert batched == one_by_one == {b"a": b"3", b"b": b"2"}
