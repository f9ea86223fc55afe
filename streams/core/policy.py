"""The contact policy as data: caps, windows, cooldown, back-off, holdouts, priorities.

Pure: no Redis, no Faust. ``Policy.from_config`` turns the validated ``policy`` section of the
configuration into a frozen, typed object; the contact ledger (``streams.ledger``) applies it
atomically in Redis, and this module supplies the parts that need no history: holdout
selection, priority order, effective caps for a segment and the channels a candidate may use.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.decisions import REASON_CODES, Candidate
from streams.core.errors import ConfigError
from streams.core.events import CHANNELS
from streams.core.timeutil import MS_PER_DAY

MARKETING = "marketing"
SERVICE = "service"
# The global windows are named by the contract (global_cap_7d, global_cap_30d); only the caps
# inside them are configurable.
GLOBAL_WINDOW_7D_MS = 7 * MS_PER_DAY
GLOBAL_WINDOW_30D_MS = 30 * MS_PER_DAY
# How long history is kept beyond the longest window: decisions may be replayed this late (the
# stream's allowed lateness) and must still find their first outcome.
RETENTION_MARGIN_MS = 7 * MS_PER_DAY

DEFAULT_BUSINESS_UNIT = "lifecycle"

_REASON_ORDER = {code: i for i, code in enumerate(REASON_CODES)}


def sort_reasons(codes: Iterable[str]) -> tuple[str, ...]:
    """Reason codes without duplicates, in the contract's order (stable output for audits)."""
    return tuple(sorted(set(codes), key=lambda c: (_REASON_ORDER.get(c, len(_REASON_ORDER)), c)))


_ACTION = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_BUSINESS_UNIT = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")


def check_business_unit(where: str, name: object) -> None:
    """A business unit name: 1-100 printable characters (it becomes part of a Redis key)."""
    if not isinstance(name, str) or _BUSINESS_UNIT.match(name) is None:
        raise ConfigError(
            f"{where}: {name!r} is not a business unit name (1-100 printable characters)"
        )


def check_global_control_rate(where: str, rate: object) -> None:
    """A global control rate: a number in [0, 1). 1 would leave no customer to contact, and
    the programme's lift could not be measured against anything."""
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ConfigError(f"{where}: must be a number in [0, 1), got {rate!r}")
    if not 0 <= rate < 1:
        raise ConfigError(
            f"{where}: must be at least 0 and below 1 (the share of customers who get no "
            f"marketing; 0 turns the global control group off), got {rate!r}"
        )


def holdout_score(customer_id: str, trigger: str) -> float:
    """A uniform number in [0, 1) that depends only on (customer_id, trigger).

    SHA-256 rather than ``hash()``: it must be the same in every process, on every replay.
    """
    digest = hashlib.sha256(f"{customer_id}\x1f{trigger}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# What the global control group hashes before the customer id. The per-trigger holdout hashes
# "<customer_id>\x1f<trigger>", this "<GLOBAL_CONTROL_SALT>\x1f<customer_id>": the inputs
# differ for every customer and trigger (they could only meet if both the customer id and the
# trigger name were this salt), so SHA-256 gives the two draws independently. It never
# changes: a customer's membership must survive restarts and releases.
GLOBAL_CONTROL_SALT = "lifecycle-triggers/global-control"


def global_control_score(customer_id: str) -> float:
    """A uniform number in [0, 1) that depends only on ``customer_id``: the customer is in the
    global control group when it is below ``Policy.global_control_rate``.

    SHA-256 like ``holdout_score``, of "<GLOBAL_CONTROL_SALT>\\x1f<customer_id>": the same in
    every process and release, and independent of the per-trigger holdout's draw.
    """
    digest = hashlib.sha256(f"{GLOBAL_CONTROL_SALT}\x1f{customer_id}".encode()).digest()
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
class BusinessUnitCap:
    """At most ``per_7_days`` / ``per_30_days`` marketing contacts by one business unit, in any
    rolling 7 / 30 days (None: no cap in that window). Within the global caps, never above."""

    per_7_days: int | None
    per_30_days: int | None

    def times(self, m: int) -> BusinessUnitCap:
        return BusinessUnitCap(
            None if self.per_7_days is None else self.per_7_days * m,
            None if self.per_30_days is None else self.per_30_days * m,
        )


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local hours in which marketing on some channels waits: from ``start`` to ``end``
    (minutes after local midnight; start > end spans midnight), in the customer's time zone."""

    start_min: int
    end_min: int
    channels: frozenset[str]
    timezone: str = "UTC"

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> QuietHours | None:
        if not section["enabled"]:
            return None
        return cls(
            _minutes(section["start"]),
            _minutes(section["end"]),
            frozenset(section["channels"]),
            str(section["timezone"]),
        )

    def zone(self, timezone: str | None) -> ZoneInfo:
        """The customer's zone; the configured one when it has none or an unknown one."""
        for name in (timezone, self.timezone):
            if name:
                try:
                    return _zone(name)
                except (ValueError, ZoneInfoNotFoundError):
                    continue
        return _zone("UTC")

    def _quiet(self, minute: int) -> bool:
        if self.start_min < self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min

    def quiet_until(self, now_ms: int, timezone: str | None) -> int | None:
        """The instant the customer's current quiet hours end (epoch ms); None outside them."""
        zone = self.zone(timezone)
        local = datetime.fromtimestamp(now_ms / 1000, zone)
        if not self._quiet(local.hour * 60 + local.minute):
            return None
        day = local.date()
        if local.hour * 60 + local.minute >= self.end_min:
            day += timedelta(days=1)
        end = datetime.combine(day, dtime(self.end_min // 60, self.end_min % 60), zone)
        # Wall times in a DST gap do not exist: fromtimestamp(timestamp()) moves them forward.
        until = int(end.timestamp() * 1000)
        return until if until > now_ms else now_ms + 60_000


def _minutes(hh_mm: str) -> int:
    hours, minutes = hh_mm.split(":")
    return int(hours) * 60 + int(minutes)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Caps:
    """The caps in force for one customer (segment multiplier applied)."""

    global_7d: int
    global_30d: int
    channels: Mapping[str, ChannelCap]


@dataclass(frozen=True, slots=True)
class Policy:
    """The contact policy: every number of docs/contract.md, "Contact policy"."""

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
    # The business unit our decisions are recorded under, per-trigger overrides, and caps per
    # business unit (ours and those that record outside contacts). None by default.
    business_unit: str = DEFAULT_BUSINESS_UNIT
    trigger_business_units: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    business_unit_caps: Mapping[str, BusinessUnitCap] = field(
        default_factory=lambda: MappingProxyType({})
    )
    quiet_hours: QuietHours | None = None
    # Sunset: after this many unanswered marketing contacts on one channel, no marketing on
    # that channel until a response on it. None: off (the configuration's default is 12).
    sunset_after_unanswered: int | None = None
    # Bounces: a bounced channel gets no marketing until a later delivered, opened or clicked
    # engagement on it. Off here; the configuration's default is on.
    undeliverable: bool = False
    # Capacity: at most ``per_day`` marketing contacts of an action per calendar day (in
    # ``capacity_timezone``) across all customers. Empty by default.
    capacity: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    capacity_timezone: str = "UTC"
    # Global control group: this share of customers (by ``global_control_score``) gets no
    # marketing from any trigger; their marketing decisions are holdouts marked
    # ``global_control``. 0: off (the configuration's default).
    global_control_rate: float = 0.0
    # How long a decision must stay in the ledger for its outcome record (the longest goal
    # window plus the allowed lateness: the worker asks the ledger for a decision's arm when
    # its goal resolves). 0: no goals.
    decisions_kept_ms: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.holdout_rate <= 1:
            raise ConfigError(
                f"policy.holdout_rate: must be between 0 and 1, got {self.holdout_rate}"
            )
        check_global_control_rate("policy.global_control_rate", self.global_control_rate)
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
        for name in (self.business_unit, *self.trigger_business_units.values()):
            check_business_unit("policy.business_unit", name)
        for name, cap in self.business_unit_caps.items():
            check_business_unit(f"policy.business_unit_caps.{name}", name)
            if cap.per_7_days is None and cap.per_30_days is None:
                raise ConfigError(
                    f"policy.business_unit_caps.{name}: give per_7_days, per_30_days or both"
                )
        for action, per_day in self.capacity.items():
            if not isinstance(action, str) or _ACTION.fullmatch(action) is None:
                raise ConfigError(
                    f"policy.capacity: {action!r} is not an action name (letters, digits, "
                    "'_', '.', '-')"
                )
            if isinstance(per_day, bool) or not isinstance(per_day, int) or per_day < 1:
                raise ConfigError(
                    f"policy.capacity.{action}.per_day: must be a whole number of 1 or more, "
                    f"got {per_day!r}"
                )
        try:
            _zone(self.capacity_timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ConfigError(
                f"policy.capacity_timezone: {self.capacity_timezone!r} is not an IANA time "
                "zone name like Europe/Berlin"
            ) from None
        sunset = self.sunset_after_unanswered
        if sunset is not None and (
            isinstance(sunset, bool) or not isinstance(sunset, int) or sunset < 1
        ):
            raise ConfigError(
                f"policy.sunset.after_unanswered: must be a whole number of 1 or more, got "
                f"{sunset!r}"
            )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], decisions_kept_ms: int = 0) -> Policy:
        """The policy of a validated ``policy`` configuration section (``config["policy"]``);
        ``decisions_kept_ms`` as the field."""
        caps = section["global_caps"]
        back_off = section["non_responder"]
        fallbacks = section["channel_fallbacks"]
        bu_caps = section["business_unit_caps"]
        sunset = section["sunset"]
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
            business_unit=str(section["business_unit"]),
            trigger_business_units=MappingProxyType(dict(section["trigger_business_units"])),
            business_unit_caps=MappingProxyType(
                {
                    name: BusinessUnitCap(cap.get("per_7_days"), cap.get("per_30_days"))
                    for name, cap in bu_caps.items()
                }
            ),
            quiet_hours=QuietHours.from_config(section["quiet_hours"]),
            sunset_after_unanswered=int(sunset["after_unanswered"]) if sunset["enabled"] else None,
            undeliverable=bool(section["undeliverable"]["enabled"]),
            capacity=MappingProxyType(
                {action: int(c["per_day"]) for action, c in section["capacity"].items()}
            ),
            capacity_timezone=str(section["capacity_timezone"]),
            global_control_rate=float(section["global_control_rate"]),
            decisions_kept_ms=decisions_kept_ms,
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
            self.decisions_kept_ms,
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

    def channels_for(self, candidate: Candidate, skip: Collection[str] = ()) -> tuple[str, ...]:
        """The candidate's own channel, then its trigger's fallbacks (each once), leaving out
        fallbacks in ``skip`` (e.g. channels in their quiet hours)."""
        channels = [candidate.channel]
        for channel in self.channel_fallbacks.get(candidate.trigger, ()):
            if channel not in channels and channel not in skip:
                channels.append(channel)
        return tuple(channels)

    def business_unit_for(self, trigger: str, customer_unit: str | None = None) -> str:
        """Whom a decision of ``trigger`` is recorded for: the trigger's configured business
        unit, else the customer's (profile ``business_unit``), else ``policy.business_unit``."""
        return self.trigger_business_units.get(trigger) or customer_unit or self.business_unit

    def business_unit_cap(self, unit: str, segment: str | None) -> BusinessUnitCap | None:
        """The caps of one business unit in force for a customer of ``segment`` (None: none)."""
        cap = self.business_unit_caps.get(unit)
        return None if cap is None else cap.times(self.multiplier(segment))

    def capacity_day(self, now_ms: int) -> str:
        """The calendar day (YYYY-MM-DD, in ``capacity_timezone``) a decision at ``now_ms``
        counts against."""
        zone = _zone(self.capacity_timezone)
        return datetime.fromtimestamp(now_ms / 1000, zone).date().isoformat()

    def is_holdout(self, customer_id: str, trigger: str) -> bool:
        """Whether this customer is in the holdout group of this trigger (stable by hash)."""
        return self.holdout_rate > 0 and holdout_score(customer_id, trigger) < self.holdout_rate

    def in_global_control(self, customer_id: str) -> bool:
        """Whether this customer is in the global control group (stable by hash, whatever
        the trigger): no marketing from any trigger."""
        rate = self.global_control_rate
        return rate > 0 and global_control_score(customer_id) < rate

    @staticmethod
    def order(candidates: Sequence[Candidate]) -> list[Candidate]:
        """Candidates in decision order: higher priority first, ties by trigger name.

        The instance breaks the remaining ties so that the order never depends on input order.
        """
        return sorted(candidates, key=lambda c: (-c.priority, c.trigger, c.instance))
