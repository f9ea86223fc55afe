"""``lifecycle-triggers report`` reads outcome records from a topic on the real broker.

Given outcome records produced to a three-partition topic, one of them twice (a replay) and
one that is not JSON, when the report reads the topic, then it counts each decision once,
names the bad record, and its lift equals the one computed from the same records in a file.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from streams.tools.devstack import DevStack

TOPIC = "report-test-outcomes"


def _outcomes() -> list[dict[str, object]]:
    out = []
    for i in range(300):
        arm = "holdout" if i % 3 == 0 else "contact"
        converted = (i % 5 == 0) if arm == "contact" else (i % 15 == 0)
        record: dict[str, object] = {
            "decision_id": f"d-{i}",
            "customer_id": f"c-{i % 40}",
            "trigger": "never_activated",
            "action": "activation_nudge",
            "channel": "email",
            "arm": arm,
            "converted": converted,
            "decided_at": "2026-03-01T10:00:00Z",
            "window_end": "2026-03-31T10:00:00Z",
            "schema_version": 1,
        }
        if converted:
            record.update(converted_at="2026-03-02T10:00:00Z", converting_event_id=f"e-{i}")
        out.append(record)
    return out


async def _produce(bootstrap: str, records: list[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for r in [*records, records[7]]:
            await producer.send(TOPIC, orjson.dumps(r), key=str(r["customer_id"]).encode())
        await producer.send(TOPIC, b"{not json", key=b"c-1")
        await producer.flush()
    finally:
        await producer.stop()


def _report(*args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body: dict[str, object] = json.loads(result.stdout)
    return body


def test_the_report_reads_a_topic_like_a_file(dev_stack: DevStack, tmp_path: Path) -> None:
    dev_stack.create_topics((TOPIC,), 3)
    records = _outcomes()
    asyncio.run(_produce(dev_stack.bootstrap_servers, records))
    from_topic = _report("--bootstrap-servers", dev_stack.bootstrap_servers, "--topic", TOPIC)
    path = tmp_path / "o.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    from_file = _report("--file", str(path))

    assert from_topic["decisions"] == 300 and from_topic["repeated_records"] == 1
    skipped = from_topic["skipped"]
    assert isinstance(skipped, list) and len(skipped) == 1 and "not JSON" in skipped[0]
    assert from_topic["rows"] == from_file["rows"]
    row = from_topic["rows"][0]  # type: ignore[index]
    assert row["contacted"] == 200 and row["holdout"] == 100
    assert row["contacted_conversions"] == 40 and row["holdout_conversions"] == 20
