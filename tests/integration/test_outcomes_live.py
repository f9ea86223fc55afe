"""Outcome records from a live worker (real broker, real Redis ledger).

Given customers whose air filter comes due for replacement, half of the customers held out
(``policy.holdout_rate: 0.5``) and half of each arm buying a filter after the decision, when the
stream time passes every attribution window, then every decision has one outcome record on
``decision-outcomes`` that says whether it converted (by the planted purchase, with its event
id and amount), with the arm and channel the ledger decided, the counter
``lifecycle_outcomes_total`` counts them by arm, and ``lifecycle-triggers report`` reads them
from the topic.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

from streams.core.timeutil import MS_PER_DAY, format_ms, parse_rfc3339_ms
from streams.tools.devstack import DevStack
from tests.integration.test_triggers_live import _produce
from tests.support import (
    WorkerProcess,
    key_on_partition,
    published_decisions,
    run,
    unique_topics,
    write_config,
)

PARTITIONS = 4
CUSTOMERS = 24
START_MS = parse_rfc3339_ms("2025-03-03T00:00:00Z") or 0


def _event(customer: str, event_id: str, day: float, **fields: Any) -> tuple[int, bytes]:
    at = START_MS + round(day * MS_PER_DAY)
    body = {"event_id": event_id, "customer_id": customer, "occurred_at": format_ms(at), **fields}
    return at, orjson.dumps(body)


def _records(tag: str) -> tuple[list[tuple[str, int | None, str, bytes]], dict[str, str]]:
    """The input, and the converting purchase's event id of each customer who converts."""
    timeline: list[tuple[int, int | None, str, bytes]] = []
    converts: dict[str, str] = {}
    for i in range(CUSTOMERS):
        cid = f"out-{tag}-{i}"
        at, value = _event(cid, f"{cid}-first", 0, type="purchase",
                           product_category="air_filter", amount=19.99)  # fmt: skip
        timeline.append((at, None, cid, value))
        if i % 2 == 0:
            # The filter is due on day 90; bought on day 100, inside the 30-day window (the next
            # one comes due after the stream ends).
            converts[cid] = f"{cid}-again"
            at, value = _event(cid, converts[cid], 100, type="purchase",
                               product_category="air_filter", amount=21.5)  # fmt: skip
            timeline.append((at, None, cid, value))
    for p in range(PARTITIONS):
        clock = key_on_partition(f"clock-{tag}-p{p}", p, PARTITIONS)
        for day in range(0, 161, 2):
            at, value = _event(clock, f"{clock}-{day}", day, type="profile")
            timeline.append((at, p, clock, value))
    timeline.sort(key=lambda r: r[0])
    return [("usage", p, key, value) for _, p, key, value in timeline], converts


def test_every_decision_gets_one_outcome_with_its_arm(dev_stack: DevStack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    records, converts = _records(tag)
    topics = unique_topics("outc")
    config = write_config(tmp_path / "config.yaml", topics, {"policy": {"holdout_rate": 0.5}})
    worker = WorkerProcess(dev_stack, config, f"outc-{tag}", tmp_path / "w", partitions=PARTITIONS)
    worker.start()
    try:
        worker.wait_ready()
        run(_produce(dev_stack.bootstrap_servers, topics, records))
        bootstrap = dev_stack.bootstrap_servers
        decisions = {
            d["decision_id"]: d
            for d in published_decisions(
                bootstrap, topics.contact_decisions, CUSTOMERS, 90, 2.0, distinct=True
            )
        }
        outcomes = published_decisions(
            bootstrap, topics.decision_outcomes, CUSTOMERS, 90, 2.0, distinct=True
        )
        counted = {
            (arm, converted): worker.metric(
                "lifecycle_outcomes_total", trigger="replacement_due", arm=arm, converted=converted
            )
            for arm in ("contact", "holdout")
            for converted in ("true", "false")
        }
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]

    assert len(decisions) == CUSTOMERS
    assert {d["trigger"] for d in decisions.values()} == {"replacement_due"}
    by_id = {o["decision_id"]: o for o in outcomes}
    assert len(outcomes) == len(by_id) == CUSTOMERS  # one each, none re-published
    assert set(by_id) == set(decisions)
    arms: collections.Counter[tuple[str, bool]] = collections.Counter()
    for i, outcome in by_id.items():
        decision = decisions[i]
        customer = decision["customer_id"]
        assert outcome["customer_id"] == customer and outcome["trigger"] == "replacement_due"
        assert (outcome["arm"], outcome["channel"]) == (decision["outcome"], decision["channel"])
        assert outcome["action"] == decision["action"]
        assert outcome["decided_at"] == decision["decided_at"]
        assert outcome["converted"] is (customer in converts)
        if customer in converts:
            assert outcome["converting_event_id"] == converts[customer]
            assert outcome["value"] == 21.5
        arms[(outcome["arm"], outcome["converted"])] += 1
    # Both arms are there (the holdout hash splits 24 customers), each with conversions.
    assert {arm for arm, _ in arms} == {"contact", "holdout"}
    assert counted == {
        (arm, converted): float(arms[(arm, converted == "true")]) for arm, converted in counted
    }

    # The report reads the topic and computes the lift from these records.
    shown = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--bootstrap-servers",
         dev_stack.bootstrap_servers, "--topic", topics.decision_outcomes, "--format", "json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = orjson.loads(shown.stdout)
    assert report["decisions"] == CUSTOMERS
    [row] = [r for r in report["rows"] if r["trigger"] == "replacement_due"]
    assert (row["contacted"], row["contacted_conversions"]) == (
        arms[("contact", True)] + arms[("contact", False)],
        arms[("contact", True)],
    )
    assert (row["holdout"], row["holdout_conversions"]) == (
        arms[("holdout", True)] + arms[("holdout", False)],
        arms[("holdout", True)],
    )
