"""Ingest on the real broker: malformed records, and only those, land in dead-letters.

Given a running worker (real Tansu broker, real redis-server), when we produce a mix of valid
events and more than thirty kinds of malformed input to both input topics, then every malformed
record appears on the dead-letter topic with a specific reason and its own topic, partition and
offset, every valid event is accepted (counted by type), and the worker keeps going.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.tools.devstack import DevStack
from tests.support import WorkerProcess, consume, run, unique_topics, write_config

NOW = "2026-03-01T09:30:00Z"
FAR_FUTURE = "2199-01-01T00:00:00Z"


def _event(customer: str, event_id: str, type_: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "type": type_,
        "occurred_at": NOW,
        **fields,
    }


def _txn(**over: Any) -> dict[str, Any]:
    base = _event(
        "c-bad",
        "e-bad",
        "transaction",
        account_id="sav-1",
        account_type="savings",
        direction="debit",
        amount=25.5,
        rail="wire",
    )
    base.update(over)
    return base


def _without(d: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != name}


def _j(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _replace(obj: dict[str, Any], field: str, raw: str) -> bytes:
    """JSON text with one field's value replaced by raw (non-JSON) text such as NaN."""
    text = _j({**obj, field: "__RAW__"}).decode()
    return text.replace('"__RAW__"', raw).encode()


# (name, topic kind, key, value, expected reason code, a word the error must contain)
MALFORMED: list[tuple[str, str, bytes | None, bytes | None, str, str]] = [
    ("invalid json", "account", b"c-bad", b'{"event_id": ', "invalid_json", "JSON"),
    ("non-utf8 value", "account", b"c-bad", b"\xff\xfe\x00garbage", "invalid_json", "UTF-8"),
    ("empty value", "account", b"c-bad", b"", "empty_value", "value"),
    ("null value", "usage", b"c-bad", None, "empty_value", "value"),
    ("json array", "account", b"c-bad", b"[1, 2, 3]", "not_an_object", "object"),
    ("json string", "usage", b"c-bad", b'"hello"', "not_an_object", "object"),
    (
        "missing event_id",
        "account",
        b"c-bad",
        _j(_without(_txn(), "event_id")),
        "missing_field",
        "event_id",
    ),
    (
        "missing customer_id",
        "account",
        b"c-bad",
        _j(_without(_txn(), "customer_id")),
        "missing_field",
        "customer_id",
    ),
    ("missing type", "account", b"c-bad", _j(_without(_txn(), "type")), "missing_field", "type"),
    (
        "missing occurred_at",
        "account",
        b"c-bad",
        _j(_without(_txn(), "occurred_at")),
        "missing_field",
        "occurred_at",
    ),
    ("unknown type", "account", b"c-bad", _j(_txn(type="teleport")), "unknown_type", "type"),
    (
        "usage type on account topic",
        "account",
        b"c-bad",
        _j(_event("c-bad", "e1", "visit", venue="x", sentiment="positive")),
        "unknown_type",
        "type",
    ),
    ("event_id is a number", "account", b"c-bad", _j(_txn(event_id=17)), "wrong_type", "event_id"),
    ("event_id empty", "account", b"c-bad", _j(_txn(event_id="")), "out_of_range", "event_id"),
    (
        "event_id too long",
        "account",
        b"c-bad",
        _j(_txn(event_id="x" * 129)),
        "out_of_range",
        "event_id",
    ),
    (
        "customer_id null",
        "account",
        b"c-bad",
        _j(_txn(customer_id=None)),
        "wrong_type",
        "customer_id",
    ),
    ("NaN amount", "account", b"c-bad", _replace(_txn(), "amount", "NaN"), "invalid_json", "JSON"),
    (
        "Infinity amount",
        "account",
        b"c-bad",
        _replace(_txn(), "amount", "Infinity"),
        "invalid_json",
        "JSON",
    ),
    (
        "overflowing amount",
        "account",
        b"c-bad",
        _replace(_txn(), "amount", "1e400"),
        "invalid_json",
        "infinity",
    ),
    ("negative amount", "account", b"c-bad", _j(_txn(amount=-5)), "out_of_range", "amount"),
    ("zero amount", "account", b"c-bad", _j(_txn(amount=0)), "out_of_range", "amount"),
    ("amount as string", "account", b"c-bad", _j(_txn(amount="12.50")), "wrong_type", "amount"),
    ("amount as boolean", "account", b"c-bad", _j(_txn(amount=True)), "wrong_type", "amount"),
    (
        "absurd balance",
        "account",
        b"c-bad",
        _j(_event("c-bad", "e1", "balance", account_id="a", account_type="savings", balance=1e13)),
        "out_of_range",
        "balance",
    ),
    (
        "timestamp without offset",
        "account",
        b"c-bad",
        _j(_txn(occurred_at="2026-03-01T09:30:00")),
        "bad_timestamp",
        "occurred_at",
    ),
    (
        "impossible date",
        "account",
        b"c-bad",
        _j(_txn(occurred_at="2026-02-30T09:30:00Z")),
        "bad_timestamp",
        "occurred_at",
    ),
    (
        "timestamp is a number",
        "account",
        b"c-bad",
        _j(_txn(occurred_at=1772357400)),
        "wrong_type",
        "occurred_at",
    ),
    (
        "occurred_at far in the future",
        "account",
        b"c-bad",
        _j(_txn(occurred_at=FAR_FUTURE)),
        "future_timestamp",
        "occurred_at",
    ),
    ("key differs from customer_id", "account", b"someone-else", _j(_txn()), "key_mismatch", "key"),
    ("non-utf8 key", "account", b"\xff\xfe", _j(_txn()), "key_mismatch", "key"),
    ("no key", "account", None, _j(_txn()), "missing_key", "key"),
    ("oversized payload", "account", b"c-bad", _j(_txn(note="x" * 70_000)), "too_large", "bytes"),
    (
        "direction not in enum",
        "account",
        b"c-bad",
        _j(_txn(direction="sideways")),
        "invalid_value",
        "direction",
    ),
    (
        "account_type not in enum",
        "account",
        b"c-bad",
        _j(_txn(account_type="piggy_bank")),
        "invalid_value",
        "account_type",
    ),
    (
        "transaction without rail",
        "account",
        b"c-bad",
        _j(_without(_txn(), "rail")),
        "missing_field",
        "rail",
    ),
    (
        "negative minimum_due",
        "account",
        b"c-bad",
        _j(
            _event(
                "c-bad",
                "e1",
                "statement",
                account_id="cc",
                statement_balance=10,
                amount_paid=0,
                minimum_due=-1,
            )
        ),
        "out_of_range",
        "minimum_due",
    ),
    (
        "auto_renew as string",
        "account",
        b"c-bad",
        _j(
            _event(
                "c-bad",
                "e1",
                "contract",
                contract_id="k",
                product="annual_pass",
                status="active",
                expires_at="2026-06-01T00:00:00Z",
                auto_renew="yes",
            )
        ),
        "wrong_type",
        "auto_renew",
    ),
    (
        "engagement channel not in enum",
        "usage",
        b"c-bad",
        _j(_event("c-bad", "e1", "engagement", channel="fax", action="opened")),
        "invalid_value",
        "channel",
    ),
    (
        "profile timezone malformed",
        "usage",
        b"c-bad",
        _j(_event("c-bad", "e1", "profile", timezone="not a zone!")),
        "invalid_value",
        "timezone",
    ),
    (
        "sentiment not in enum",
        "usage",
        b"c-bad",
        _j(_event("c-bad", "e1", "visit", venue="x", sentiment="ecstatic")),
        "invalid_value",
        "sentiment",
    ),
    (
        "purchase without amount",
        "usage",
        b"c-bad",
        _j(_event("c-bad", "e1", "purchase", product_category="phone")),
        "missing_field",
        "amount",
    ),
]

VALID: list[tuple[str, dict[str, Any]]] = [
    ("account", _event("c-ok", "v1", "account_opened", account_id="sav", account_type="savings")),
    ("account", _event("c-ok", "v2", "account_closed", account_id="old", account_type="loan")),
    (
        "account",
        _event("c-ok", "v3", "balance", account_id="sav", account_type="savings", balance=-120.75),
    ),
    (
        "account",
        _event(
            "c-ok",
            "v4",
            "transaction",
            account_id="chk",
            account_type="checking",
            direction="credit",
            amount=10,
            rail="internal",
            balance_after=99.5,
            transfer_id="t1",
            counterparty_account_id="sav",
        ),
    ),
    (
        "account",
        _event(
            "c-ok",
            "v5",
            "statement",
            account_id="cc",
            statement_balance=0,
            amount_paid=0,
            minimum_due=0,
        ),
    ),
    (
        "account",
        _event(
            "c-ok",
            "v6",
            "contract",
            contract_id="k1",
            product="annual_pass",
            status="active",
            expires_at="2026-06-01T00:00:00+02:00",
            auto_renew=False,
        ),
    ),
    (
        "account",
        _event(
            "c-ok",
            "v7",
            "auto_renew_charged",
            contract_id="k1",
            amount=99,
            expires_at="2027-06-01T00:00:00Z",
            source="billing",
            extra_field=[1],
        ),
    ),
    ("usage", _event("c-ok", "v8", "visit", venue="Park", sentiment="positive", contract_id="k1")),
    ("usage", _event("c-ok", "v9", "complaint", category="queue", resolved=True)),
    ("usage", _event("c-ok", "v10", "product_usage", product="annual_pass", activity="login")),
    ("usage", _event("c-ok", "v11", "purchase", product_category="air_filter", amount=0.01)),
    (
        "usage",
        _event("c-ok", "v12", "engagement", channel="email", action="opened", decision_id="d-1"),
    ),
    ("usage", _event("c-ok", "v13", "consent", channel="all", status="opted_out")),
    (
        "usage",
        _event(
            "c-ok",
            "v14",
            "profile",
            segment="high_affinity",
            business_unit="cards",
            timezone="Europe/Berlin",
        ),
    ),
    (
        "usage",
        {
            **_event("c-ok", "v15", "visit", venue="Park", sentiment="neutral"),
            "occurred_at": "2026-03-01t09:30:00.123456789z",
        },
    ),
]


async def _produce_all(
    bootstrap: str, topics: Any, records: list[tuple[str, bytes | None, bytes | None]]
) -> list[tuple[str, int, int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_batch_size=1, max_request_size=1_048_576
    )
    await producer.start()
    positions = []
    try:
        for kind, key, value in records:
            topic = topics.account_events if kind == "account" else topics.usage_events
            meta = await producer.send_and_wait(topic, value, key=key)
            positions.append((topic, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return positions


def test_malformed_input_is_dead_lettered_and_valid_input_accepted(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    assert len({m[4] for m in MALFORMED}) >= 10 and len(MALFORMED) >= 30
    topics = unique_topics("ingest")
    config = write_config(tmp_path / "config.yaml", topics)
    worker = WorkerProcess(
        dev_stack, config, f"ingest-{topics.account_events[7:17]}", tmp_path / "state"
    ).start()
    try:
        worker.wait_ready()
        # Interleave valid and malformed records, so a bad record never stops the valid ones
        # after it.
        records: list[tuple[str, bytes | None, bytes | None]] = []
        for i in range(max(len(MALFORMED), len(VALID))):
            if i < len(MALFORMED):
                _, kind, key, value, _, _ = MALFORMED[i]
                records.append((kind, key, value))
            if i < len(VALID):
                kind, event = VALID[i]
                records.append((kind, b"c-ok", _j(event)))
        positions = run(_produce_all(dev_stack.bootstrap_servers, topics, records))
        dead = run(
            consume(
                dev_stack.bootstrap_servers, topics.dead_letters, until=len(MALFORMED), timeout=60
            )
        )

        # Then: exactly the malformed records are dead letters, each with its own position
        # and the reason we expect for it.
        by_position = {}
        for rec in dead:
            letter = orjson.loads(rec.value)
            by_position[(letter["source_topic"], letter["partition"], letter["offset"])] = (
                rec,
                letter,
            )
        assert len(dead) == len(MALFORMED), [orjson.loads(r.value)["error"] for r in dead]
        malformed_positions = []
        valid_positions = []
        m = v = 0
        for i in range(max(len(MALFORMED), len(VALID))):
            if i < len(MALFORMED):
                malformed_positions.append((MALFORMED[m], positions[m + v]))
                m += 1
            if i < len(VALID):
                valid_positions.append(positions[m + v])
                v += 1
        for (name, _kind, key, value, code, word), position in malformed_positions:
            assert position in by_position, f"{name}: not dead-lettered"
            rec, letter = by_position[position]
            assert letter["error_code"] == code, (name, letter["error"])
            assert word.lower() in letter["error"].lower(), (name, letter["error"])
            assert rec.key == key, name  # the dead letter keeps the original key
            if value is None:
                assert letter["value"] is None
            else:
                if letter.get("value_encoding") == "base64":
                    copy = base64.b64decode(letter["value"])
                else:
                    copy = letter["value"].encode()
                # A copy is whole unless the value is over the dead letter's bound (64 KiB):
                # then it is a prefix, and the length and hash tell the original.
                assert letter["value_truncated"] is (len(value) > 64 * 1024), name
                assert value.startswith(copy) and (letter["value_truncated"] or copy == value)
                assert letter["value_bytes"] == len(value), name
                assert letter["value_sha256"] == hashlib.sha256(value).hexdigest(), name
            if key is not None and letter.get("key_encoding") == "base64":
                assert base64.b64decode(letter["key"]) == key, name
            elif key is not None:
                assert letter["key"].encode() == key, name
        for position in valid_positions:
            assert position not in by_position

        # Then: every valid event was accepted, counted by its type.
        for kind, event in VALID:
            topic = topics.account_events if kind == "account" else topics.usage_events
            expected = sum(1 for k, e in VALID if k == kind and e["type"] == event["type"])
            assert (
                worker.metric("lifecycle_events_consumed_total", topic=topic, type=event["type"])
                == expected
            ), event["type"]
        assert worker.proc is not None and worker.proc.poll() is None, "the worker stopped"
    finally:
        code = worker.stop()
    assert code == 0, worker.log_text()[-3000:]


@pytest.mark.parametrize("kind", ["account", "usage"])
def test_dead_letters_survive_a_restart_of_the_worker(
    dev_stack: DevStack, tmp_path: Path, kind: str
) -> None:
    """A bad record is dead-lettered once per processing; after a clean restart it is not lost
    nor re-processed (its offset was committed with the dead letter flushed)."""
    topics = unique_topics("restart")
    config = write_config(tmp_path / "config.yaml", topics)
    app_id = f"restart-{topics.account_events[8:18]}"
    first = WorkerProcess(dev_stack, config, app_id, tmp_path / "state").start()
    try:
        first.wait_ready()
        run(_produce_all(dev_stack.bootstrap_servers, topics, [(kind, b"c1", b"garbage")]))
        assert len(run(consume(dev_stack.bootstrap_servers, topics.dead_letters, until=1))) == 1
    finally:
        assert first.stop() == 0
    second = WorkerProcess(dev_stack, config, app_id, tmp_path / "state").start()
    try:
        second.wait_ready()
        run(_produce_all(dev_stack.bootstrap_servers, topics, [(kind, b"c1", b"{")]))
        dead = run(consume(dev_stack.bootstrap_servers, topics.dead_letters, until=2, settle=3))
        assert [orjson.loads(r.value)["value"] for r in dead] == ["garbage", "{"]
    finally:
        assert second.stop() == 0
