"""The trigger tests' customer: ``streams.testing.Story`` (the public kit) with the defaults.

``step`` at the stream time, then ``advance`` whenever the clock reaches ``next_due_ms``.
"""

from __future__ import annotations

from streams.config import default_trigger_params
from streams.core.timeutil import parse_rfc3339_ms
from streams.core.triggers import TriggerParams
from streams.testing import START
from streams.testing import Story as KitStory

DAY = 86_400_000
T0 = parse_rfc3339_ms(START) or 0
PARAMS = default_trigger_params()


def at(day: float) -> int:
    return T0 + round(day * DAY)


class Story(KitStory):
    """One customer's events with the given parameters (default: the configuration's)."""

    def __init__(self, params: TriggerParams = PARAMS) -> None:
        super().__init__(params=params)
