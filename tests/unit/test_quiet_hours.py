"""Quiet hours: marketing on a quiet channel waits for the end of the customer's quiet hours.

The rule itself (``QuietHours``) on both sides of each edge, across midnight, in other time
zones and over a DST change; then the processing shell with the real trigger core: a planted
``savings_drop_to_wire`` (phone) that fires at night is published only once the customer's
morning has come, with its first ``triggered_at`` and the deferral in ``policy.deferred``, and
the deferred decision survives a restart (it lives in the customer's record and the due index).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest

from streams.config import build_config, default_policy
from streams.core.adapter import build_core
from streams.core.clock import Clock
from streams.core.decisions import Decision
from streams.core.errors import ConfigError
from streams.core.events import ACCOUNT_EVENT_TYPES
from streams.core.ingest import Decoder
from streams.core.policy import Policy, QuietHours
from streams.core.state import CustomerState
from streams.core.timeutil import MS_PER_DAY, format_ms, parse_rfc3339_ms
from streams.kafka.processor import ContactAll, Processor, Stores
from streams.ops.metrics import Metrics
from streams.tools.scenarios import build

MINUTE = 60_000
HOUR = 60 * MINUTE


def at(text: str) -> int:
    ms = parse_rfc3339_ms(text)
    assert ms is not None
    return ms


NIGHT = QuietHours(21 * 60, 8 * 60, frozenset({"sms", "phone", "push"}), "UTC")


@pytest.mark.parametrize(
    ("now", "timezone", "until"),
    [
        ("2026-03-01T20:59:59Z", None, None),  # one second before the start
        ("2026-03-01T21:00:00Z", None, "2026-03-02T08:00:00Z"),  # at the start
        ("2026-03-01T23:59:00Z", None, "2026-03-02T08:00:00Z"),
        ("2026-03-02T00:00:00Z", None, "2026-03-02T08:00:00Z"),  # after midnight: same morning
        ("2026-03-02T07:59:59Z", None, "2026-03-02T08:00:00Z"),
        ("2026-03-02T08:00:00Z", None, None),  # the end is not quiet any more
        # 21:30 UTC is 22:30 in Berlin (CET): quiet until 08:00 CET = 07:00 UTC.
        ("2026-03-01T21:30:00Z", "Europe/Berlin", "2026-03-02T07:00:00Z"),
        # 20:30 UTC is 21:30 in Berlin: quiet there, not in UTC.
        ("2026-03-01T20:30:00Z", "Europe/Berlin", "2026-03-02T07:00:00Z"),
        # Berlin moves to CEST on 2026-03-29: 08:00 CEST = 06:00 UTC.
        ("2026-03-28T22:00:00Z", "Europe/Berlin", "2026-03-29T06:00:00Z"),
        # 12:00 UTC is 07:00 in New York (EST): quiet until 08:00 EST = 13:00 UTC.
        ("2026-03-01T12:00:00Z", "America/New_York", "2026-03-01T13:00:00Z"),
        # An unknown zone falls back to the configured one (UTC): 12:00 is not quiet.
        ("2026-03-01T12:00:00Z", "Mars/Olympus_Mons", None),
    ],
)
def test_quiet_until_on_both_sides_of_each_edge(
    now: str, timezone: str | None, until: str | None
) -> None:
    got = NIGHT.quiet_until(at(now), timezone)
    assert (None if got is None else format_ms(got)) == (
        None if until is None else format_ms(at(until))
    )


def test_daytime_quiet_hours_and_the_configured_zone() -> None:
    lunch = QuietHours(12 * 60, 14 * 60, frozenset({"phone"}), "Asia/Tokyo")  # UTC+9
    assert lunch.quiet_until(at("2026-03-01T02:59:00Z"), None) is None  # 11:59
    assert lunch.quiet_until(at("2026-03-01T03:00:00Z"), None) == at("2026-03-01T05:00:00Z")
    assert lunch.quiet_until(at("2026-03-01T05:00:00Z"), None) is None  # 14:00


def test_configuration_builds_quiet_hours_only_when_enabled() -> None:
    assert default_policy().quiet_hours is None
    policy = Policy.from_config(
        build_config(
            {"policy": {"quiet_hours": {"enabled": True, "start": "22:30", "end": "07:15"}}}
        )["policy"]
    )
    assert policy.quiet_hours == QuietHours(
        22 * 60 + 30, 7 * 60 + 15, frozenset({"sms", "phone", "push"}), "UTC"
    )


@pytest.mark.parametrize(
    ("quiet", "message"),
    [
        ({"start": "7:00"}, "policy.quiet_hours.start: must be a local time HH:MM"),
        ({"end": "24:00"}, "policy.quiet_hours.end: must be a local time HH:MM"),
        ({"timezone": "Europe/Atlantis"}, "policy.quiet_hours.timezone: 'Europe/Atlantis'"),
        ({"channels": ["pager"]}, "policy.quiet_hours.channels: must be a list"),
        ({"enabled": "yes"}, "policy.quiet_hours.enabled: must be true or false"),
        ({"start": "08:00", "end": "08:00"}, "policy.quiet_hours: start and end are both"),
        ({"begin": "21:00"}, "policy.quiet_hours.begin: unknown key"),
    ],
)
def test_bad_quiet_hours_are_refused_naming_the_key(quiet: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"policy": {"quiet_hours": quiet}})
    assert message in str(err.value)


# -- the shell with the real core ---------------------------------------------------------------

# Day 92 of the scenario is the drop that completes savings_drop_to_wire (phone): at 23:00 UTC,
# which is midnight in Berlin. Quiet there until 08:00 CET = 07:00 UTC the next day.
START = at("2023-08-01T23:00:00Z")  # day 92: 2023-11-01, CET (UTC+1)
DROP = START + 92 * MS_PER_DAY
MORNING = DROP + 8 * HOUR  # 07:00 UTC


class Collect:
    def __init__(self) -> None:
        self.sent: list[Decision] = []

    async def __call__(self, decision: Decision) -> Any:
        self.sent.append(decision)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _processor(stores: Stores, publish: Collect, quiet: QuietHours | None) -> Processor:
    config = build_config({"policy": {"holdout_rate": 0}})
    return Processor(
        build_core(config),
        stores,
        Clock("event"),
        ContactAll(),
        publish,
        Metrics(),
        quiet_hours=quiet,
    )


def _events(timezone: str | None) -> list[dict[str, Any]]:
    scenario = build("savings_drop_to_wire", "c-night", START)
    events = list(scenario.events)
    if timezone is not None:
        events.insert(
            0,
            {
                "event_id": "c-night-tz",
                "customer_id": "c-night",
                "type": "profile",
                "occurred_at": format_ms(START),
                "timezone": timezone,
            },
        )
    return events


def _clock_event(ms: int) -> dict[str, Any]:
    return {
        "event_id": f"clock-{ms}",
        "customer_id": "c-clock",
        "type": "profile",
        "occurred_at": format_ms(ms),
    }


class Feed:
    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.offsets = {"account": 0, "usage": 0}
        self.decoder = Decoder()

    def __call__(self, events: list[dict[str, Any]]) -> None:
        async def go() -> None:
            for e in events:
                kind = "account" if e["type"] in ACCOUNT_EVENT_TYPES else "usage"
                at_ms = parse_rfc3339_ms(e["occurred_at"]) or 0
                event = self.decoder.decode(kind, e["customer_id"].encode(), orjson.dumps(e), at_ms)
                await self.processor.on_event(kind, 0, self.offsets[kind], event)
                self.offsets[kind] += 1

        asyncio.run(go())


def _wire(sent: list[Decision]) -> list[Decision]:
    return [d for d in sent if d.candidate.trigger == "savings_drop_to_wire"]


def test_a_night_decision_waits_for_the_customers_morning_and_survives_a_restart() -> None:
    stores = Stores({}, {}, {})
    sent = Collect()
    feed = Feed(_processor(stores, sent, NIGHT))
    feed(_events("Europe/Berlin"))
    assert _wire(sent.sent) == []  # fired at midnight in Berlin: deferred, nothing published
    record = CustomerState.from_bytes(stores.customers[b"c-night"])
    assert [(u, c.trigger) for u, _, c in record.deferred] == [(MORNING, "savings_drop_to_wire")]
    assert orjson.loads(stores.due[b"c-night"])[1] == MORNING  # the due index knows it

    # A restart: a new processor over the same stores rebuilds its due index from them.
    sent2 = Collect()
    restarted = _processor(stores, sent2, NIGHT)
    asyncio.run(restarted.restore_partitions({0}))
    feed.processor = restarted
    feed([_clock_event(MORNING - 1)])
    assert _wire(sent2.sent) == []  # one millisecond before the end of the quiet hours
    feed([_clock_event(MORNING)])
    (decision,) = _wire(sent2.sent)
    assert decision.outcome == "contact" and decision.channel in ("", "phone")
    assert decision.candidate.triggered_at_ms == DROP  # the occurrence's own time
    assert decision.decided_at_ms == MORNING
    assert decision.details["deferred"] == {"at": DROP, "until": MORNING}
    assert CustomerState.from_bytes(stores.customers[b"c-night"]).deferred == []
    feed([_clock_event(MORNING + 2 * MS_PER_DAY)])
    assert len(_wire(sent2.sent)) == 1  # decided once


def test_without_a_profile_time_zone_the_configured_one_applies() -> None:
    sent = Collect()
    feed = Feed(_processor(Stores({}, {}, {}), sent, NIGHT))
    feed(_events(None))  # 23:00 UTC: quiet in UTC until 08:00 UTC
    assert _wire(sent.sent) == []
    feed([_clock_event(DROP + 9 * HOUR - 1)])
    assert _wire(sent.sent) == []
    feed([_clock_event(DROP + 9 * HOUR)])
    assert [d.decided_at_ms for d in _wire(sent.sent)] == [DROP + 9 * HOUR]


def test_quiet_hours_leave_other_channels_and_times_alone() -> None:
    # The same night without quiet hours, and with quiet hours that do not cover the phone.
    for quiet in (None, dataclasses.replace(NIGHT, channels=frozenset({"sms"}))):
        sent = Collect()
        Feed(_processor(Stores({}, {}, {}), sent, quiet))(_events("Europe/Berlin"))
        assert [d.decided_at_ms for d in _wire(sent.sent)] == [DROP]
        assert "deferred" not in _wire(sent.sent)[0].details
    # In daytime (a scenario starting at 11:00 UTC) the phone decision is made at once.
    sent = Collect()
    day_start = at("2024-01-01T11:00:00Z")
    Feed(_processor(Stores({}, {}, {}), sent, NIGHT))(
        build("savings_drop_to_wire", "c-day", day_start).events
    )
    assert [d.decided_at_ms for d in _wire(sent.sent)] == [day_start + 92 * MS_PER_DAY]


def test_deferred_candidates_round_trip_through_the_record() -> None:
    sent = Collect()
    stores = Stores({}, {}, {})
    Feed(_processor(stores, sent, NIGHT))(_events("Europe/Berlin"))
    raw = stores.customers[b"c-night"]
    state = CustomerState.from_bytes(raw)
    assert state.to_bytes() == raw
    (until, deferred_at, candidate) = state.deferred[0]
    assert (until, deferred_at) == (MORNING, DROP)
    assert candidate.customer_id == "c-night" and candidate.channel == "phone"
    assert candidate.evidence and candidate.decision_id.startswith("d-")
