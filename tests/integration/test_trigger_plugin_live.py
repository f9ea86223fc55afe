"""The example trigger plugin (examples/complaint_triggers, installed by the test setup through
its entry point) on a live worker, real broker and Redis, through the testing kit's
``run_live``: the decisions published are exactly the ones the kit's in-process run of the same
stories fires, with the plugin's catalogue entries."""

from __future__ import annotations

from pathlib import Path

from streams.testing import Story
from streams.testing.live import run_live
from streams.tools.devstack import DevStack

ON = {"enabled": True}
CONFIG = {"triggers": {"complaint_streak": ON, "complaint_check_in": ON}}
UNTIL_DAY = 50


def _stories() -> list[Story]:
    # A streak: three complaints within 30 days (and a check-in 14 days after the last one).
    streak = Story(config=CONFIG, customer_id="plugin-streak")
    for day in (0, 5, 10):
        streak.send("complaint", day, category="billing")
    # The near-miss: two complaints 31 days apart (no streak; a check-in after each).
    near = Story(config=CONFIG, customer_id="plugin-near-miss")
    for day in (0, 31):
        near.send("complaint", day, category="billing")
    for story in (streak, near):
        story.run_until(UNTIL_DAY)
    return [streak, near]


def test_the_example_plugin_fires_on_a_live_worker(dev_stack: DevStack, tmp_path: Path) -> None:
    # Given the stories, and what the kit's in-process run of them fires
    stories = _stories()
    expected = sorted((c.customer_id, c.trigger, c.instance) for s in stories for c in s.fired)
    assert [t for _, t, _ in expected].count("complaint_streak") == 1  # only the planted one
    assert len(expected) == 4
    # When they go through a live worker with the plugin enabled
    published = run_live(
        stories,
        bootstrap_servers=dev_stack.bootstrap_servers,
        redis_url=dev_stack.redis_url,
        workdir=tmp_path,
        config=CONFIG,
        expect=len(expected),
        until_day=UNTIL_DAY,
    )
    # Then the worker published exactly those decisions, with the plugin's catalogue entries
    got = sorted((d["customer_id"], d["trigger"], d["instance"]) for d in published)
    assert got == expected
    for d in published:
        entry = {
            "complaint_streak": ("service_recovery_call", "phone", "service"),
            "complaint_check_in": ("complaint_check_in", "email", "marketing"),
        }[d["trigger"]]
        assert (d["action"], d["channel"], d["category"]) == entry, d
    (streak,) = [d for d in published if d["trigger"] == "complaint_streak"]
    assert streak["outcome"] == "contact"  # a service message: the complaint does not stop it
