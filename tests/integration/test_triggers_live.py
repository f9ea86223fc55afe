"""The whole trigger catalogue on live streams, on the real broker, with the event clock.

Given planted scenarios for every built-in trigger and a near-miss for each
(streams/tools/scenarios.py),
produced in event-time order to a worker with ``--clock event``, when stream time moves past
the point where every planted occurrence is due, then the published decisions are exactly the
planted ones: nothing missing, nothing extra, each with the catalogue's action and channel.
Time-based triggers can only fire from the due-time index here: when they come due, the only
input of their partition may be clock events of an unrelated customer.

A second test restarts the worker mid-stream (SIGTERM, then SIGKILL) and gets the same
decisions (re-published ones only with their first outcome) and the same final state.
"""

from __future__ import annotations

import collections
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.config import build_config
from streams.core.events import ACCOUNT_EVENT_TYPES
from streams.core.timeutil import MS_PER_DAY, format_ms, parse_rfc3339_ms
from streams.kafka.topics import TopicNames
from streams.tools.devstack import DevStack
from streams.tools.scenarios import SETTLE_DAYS, Scenario, all_scenarios
from tests.support import (
    WorkerProcess,
    consume,
    decision_id,
    end_offsets,
    key_on_partition,
    published_decisions,
    read_changelog,
    run,
    unique_topics,
    write_config,
)

START_MS = parse_rfc3339_ms("2024-01-01T00:00:00Z") or 0
PARTITIONS = 4
# The contract's catalogue, written out again on purpose: the test checks the code against it.
CATALOGUE = {
    "savings_drop_to_checking": ("loan_offer", "email", "marketing"),
    "savings_drop_to_wire": ("investment_advisor_call", "phone", "marketing"),
    "savings_drop_unexplained": ("retention_check_in", "email", "marketing"),
    "renewal_after_positive_visit": ("renewal_offer", "email", "marketing"),
    "renewal_reminder": ("renewal_reminder", "email", "marketing"),
    "auto_renew_confirmation": ("payment_confirmation", "email", "service"),
    "auto_renew_unused": ("usage_check_in", "email", "service"),
    "lapsed_transactor": ("reactivation_cashback", "email", "marketing"),
    "lapsed_revolver": ("reactivation_balance_transfer", "email", "marketing"),
    "never_activated": ("activation_nudge", "email", "marketing"),
    "replacement_due": ("replacement_reminder", "email", "marketing"),
    "usual_booking_missed": ("rebooking_offer", "email", "marketing"),
    "savings_drop_to_own_investment": ("investment_welcome", "email", "marketing"),
    "savings_drop_to_loan_payoff": ("credit_review", "email", "marketing"),
    "usage_lapsed": ("usage_win_back", "email", "marketing"),
    "price_increase_at_risk": ("retention_call", "phone", "marketing"),
}
ACCOUNT_TYPES = set(ACCOUNT_EVENT_TYPES)
# No holdouts, so that every planted decision is a contact and outcomes are comparable.
POLICY = {"policy": {"holdout_rate": 0}}


def _records(
    scenarios: list[Scenario], tag: str, partitions: int = PARTITIONS
) -> list[tuple[str, int | None, str, bytes]]:
    """(kind, partition or None, key, value) in event-time order.

    Besides the scenarios, every partition gets a clock event every two days from an unrelated
    customer, as a busy partition would: stream time moves steadily instead of jumping, so
    time-based decisions are made near their due time (a jump would decide both renewal
    reminders at one moment, and the trigger cooldown would rightly suppress the second).
    """
    timeline: list[tuple[int, str, int | None, str, bytes]] = []
    for e in (e for s in scenarios for e in s.events):
        kind = "account" if e["type"] in ACCOUNT_TYPES else "usage"
        at = parse_rfc3339_ms(e["occurred_at"]) or 0
        timeline.append((at, kind, None, e["customer_id"], orjson.dumps(e)))
    for p in range(partitions):
        cid = key_on_partition(f"clock-{tag}-p{p}", p, partitions)
        for day in range(0, SETTLE_DAYS + 1, 2):
            at = START_MS + day * MS_PER_DAY
            clock_event = {
                "event_id": f"{cid}-{day}",
                "customer_id": cid,
                "type": "profile",
                "occurred_at": format_ms(at),
            }
            timeline.append((at, "usage", p, cid, orjson.dumps(clock_event)))
    timeline.sort(key=lambda r: r[0])
    return [(kind, partition, key, value) for _, kind, partition, key, value in timeline]


async def _produce(
    bootstrap: str, topics: TopicNames, records: list[tuple[str, int | None, str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for kind, partition, key, value in records:
            topic = topics.account_events if kind == "account" else topics.usage_events
            futures.append(await producer.send(topic, value, key=key.encode(), partition=partition))
        for f in futures:
            await f
    finally:
        await producer.stop()


def _expected(scenarios: list[Scenario]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(
        {(s.customer_id, t): n for s in scenarios for t, n in s.expected.items()}
    )


def _decisions(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def _check_catalogue(decisions: list[dict[str, Any]]) -> None:
    for d in decisions:
        action, channel, category = CATALOGUE[d["trigger"]]
        assert (d["action"], d["channel"], d["category"]) == (action, channel, category), d
        assert d["outcome"] == "contact", d
        assert d["evidence"], d


def _start(
    stack: DevStack,
    tmp: Path,
    topics: TopicNames,
    app_id: str,
    store: str = "memory",
    clock: str = "event",
    extra_env: dict[str, str] | None = None,
) -> WorkerProcess:
    config = write_config(tmp / f"{app_id}.yaml", topics, POLICY)
    worker = WorkerProcess(
        stack,
        config,
        app_id,
        tmp / f"{app_id}-state",
        partitions=PARTITIONS,
        clock=clock,
        store=store,
        extra_env=extra_env or {},
    )
    worker.start()
    worker.wait_ready()
    return worker


def test_every_planted_trigger_fires_and_no_near_miss_does(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    scenarios = all_scenarios(START_MS, prefix=f"live-{tag}")
    expected = _expected(scenarios)
    assert {t for _, t in expected} == set(CATALOGUE)  # every trigger is planted
    topics = unique_topics("live")
    worker = _start(dev_stack, tmp_path, topics, f"live-{tag}")
    try:
        run(_produce(dev_stack.bootstrap_servers, topics, _records(scenarios, tag)))
        published = published_decisions(
            dev_stack.bootstrap_servers,
            topics.contact_decisions,
            until=sum(expected.values()),
            timeout=90,
            settle=5,
        )
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    got = collections.Counter((d["customer_id"], d["trigger"]) for d in published)
    missing = expected - got
    extra = got - expected
    assert not missing and not extra, f"missing {dict(missing)}, unexpected {dict(extra)}"
    # One decision per occurrence: distinct ids, stable instances.
    assert len({d["decision_id"] for d in published}) == len(published)
    _check_catalogue(published)
    # Due items fire when stream time reaches them: within one clock step (2 days) of the due
    # time, even where nothing of the customer arrives any more.
    for d in published:
        late = (parse_rfc3339_ms(d["decided_at"]) or 0) - (parse_rfc3339_ms(d["triggered_at"]) or 0)
        assert 0 <= late <= 2 * MS_PER_DAY, d


def _final_state(stack: DevStack, app_id: str) -> dict[bytes, bytes]:
    return run(read_changelog(stack.bootstrap_servers, f"{app_id}-customers-changelog"))


@pytest.mark.parametrize(
    ("sig", "store"),
    [
        (signal.SIGTERM, "rocksdb"),
        (signal.SIGKILL, "memory"),
        (signal.SIGKILL, "rocksdb"),
    ],
    ids=["sigterm", "sigkill", "sigkill-rocksdb"],
)
def test_restart_mid_stream_gives_the_same_decisions_and_state(
    dev_stack: DevStack, tmp_path: Path, sig: int, store: str
) -> None:
    from streams.core.adapter import build_core

    core = build_core(build_config())
    tag = uuid.uuid4().hex[:8]
    scenarios = all_scenarios(START_MS, prefix=f"restart-{tag}")
    expected_total = sum(_expected(scenarios).values())
    records = _records(scenarios, tag)

    # The reference: one uninterrupted run.
    ref_topics = unique_topics("ref")
    ref = _start(dev_stack, tmp_path, ref_topics, f"ref-{tag}")
    try:
        run(_produce(dev_stack.bootstrap_servers, ref_topics, records))
        reference = _decisions(
            run(
                consume(
                    dev_stack.bootstrap_servers,
                    ref_topics.contact_decisions,
                    until=expected_total,
                    timeout=90,
                    settle=5,
                )
            )
        )
    finally:
        assert ref.stop() == 0
    ref_state = _final_state(dev_stack, f"ref-{tag}")

    # The same input, with the worker stopped once in the middle of it. A RocksDB worker
    # comes back on its own state directory (after SIGTERM a warm restart; after SIGKILL its
    # databases hold every write RocksDB's write-ahead log kept, and the changelogs the
    # rest); a memory worker recovers everything from the changelog.
    topics = unique_topics("cut")
    app_id = f"cut-{tag}"
    # The killed worker commits its input offsets rarely, so that the kill surely lands
    # between state written to the changelog and the offset commit (the case the replay skip
    # is for), however fast it gets through the input.
    slow_commits = {"KAFKA_COMMIT_INTERVAL": "60"} if sig == signal.SIGKILL else None
    first = _start(dev_stack, tmp_path, topics, app_id, store=store, extra_env=slow_commits)
    run(_produce(dev_stack.bootstrap_servers, topics, records))
    deadline = time.monotonic() + 60
    while (
        first.metric(
            "lifecycle_decisions_total", trigger="savings_drop_to_checking", outcome="contact"
        )
        < 1
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    if sig == signal.SIGKILL:
        # ...and only once some state reached the changelog (decisions come before state).
        changelog = f"{app_id}-customers-changelog"
        while not any(run(end_offsets(dev_stack.bootstrap_servers, changelog, 1)).values()):
            assert time.monotonic() < deadline, "no state in the changelog within 60 s"
            time.sleep(0.05)
    first.stop(sig)
    second = _start(dev_stack, tmp_path, topics, app_id, store=store)
    try:
        published = _decisions(
            run(
                consume(
                    dev_stack.bootstrap_servers,
                    topics.contact_decisions,
                    until=expected_total,
                    timeout=120,
                    settle=5,
                    distinct=decision_id,
                )
            )
        )
        replayed = sum(
            second.metric("lifecycle_events_replayed_total", kind=kind)
            for kind in ("account", "usage")
        )
        if sig == signal.SIGKILL:
            # The kill came between changelog writes and the offset commit: the successor
            # re-read input whose state was already restored, and skipped it.
            assert replayed > 0
    finally:
        assert second.stop() == 0, second.log_text()[-3000:]
    state = _final_state(dev_stack, app_id)

    # Then: the same decisions; a re-published one carries its first outcome.
    outcomes: dict[str, set[str]] = collections.defaultdict(set)
    for d in published:
        outcomes[d["decision_id"]].add(d["outcome"])
    assert all(len(o) == 1 for o in outcomes.values()), outcomes
    key = ("customer_id", "trigger", "instance", "outcome")
    assert {tuple(d[k] for k in key) for d in published} == {
        tuple(d[k] for k in key) for d in reference
    }
    # And the same final state, customer by customer.
    assert set(state) == set(ref_state)
    for customer, raw in state.items():
        assert core.load(raw) == core.load(ref_state[customer]), customer


def test_wall_clock_fires_due_items_from_ticks(dev_stack: DevStack, tmp_path: Path) -> None:
    """With ``--clock wall``, a reminder comes due a few seconds after the only event of its
    customer: nothing else arrives, so only the worker's clock ticks can fire it."""
    tag = uuid.uuid4().hex[:8]
    topics = unique_topics("wall")
    worker = _start(dev_stack, tmp_path, topics, f"wall-{tag}", clock="wall")
    try:
        now = int(time.time() * 1000)
        due = now + 3_000  # the T-30 reminder: expiry 30 days and 3 s from now
        contract = {
            "event_id": f"w-{tag}-1",
            "customer_id": f"w-{tag}",
            "type": "contract",
            "occurred_at": format_ms(now),
            "contract_id": "k",
            "product": "auto_insurance",
            "status": "active",
            "expires_at": format_ms(due + 30 * MS_PER_DAY),
            "auto_renew": False,
        }
        run(
            _produce(
                dev_stack.bootstrap_servers,
                topics,
                [("account", None, contract["customer_id"], orjson.dumps(contract))],
            )
        )
        published = published_decisions(
            dev_stack.bootstrap_servers,
            topics.contact_decisions,
            until=1,
            timeout=60,
            settle=1,
        )
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    assert [(d["trigger"], d["triggered_at"]) for d in published] == [
        ("renewal_reminder", format_ms(due))
    ]
    # Never before its time: the wall clock had reached the due time when it was decided.
    assert (parse_rfc3339_ms(published[0]["decided_at"]) or 0) >= due
