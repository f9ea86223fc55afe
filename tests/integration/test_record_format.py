"""Customer records written in the JSON format of the code before the binary one (format 1),
met by the current worker: in its RocksDB state directory, and on the customers changelog.

Given a worker that applied a customer's history and stopped (``test_replaced_log``'s first
life), with the customer's record turned into format 1 (``streams.core.state._encode``, the
encoder of that code, kept: ``tests/unit/test_state_format.py`` checks it writes the same bytes
as the fixture of records that code wrote), when a worker starts on that state directory, or
restores from that changelog with the state directory gone, then it reads the record (its
applied offsets too: the first life is not decided again), decides on the next event, and
writes the record in the current format.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import rocksdict

from streams.core.state import FORMAT, CustomerState, _encode
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack
from tests.integration.test_replaced_log import (
    OFFSET_KEY,
    _append_to,
    _lived_once,
    _produce,
    _second_life,
    _worker,
)
from tests.support import consume, read_changelog, run


def _old_format(raw: bytes) -> bytes:
    old = orjson.dumps(_encode(CustomerState.from_bytes(raw)))
    assert old[:1] == b"{"
    return old


def _customer_db(state_dir: Path, customer: str) -> tuple[Path, int]:
    """The customers table partition holding ``customer``'s record, and its partition."""
    for path in sorted(state_dir.rglob("customers-*.db")):
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            if db.get(customer.encode()) is not None:
                return path, int(path.name.removesuffix(".db").rpartition("-")[2])
        finally:
            db.close()
    raise AssertionError(f"no customers table partition under {state_dir} holds {customer}")


def _rewrite_local(path: Path, key: bytes) -> bytes:
    """The record under ``key`` rewritten in place in format 1 (the partition's changelog
    offset, under ``OFFSET_KEY``, left as it is: the worker does not restore it again)."""
    assert key != OFFSET_KEY
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    try:
        old = _old_format(db[key])
        db[key] = old
        return old
    finally:
        db.close()


def _decided_once_more(
    stack: DevStack, tmp: Path, topics: TopicNames, app_id: str, customer: str
) -> None:
    bootstrap = stack.bootstrap_servers
    worker = _worker(stack, tmp, topics, app_id, "rocksdb", bootstrap)
    try:
        worker.wait_ready(120)
        run(_produce(bootstrap, topics, customer, _second_life(customer)))
        confirmed = run(consume(bootstrap, topics.contact_decisions, until=2, timeout=90, settle=2))
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    confirmations = sorted(
        orjson.loads(r.value)["evidence"][0]
        for r in confirmed
        if orjson.loads(r.value)["trigger"] == "auto_renew_confirmation"
    )
    # Each charge confirmed exactly once: the old record's applied offsets were read (the first
    # life is not decided again) and so was its content (the new charge is decided on it).
    assert confirmations == [f"{customer}-charge-1", f"{customer}-charge-2"]


def _written_in_the_current_format(stack: DevStack, tmp: Path, app_id: str, customer: str) -> None:
    path, _ = _customer_db(tmp / "state", customer)
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    try:
        local = db[customer.encode()]
    finally:
        db.close()
    on_log = run(read_changelog(stack.bootstrap_servers, f"{app_id}-customers-changelog"))
    assert local[:1] == on_log[customer.encode()][:1] == bytes([FORMAT])
    assert local == on_log[customer.encode()]


def test_a_state_directory_of_the_json_format_is_read_and_written_anew(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    topics, app_id, customer = _lived_once(dev_stack, tmp_path, "fmt-dir", "rocksdb")
    path, _ = _customer_db(tmp_path / "state", customer)
    _rewrite_local(path, customer.encode())
    _decided_once_more(dev_stack, tmp_path, topics, app_id, customer)
    _written_in_the_current_format(dev_stack, tmp_path, app_id, customer)


def test_a_changelog_of_the_json_format_is_restored_and_written_anew(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    topics, app_id, customer = _lived_once(dev_stack, tmp_path, "fmt-log", "rocksdb")
    state_dir = tmp_path / "state"
    path, partition = _customer_db(state_dir, customer)
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    try:
        old = _old_format(db[customer.encode()])
    finally:
        db.close()
    # The changelog's last value of the customer is the old format; the state directory goes.
    changelog = f"{app_id}-customers-changelog"
    run(_append_to(dev_stack.bootstrap_servers, changelog, partition, [(customer.encode(), old)]))
    assert run(read_changelog(dev_stack.bootstrap_servers, changelog))[customer.encode()] == old
    shutil.rmtree(state_dir)
    _decided_once_more(dev_stack, tmp_path, topics, app_id, customer)
    _written_in_the_current_format(dev_stack, tmp_path, app_id, customer)
