"""The policy's extension points through a real worker, broker and Redis.

Given a configuration with quiet hours (21:00-08:00 on sms, phone and push) and a 30-day cap for
a "wealth" business unit that owns ``savings_drop_to_wire``, when a phone-channel drop-to-wire
completes at midnight in the customer's time zone (Berlin), then nothing is published until
stream time reaches 08:00 there, and then the decision is a contact with its own
``triggered_at`` and the deferral in ``policy.deferred``; and when another customer's wealth
unit already contacted them this month (recorded through the ledger API), the same trigger is
suppressed with ``business_unit_cap`` at once, in daytime.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.config import build_config
from streams.core.events import ACCOUNT_EVENT_TYPES
from streams.core.policy import Policy
from streams.core.timeutil import MS_PER_DAY, format_ms, parse_rfc3339_ms
from streams.kafka.topics import TopicNames
from streams.ledger import ContactLedger
from streams.tools.devstack import DevStack
from streams.tools.scenarios import build
from tests.support import WorkerProcess, consume, run, unique_topics, write_config

HOUR = MS_PER_DAY // 24
NIGHT_START = parse_rfc3339_ms("2023-08-01T23:00:00Z") or 0  # day 92: 2023-11-01, CET
DAY_START = parse_rfc3339_ms("2023-08-01T11:00:00Z") or 0
POLICY: dict[str, Any] = {
    "policy": {
        "holdout_rate": 0,
        "quiet_hours": {"enabled": True, "start": "21:00", "end": "08:00"},
        "trigger_business_units": {"savings_drop_to_wire": "wealth"},
        "business_unit_caps": {"wealth": {"per_30_days": 1}},
    }
}


def _event(customer: str, eid: str, at_ms: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "customer_id": customer,
        "type": "profile",
        "occurred_at": format_ms(at_ms),
        **fields,
    }


async def _produce(bootstrap: str, topics: TopicNames, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for e in sorted(events, key=lambda e: parse_rfc3339_ms(e["occurred_at"]) or 0):
            kind = "account" if e["type"] in ACCOUNT_EVENT_TYPES else "usage"
            topic = topics.account_events if kind == "account" else topics.usage_events
            # One partition: every customer moves the same stream time.
            await producer.send_and_wait(
                topic, orjson.dumps(e), key=e["customer_id"].encode(), partition=0
            )
    finally:
        await producer.stop()


def test_quiet_hours_defer_and_business_unit_caps_suppress(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    night, day, clock = f"night-{tag}", f"day-{tag}", f"clock-{tag}"
    drop_night = NIGHT_START + 92 * MS_PER_DAY  # 23:00 UTC = 00:00 in Berlin
    morning = drop_night + 8 * HOUR  # 08:00 in Berlin
    drop_day = DAY_START + 92 * MS_PER_DAY

    events = [_event(night, f"{night}-tz", NIGHT_START, timezone="Europe/Berlin")]
    events += build("savings_drop_to_wire", night, NIGHT_START).events
    events += build("savings_drop_to_wire", day, DAY_START).events
    # Stream time: up to a minute before the end of the quiet hours, then past it.
    events += [_event(clock, f"{clock}-1", morning - 60_000)]
    events += [_event(clock, f"{clock}-2", morning + HOUR)]

    topics = unique_topics("ext")
    app_id = f"ext-{tag}"
    # Every record goes to partition 0 on purpose, whatever its key hashes to: not misrouted.
    config = write_config(
        tmp_path / "ext.yaml", topics, {**POLICY, "stream": {"repartition": "off"}}
    )

    async def outside_contact() -> None:
        policy = Policy.from_config(build_config(POLICY)["policy"])
        async with ContactLedger(dev_stack.redis_url, policy, namespace=app_id) as ledger:
            await ledger.record_outside_contact(
                day, "direct_mail", drop_day - 3 * MS_PER_DAY, "wealth", "letter-1"
            )

    asyncio.run(outside_contact())
    worker = WorkerProcess(dev_stack, config, app_id, tmp_path / "state", partitions=1)
    worker.start()
    try:
        worker.wait_ready()
        run(_produce(dev_stack.bootstrap_servers, topics, events))
        records = run(
            consume(
                dev_stack.bootstrap_servers,
                topics.contact_decisions,
                until=2,
                timeout=60,
                settle=3,
            )
        )
        assert worker.metric("lifecycle_decisions_deferred_total", trigger="savings_drop_to_wire")
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    decisions = {d["customer_id"]: d for d in (orjson.loads(r.value) for r in records)}
    assert len(records) == 2 and set(decisions) == {night, day}

    deferred = decisions[night]
    assert (deferred["trigger"], deferred["outcome"], deferred["channel"]) == (
        "savings_drop_to_wire",
        "contact",
        "phone",
    )
    assert parse_rfc3339_ms(deferred["triggered_at"]) == drop_night
    # Decided at the first stream time after the end of the quiet hours, not before.
    assert parse_rfc3339_ms(deferred["decided_at"]) == morning + HOUR
    assert deferred["policy"]["deferred"] == {"at": drop_night, "until": morning}
    assert deferred["policy"]["business_unit"]["name"] == "wealth"

    capped = decisions[day]
    assert (capped["outcome"], capped["reasons"]) == ("suppressed", ["business_unit_cap"])
    assert parse_rfc3339_ms(capped["decided_at"]) == drop_day
    assert capped["policy"]["business_unit"] == {
        "name": "wealth",
        "count_7d": 1,
        "count_30d": 1,
        "cap_30d": 1,
    }
