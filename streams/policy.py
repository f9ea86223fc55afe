"""The contact policy as data: caps, windows, cooldown, back-off, holdouts, priorities.

Pure: no Redis, no Faust. ``Policy.from_config`` turns the validated ``policy`` section of the
configuration into a frozen, typed object; the contact ledger (``streams.ledger``) applies it
atomically in Redis, and this module supplies the parts that need no history: holdout
selection, priority order, effective caps for a segment and the channels a candidate may use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from streams.decisions import REASON_CODES, Candidate
from streams.errors import ConfigError
from streams.events import CHANNELS
from streams.timeutil import MS_PER_DAY

MARKETING = "marketing"
SERVICE = "service"
# The global windows are named by the contract (global_cap_7d, global_cap_30d); only the caps
# inside them are configurable.
GLOBAL_WINDOW_7D_MS = 7 * MS_PER_DAY
GLOBAL_WINDOW_30D_MS = 30 * MS_PER_DAY
# How long history is kept beyond the longest window: decisions may be replayed this late (the
# stream's allowed lateness) and must still find their first outcome.
RETENTION_MARGIN_MS = 7 * MS_PER_DAY

_REASON_ORDER = {code: i for i, code in enumerate(REASON_CODES)}


def sort_reasons(codes: Iterable[str]) -> tuple[str, ...]:
    """Reason codes without duplicates, in the contract's order (stable output for audits)."""
    return tuple(sorted(set(codes), key=lambda c: (_REASON_ORDER.get(c, len(_REASON_ORDER)), c)))


def holdout_score(customer_id: str, trigger: str) -> float:
    """A uniform number in [0, 1) that depends only on (customer_id, trigger).

    SHA-256 rather than ``hash()``: it must be the same in every process, on every replay.
    """
    digest = hashlib.sha256(f"{customer_id}\x1f{trigger}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class ChannelCap:
    """At most ``max`` marketing contacts on one channel in any ``days`` rolling days."""

    max: int
    days: int

    @property
    def window_ms(self) -> int:
        return self.days * MS_PER_DAY


@dataclass(frozen=True, slots=True)
class Caps:
    """The caps in force for one customer (segment multiplier applied)."""

    global_7d: int
    global_30d: int
    channels: Mapping[str, ChannelCap]


@dataclass(frozen=True, slots=True)
class Policy:
    """The contact policy: every number of CONTRACT.md's "Contact policy defaults"."""

    holdout_rate: float
    global_cap_7d: int
    global_cap_30d: int
    channel_caps: Mapping[str, ChannelCap]
    segment_cap_multipliers: Mapping[str, int]
    trigger_cooldown_days: int
    non_responder_after: int
    non_responder_max_contacts: int
    non_responder_window_days: int
    complaint_quiet_days: int
    priorities: Mapping[str, int]
    # Per trigger, the channels to try in order when the candidate's own channel is capped or
    # opted out (e.g. email -> push). Empty by default: the contract's behaviour.
    channel_fallbacks: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __post_init__(self) -> None:
        if not 0 <= self.holdout_rate <= 1:
            raise ConfigError(
                f"policy.holdout_rate: must be between 0 and 1, got {self.holdout_rate}"
            )
        for trigger, channels in self.channel_fallbacks.items():
            for channel in channels:
                if channel not in CHANNELS:
                    raise ConfigError(
                        f"policy.channel_fallbacks.{trigger}: unknown channel {channel!r} "
                        f"(known: {', '.join(CHANNELS)})"
                    )
        for channel in CHANNELS:
            if channel not in self.channel_caps:
                raise ConfigError(f"policy.channel_caps.{channel}: missing")

    @classmethod
    def default(cls) -> Policy:
        """The contract's defaults (``DEFAULTS["policy"]`` of the configuration)."""
        from streams.config import build_config

        return cls.from_config(build_config()["policy"])

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> Policy:
        """The policy of a validated ``policy`` configuration section (``config["policy"]``)."""
        caps = section["global_caps"]
        back_off = section["non_responder"]
        fallbacks = section["channel_fallbacks"]
        return cls(
            holdout_rate=float(section["holdout_rate"]),
            global_cap_7d=int(caps["per_7_days"]),
            global_cap_30d=int(caps["per_30_days"]),
            channel_caps=MappingProxyType(
                {
                    name: ChannelCap(int(cap["max"]), int(cap["days"]))
                    for name, cap in section["channel_caps"].items()
                }
            ),
            segment_cap_multipliers=MappingProxyType(dict(section["segment_cap_multipliers"])),
            trigger_cooldown_days=int(section["trigger_cooldown_days"]),
            non_responder_after=int(back_off["after_unanswered"]),
            non_responder_max_contacts=int(back_off["max_contacts"]),
            non_responder_window_days=int(back_off["window_days"]),
            complaint_quiet_days=int(section["complaint_quiet_days"]),
            priorities=MappingProxyType(dict(section["priorities"])),
            # Only triggers that have fallbacks: the configuration lists every trigger.
            channel_fallbacks=MappingProxyType({k: tuple(v) for k, v in fallbacks.items() if v}),
        )

    # -- windows -------------------------------------------------------------------------

    @property
    def cooldown_ms(self) -> int:
        return self.trigger_cooldown_days * MS_PER_DAY

    @property
    def non_responder_window_ms(self) -> int:
        return self.non_responder_window_days * MS_PER_DAY

    @property
    def complaint_quiet_ms(self) -> int:
        return self.complaint_quiet_days * MS_PER_DAY

    @property
    def retention_ms(self) -> int:
        """How long history can matter: the longest rolling window plus a replay margin."""
        longest = max(
            GLOBAL_WINDOW_30D_MS,
            self.cooldown_ms,
            self.non_responder_window_ms,
            self.complaint_quiet_ms,
            *(cap.window_ms for cap in self.channel_caps.values()),
        )
        return longest + RETENTION_MARGIN_MS

    # -- per candidate -------------------------------------------------------------------

    def multiplier(self, segment: str | None) -> int:
        """How many times the normal caps a segment tolerates (1 without a segment)."""
        return self.segment_cap_multipliers.get(segment, 1) if segment else 1

    def caps_for(self, segment: str | None) -> Caps:
        """Global and channel caps in force for a customer of ``segment``."""
        m = self.multiplier(segment)
        return Caps(
            global_7d=self.global_cap_7d * m,
            global_30d=self.global_cap_30d * m,
            channels=MappingProxyType(
                {name: ChannelCap(cap.max * m, cap.days) for name, cap in self.channel_caps.items()}
            ),
        )

    def channels_for(self, candidate: Candidate) -> tuple[str, ...]:
        """The candidate's own channel, then its trigger's fallbacks (each once)."""
        channels = [candidate.channel]
        for channel in self.channel_fallbacks.get(candidate.trigger, ()):
            if channel not in channels:
                channels.append(channel)
        return tuple(channels)

    def is_holdout(self, customer_id: str, trigger: str) -> bool:
        """Whether this customer is in the holdout group of this trigger (stable by hash)."""
        return self.holdout_rate > 0 and holdout_score(customer_id, trigger) < self.holdout_rate

    def priority_for(self, trigger: str, category: str) -> int:
        """A trigger's configured priority; every service trigger has the ``service`` one."""
        if category == SERVICE:
            return self.priorities.get(SERVICE, 100)
        return self.priorities.get(trigger, 0)

    @staticmethod
    def order(candidates: Sequence[Candidate]) -> list[Candidate]:
        """Candidates in decision order: higher priority first, ties by trigger name.

        The instance breaks the remaining ties so that the order never depends on input order.
        """
        return sorted(candidates, key=lambda c: (-c.priority, c.trigger, c.instance))
