"""Sunset, bounces, capacity and per-product reminder days through a real worker, broker and Redis.

Given `policy.capacity.loan_offer: {per_day: 1}` and `policy.sunset.after_unanswered: 1`, and
four customers whose savings drop to checking completes (an e-mail `loan_offer`):

- two on the same day: the first is contacted, the second suppressed with `capacity`;
- one whose e-mail bounced before: suppressed with `undeliverable`;
- one another unit already e-mailed, unanswered (recorded through the ledger API): suppressed
  with `sunset`.

Each rule is unit-tested on both sides of its threshold (tests/unit) and in the ledger on the
real Redis (tests/integration/test_ledger.py); this is the worker end to end.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson

from streams.config import build_config
from streams.core.policy import Policy
from streams.core.timeutil import MS_PER_DAY, format_ms, parse_rfc3339_ms
from streams.ledger import ContactLedger
from streams.tools.devstack import DevStack
from streams.tools.scenarios import build
from tests.integration.test_policy_extensions_live import _produce
from tests.support import WorkerProcess, consume, run, unique_topics, write_config

HOUR = MS_PER_DAY // 24
START = parse_rfc3339_ms("2023-08-01T09:00:00Z") or 0
TRIGGER_DAY = 93  # savings_drop_to_checking completes with the credit on day 93
POLICY: dict[str, Any] = {
    "policy": {
        "holdout_rate": 0,
        "capacity": {"loan_offer": {"per_day": 1}},
        "sunset": {"enabled": True, "after_unanswered": 1},
    }
}


def test_capacity_bounces_and_sunset_suppress_in_a_live_worker(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    first, second = f"cap1-{tag}", f"cap2-{tag}"
    bounced, sunset = f"bounce-{tag}", f"sunset-{tag}"
    starts = {first: START, second: START + HOUR, bounced: START + 3 * MS_PER_DAY,
              sunset: START + 6 * MS_PER_DAY}  # fmt: skip
    events: list[dict[str, Any]] = []
    for customer, start in starts.items():
        events += build("savings_drop_to_checking", customer, start).events
    events.append(
        {
            "event_id": f"{bounced}-bounce",
            "customer_id": bounced,
            "type": "engagement",
            "occurred_at": format_ms(starts[bounced] + 80 * MS_PER_DAY),
            "channel": "email",
            "action": "bounced",
        }
    )
    topics = unique_topics("rules")
    app_id = f"rules-{tag}"
    config = write_config(
        tmp_path / "rules.yaml", topics, {**POLICY, "stream": {"repartition": "off"}}
    )

    async def outside_contact() -> None:
        policy = Policy.from_config(build_config(POLICY)["policy"])
        async with ContactLedger(dev_stack.redis_url, policy, namespace=app_id) as ledger:
            at = starts[sunset] + (TRIGGER_DAY - 20) * MS_PER_DAY
            assert await ledger.record_outside_contact(sunset, "email", at, "cards", "mail-1")

    asyncio.run(outside_contact())
    worker = WorkerProcess(dev_stack, config, app_id, tmp_path / "state", partitions=1)
    worker.start()
    try:
        worker.wait_ready()
        run(_produce(dev_stack.bootstrap_servers, topics, events))
        records = run(
            consume(
                dev_stack.bootstrap_servers, topics.contact_decisions, until=4, timeout=90, settle=3
            )
        )
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    decisions = {d["customer_id"]: d for d in (orjson.loads(r.value) for r in records)}
    assert len(records) == 4 and set(decisions) == set(starts)
    assert {d["trigger"] for d in decisions.values()} == {"savings_drop_to_checking"}
    got = {c: (d["outcome"], d["reasons"]) for c, d in decisions.items()}
    assert got == {
        first: ("contact", []),
        second: ("suppressed", ["capacity"]),
        bounced: ("suppressed", ["undeliverable"]),
        sunset: ("suppressed", ["sunset"]),
    }


def test_renewal_reminder_days_per_product_in_a_live_worker(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """`triggers.renewal_reminder.days_before_by_product` gives auto insurance one reminder
    14 days ahead, while another product keeps the global 30 and 7 days."""
    tag = uuid.uuid4().hex[:8]
    insured, member = f"ins-{tag}", f"gym-{tag}"
    expiry = START + 120 * MS_PER_DAY

    def contract(customer: str, product: str) -> dict[str, Any]:
        return {
            "event_id": f"{customer}-c",
            "customer_id": customer,
            "type": "contract",
            "occurred_at": format_ms(START),
            "contract_id": "k1",
            "product": product,
            "status": "active",
            "expires_at": format_ms(expiry),
            "auto_renew": False,
        }

    clock = {
        "event_id": f"clock-{tag}",
        "customer_id": f"clock-{tag}",
        "type": "profile",
        "occurred_at": format_ms(expiry - MS_PER_DAY),
    }
    topics = unique_topics("perproduct")
    extra = {
        "policy": {"holdout_rate": 0},
        "triggers": {"renewal_reminder": {"days_before_by_product": {"auto_insurance": [14]}}},
        "stream": {"repartition": "off"},
    }
    config = write_config(tmp_path / "pp.yaml", topics, extra)
    worker = WorkerProcess(dev_stack, config, f"pp-{tag}", tmp_path / "state", partitions=1)
    worker.start()
    try:
        worker.wait_ready()
        events = [contract(insured, "auto_insurance"), contract(member, "gym"), clock]
        run(_produce(dev_stack.bootstrap_servers, topics, events))
        records = run(
            consume(
                dev_stack.bootstrap_servers, topics.contact_decisions, until=3, timeout=90, settle=3
            )
        )
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    got = sorted(
        (d["customer_id"], d["trigger"], (expiry - (parse_rfc3339_ms(d["triggered_at"]) or 0))
         // MS_PER_DAY)
        for d in (orjson.loads(r.value) for r in records)
    )  # fmt: skip
    assert got == [
        (member, "renewal_reminder", 7),
        (member, "renewal_reminder", 30),
        (insured, "renewal_reminder", 14),
    ]
