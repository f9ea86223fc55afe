"""The triggers configuration file (YAML): topics, stream limits, triggers and policy.

Every number of the wire contract (docs/contract.md) is a default here. A user's file overrides
any subset; anything we do not know, or of the wrong type or range, is refused with a message
naming the dotted key. The result is deeply frozen (mappings become read-only, lists become
tuples).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from streams.core.catalogue import Registry, builtin_registry, load_registry
from streams.core.errors import ConfigError
from streams.core.events import CHANNELS
from streams.core.ingest import DEAD_LETTER_MAX_VALUE_BYTES_LIMIT
from streams.core.log_identity import ON_REPLACED
from streams.core.policy import Policy, check_business_unit, check_global_control_rate
from streams.core.triggers import TriggerParams
from streams.kafka.copartition import PARTITIONERS, REPARTITION_MODES

_DEFAULTS: dict[str, Any] = {
    "topics": {
        "account_events": "account-events",
        "usage_events": "usage-events",
        "contact_decisions": "contact-decisions",
        "dead_letters": "dead-letters",
        # One record per decision with a goal: converted or not (schemas/decision_outcome.json).
        "decision_outcomes": "decision-outcomes",
    },
    "stream": {
        "allowed_lateness_days": 7,
        "max_message_bytes": 65_536,
        "max_future_seconds": 86_400,
        # How long a record may wait for the other input topic of its partition when that
        # topic's backlog is not known yet, or not known recently enough (order_grace_ms):
        # the event-time merge, see streams/core/ordering.py. 5 s: under load (two workers and a
        # rebalance on 2 cores) fetch news can take over a second, and a release on timeout
        # may break event-time order.
        "max_order_wait_ms": 5_000,
        # A topic counts as caught up only with fetch news from at least this long after the
        # record waiting on it was fetched: producers do not keep order across topics (a full
        # batch of one overtakes a lingering batch of the other), so an earlier event of the
        # other topic can reach the broker a little later (Kafka Streams: max.task.idle.ms).
        "order_grace_ms": 500,
        # What a replaced input log or changelog does (streams/core/log_identity.py): reset
        # keeps the        # customer state and applies the new log's events; fail stops the worker.
        "on_replaced_log": "reset",
        # A dead letter's copies of the record's key and value are cut to this many bytes of
        # JSON text each (their length and SHA-256 are kept): any record's dead letter fits the
        # producer's request limit.
        "dead_letter_max_value_bytes": 65_536,
        # An exception while processing a record dead-letters it (processing_error); more
        # than this share of failures among the last processing_error_window records is a
        # fault of the processor, and the worker stops.
        "processing_error_max_share": 0.5,
        "processing_error_window": 100,
        # The partitioner the input topics' producers use (streams/kafka/copartition.py): murmur2 as
        # Kafka's Java producer and aiokafka, crc32 as librdkafka's consistent(_random); per
        # input topic (account_events, usage_events) another one if they differ.
        "partitioner": "murmur2",
        "topic_partitioners": {},
        # Records on another partition than their partitioner's: forwarded through the
        # repartition topic (misrouted), every record forwarded (all), or only counted (off).
        "repartition": "misrouted",
    },
    # The trigger parameters and their defaults: the catalogue (streams/core/catalogue.py), and
    # ``plugins``, modules of trigger families to register besides the installed entry points.
    "triggers": {},
    "policy": {
        "holdout_rate": 0.05,
        # The global control group: this share of customers (stable by a hash of the customer
        # id) gets no marketing from any trigger, so the whole programme's lift can be
        # measured. 0: off; below 1.
        "global_control_rate": 0.0,
        "global_caps": {"per_7_days": 2, "per_30_days": 6},
        "channel_caps": {
            "email": {"max": 2, "days": 7},
            "sms": {"max": 1, "days": 7},
            "push": {"max": 3, "days": 7},
            "phone": {"max": 1, "days": 30},
            "direct_mail": {"max": 1, "days": 30},
        },
        "segment_cap_multipliers": {"high_affinity": 2},
        "trigger_cooldown_days": 14,
        "non_responder": {"after_unanswered": 5, "max_contacts": 1, "window_days": 30},
        # After this many unanswered marketing contacts on a channel, no marketing on that
        # channel until the customer responds on it (opened, clicked, converted).
        "sunset": {"enabled": True, "after_unanswered": 12},
        # After a bounced engagement on a channel, no marketing on it until a later delivered,
        # opened or clicked engagement on it.
        "undeliverable": {"enabled": True},
        # Per marketing action, at most per_day contacts per calendar day (in
        # capacity_timezone) across all customers ({per_day}). None by default.
        "capacity": {},
        "capacity_timezone": "UTC",
        "complaint_quiet_days": 14,
        # Per trigger, channels to try in order when its own channel is capped or opted out.
        "channel_fallbacks": {},
        # The business unit our decisions are recorded under in the shared ledger; per trigger
        # another one; and caps per business unit ({per_7_days, per_30_days}, either or both).
        "business_unit": "lifecycle",
        "trigger_business_units": {},
        "business_unit_caps": {},
        # Marketing decisions on these channels that fall between start and end in the
        # customer's time zone (profile `timezone`, else this one) wait until the end.
        "quiet_hours": {
            "enabled": False,
            "start": "21:00",
            "end": "08:00",
            "channels": ["sms", "phone", "push"],
            "timezone": "UTC",
        },
        "priorities": {},
    },
}


def defaults_for(registry: Registry) -> dict[str, Any]:
    """The defaults of a configuration with this trigger catalogue."""
    out = copy.deepcopy(_DEFAULTS)
    out["triggers"] = registry.default_parameters()
    out["policy"]["channel_fallbacks"] = {name: [] for name in registry.names}
    out["policy"]["priorities"] = registry.default_priorities()
    return out


def open_maps_for(registry: Registry) -> dict[str, tuple[str, ...] | None]:
    """``OPEN_MAPS`` with this trigger catalogue's names."""
    out = dict(OPEN_MAPS)
    out["policy.priorities"] = ("service", *registry.names)
    out["policy.trigger_business_units"] = registry.names
    # policy.capacity limits marketing actions (service is never stopped).
    out["policy.capacity"] = tuple(sorted({registry.specs[n].action for n in registry.marketing()}))
    return out


# Maps whose keys are the user's to choose; values must look like the default's values.
# The value is the dotted path of the key set it must stay within (None: free keys).
# (The trigger names of "policy.priorities" and "policy.trigger_business_units", and the marketing
# actions of "policy.capacity": open_maps_for.)
OPEN_MAPS: dict[str, tuple[str, ...] | None] = {
    "triggers.replacement_due.cycle_days": None,
    "triggers.renewal_reminder.days_before_by_product": None,
    "triggers.usage_lapsed.inactive_days_by_product": None,
    "policy.segment_cap_multipliers": None,
    "policy.channel_caps": CHANNELS,
    "policy.priorities": (),
    "policy.trigger_business_units": (),
    "policy.business_unit_caps": None,
    "policy.capacity": (),
    "stream.topic_partitioners": ("account_events", "usage_events"),
}
# Open maps that are empty by default: what each value must look like. A mapping template lists
# the keys a value may have; only the keys given are kept (a missing one means "no limit").
OPEN_MAP_TEMPLATES: dict[str, Any] = {
    "triggers.renewal_reminder.days_before_by_product": [30, 7],
    "triggers.usage_lapsed.inactive_days_by_product": 60,
    "policy.trigger_business_units": "lifecycle",
    "policy.business_unit_caps": {"per_7_days": 1, "per_30_days": 1},
    "policy.capacity": {"per_day": 1},
    "stream.topic_partitioners": "murmur2",
}

# The producer's request limit (Faust's producer_max_request_size default, which the worker
# keeps; a Kafka broker's own default message.max.bytes is a little above it). A record larger
# than stream.max_message_bytes is dead-lettered with its value, base64 when the value is not
# text (4/3 of its size), inside a JSON envelope: 512 KiB leaves room for both (its base64 is
# 699,052 bytes), and a record near the request limit can hardly reach the worker through a
# default broker anyway.
PRODUCER_MAX_REQUEST_BYTES = 1_000_000
MAX_MESSAGE_BYTES_LIMIT = 512 * 1024

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # a legal Kafka topic name
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_HH_MM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")


def _positive(path: str, v: Any) -> None:
    if v <= 0:
        raise ConfigError(f"{path}: must be greater than 0, got {v!r}")


def _non_negative(path: str, v: Any) -> None:
    if v < 0:
        raise ConfigError(f"{path}: must be 0 or more, got {v!r}")


def _fraction(path: str, v: Any) -> None:
    if not 0 <= v <= 1:
        raise ConfigError(f"{path}: must be between 0 and 1, got {v!r}")


def _topic(path: str, v: Any) -> None:
    if not _NAME.match(v):
        raise ConfigError(f"{path}: {v!r} is not a valid Kafka topic name")


def _channel_list(path: str, v: Any) -> None:
    if any(c not in CHANNELS for c in v) or len(set(v)) != len(v):
        raise ConfigError(
            f"{path}: must be a list of distinct channels ({', '.join(CHANNELS)}), got {v!r}"
        )


def _clock_time(path: str, v: Any) -> None:
    if _HH_MM.fullmatch(v) is None:
        raise ConfigError(f"{path}: must be a local time HH:MM (00:00 to 23:59), got {v!r}")


def _time_zone(path: str, v: Any) -> None:
    try:
        ZoneInfo(v)
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigError(
            f"{path}: {v!r} is not an IANA time zone name like Europe/Berlin"
        ) from None


def _business_unit(path: str, v: Any) -> None:
    check_business_unit(path, v)


def _module_list(path: str, v: Any) -> None:
    if any(not isinstance(m, str) or _MODULE.fullmatch(m) is None for m in v):
        raise ConfigError(
            f"{path}: must be a list of module paths like my_triggers.family, got {v!r}"
        )


def _days_list(path: str, v: Any) -> None:
    if not v or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in v):
        raise ConfigError(f"{path}: must be a non-empty list of whole days > 0, got {v!r}")


def _message_bytes(path: str, v: Any) -> None:
    if not 0 < v <= MAX_MESSAGE_BYTES_LIMIT:
        raise ConfigError(
            f"{path}: must be between 1 and {MAX_MESSAGE_BYTES_LIMIT} bytes (an accepted record "
            f"must fit what the producer sends in one request, {PRODUCER_MAX_REQUEST_BYTES} "
            f"bytes, with room to spare), got {v!r}"
        )


def _dead_letter_bytes(path: str, v: Any) -> None:
    if not 1 <= v <= DEAD_LETTER_MAX_VALUE_BYTES_LIMIT:
        raise ConfigError(
            f"{path}: must be 1 to {DEAD_LETTER_MAX_VALUE_BYTES_LIMIT} bytes (a dead letter "
            f"carries the key twice and the value, under the producer's 1,000,000-byte request "
            f"limit), got {v!r}"
        )


def _one_of(allowed: tuple[str, ...]) -> Callable[[str, Any], None]:
    def check(path: str, v: Any) -> None:
        if v not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(allowed)}, got {v!r}")

    return check


# Range rules by the last key of the dotted path (or the whole path); the rest must be > 0.
_RULES: dict[str, Callable[[str, Any], None]] = {
    "holdout_rate": _fraction,
    "global_control_rate": check_global_control_rate,
    "drop_fraction": _fraction,
    "match_fraction": _fraction,
    "paid_in_full_share": _fraction,
    "processing_error_max_share": _fraction,
    "dead_letter_max_value_bytes": _dead_letter_bytes,
    "priorities": _non_negative,
    "start": _clock_time,
    "end": _clock_time,
    "timezone": _time_zone,
    "capacity_timezone": _time_zone,
    "business_unit": _business_unit,
    "trigger_business_units": _business_unit,
    "business_unit_caps": _positive,
    "on_replaced_log": _one_of(ON_REPLACED),
    "partitioner": _one_of(PARTITIONERS),
    "topic_partitioners": _one_of(PARTITIONERS),
    "repartition": _one_of(REPARTITION_MODES),
    "max_message_bytes": _message_bytes,
}


def _rule_for(path: str) -> Callable[[str, Any], None]:
    parts = path.split(".")
    if parts[0] == "topics":
        return _topic
    for part in reversed(parts):
        if part in _RULES:
            return _RULES[part]
    return _positive


def _check_type(path: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {value!r}")
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"{path}: must be a whole number, got {value!r}")
        _rule_for(path)(path, value)
        return value
    if isinstance(default, str):
        if value is False and path == "stream.repartition":
            value = "off"  # YAML 1.1 reads an unquoted off as false
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {value!r}")
        _rule_for(path)(path, value)
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{path}: must be a list, got {value!r}")
        if ".channel_fallbacks." in path or path == "policy.quiet_hours.channels":
            _channel_list(path, value)
        elif path == "triggers.plugins":
            _module_list(path, value)
        else:
            _days_list(path, value)
        return value
    raise AssertionError(f"no type rule for {path}")  # pragma: no cover - defaults are ours


def _merge(
    path: str,
    default: dict[str, Any],
    override: Any,
    open_maps: Mapping[str, tuple[str, ...] | None] = OPEN_MAPS,
) -> dict[str, Any]:
    if not isinstance(override, dict):
        raise ConfigError(f"{path or 'the configuration'}: must be a mapping, got {override!r}")
    merged = copy.deepcopy(default)
    open_keys = open_maps.get(path, ())
    is_open = path in open_maps
    sample = next(iter(default.values()), OPEN_MAP_TEMPLATES.get(path)) if is_open else None
    for key, value in override.items():
        here = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            raise ConfigError(f"{here}: keys must be strings")
        if key in default:
            template = default[key]
        elif is_open and (open_keys is None or key in open_keys):
            template = sample
        else:
            known = ", ".join(open_keys or default) if is_open else ", ".join(default)
            raise ConfigError(f"{here}: unknown key (known keys here: {known})")
        if isinstance(template, dict) and key not in default and path in OPEN_MAP_TEMPLATES:
            given = _merge(here, template, value, open_maps)
            merged[key] = {k: v for k, v in given.items() if k in value}
        elif isinstance(template, dict):
            merged[key] = _merge(here, template, value, open_maps)
        else:
            merged[key] = _check_type(here, template, value)
    return merged


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (for printing and serialising)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _plugins(override: Any) -> tuple[str, ...]:
    """``triggers.plugins`` of a user's document, checked before the catalogue is known."""
    triggers = override.get("triggers") if isinstance(override, dict) else None
    plugins = triggers.get("plugins", []) if isinstance(triggers, dict) else []
    if not isinstance(plugins, list):
        raise ConfigError(f"triggers.plugins: must be a list, got {plugins!r}")
    _module_list("triggers.plugins", plugins)
    return tuple(plugins)


def build_config(override: Any = None, *, registry: Registry | None = None) -> Mapping[str, Any]:
    """Defaults merged with ``override`` (the parsed YAML document), validated and frozen.

    The trigger catalogue is ``registry`` when given (the testing kit's), else the built-in
    families, the installed entry points and the modules of ``triggers.plugins``.
    """
    if registry is None:
        registry = load_registry(_plugins(override))
    merged = _merge(
        "", defaults_for(registry), {} if override is None else override, open_maps_for(registry)
    )
    triggers = merged["triggers"]
    for family in registry.families:
        names = [t.name for t in family.triggers]
        for parameter in family.shared_parameters:
            having = [n for n in names if parameter in triggers[n]]
            for other in having[1:]:
                if triggers[other][parameter] != triggers[having[0]][parameter]:
                    raise ConfigError(
                        f"triggers.{other}.{parameter}: must equal triggers.{having[0]}."
                        f"{parameter} ({triggers[having[0]][parameter]!r}); "
                        f"{', '.join(having)} share one computation"
                    )
        problems = family.validate({n: triggers[n] for n in names})
        if problems:
            raise ConfigError("; ".join(problems))
    topics = merged["topics"]
    if len(set(topics.values())) != len(topics):
        raise ConfigError(f"topics: every topic needs its own name, got {topics!r}")
    for unit, caps in merged["policy"]["business_unit_caps"].items():
        if not caps:
            raise ConfigError(
                f"policy.business_unit_caps.{unit}: give per_7_days, per_30_days or both"
            )
    for action, limit in merged["policy"]["capacity"].items():
        if not limit:
            raise ConfigError(f"policy.capacity.{action}: give per_day")
    quiet = merged["policy"]["quiet_hours"]
    if quiet["start"] == quiet["end"]:
        raise ConfigError(
            f"policy.quiet_hours: start and end are both {quiet['start']!r}; quiet hours need "
            "a length (set enabled: false to turn them off)"
        )
    frozen: Mapping[str, Any] = _freeze(merged)
    return frozen


def load_config(path: Path | None) -> Mapping[str, Any]:
    """Read and validate a YAML configuration file (None: the built-in defaults)."""
    if path is None:
        return build_config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {str(path)!r}: not valid YAML: {exc}") from None
    try:
        return build_config(document)
    except ConfigError as exc:
        raise ConfigError(f"--config {str(path)!r}: {exc}") from None


def dump_config(config: Mapping[str, Any]) -> str:
    """The effective configuration as YAML."""
    return yaml.safe_dump(thaw(config), sort_keys=False)


def default_policy() -> Policy:
    """The policy of the built-in defaults (``DEFAULTS["policy"]``)."""
    return Policy.from_config(build_config()["policy"])


def policy_of(config: Mapping[str, Any], params: TriggerParams | None = None) -> Policy:
    """The contact policy of a validated configuration, as the worker runs it: the ledger keeps
    each decision as long as its goal can resolve (``Policy.decisions_kept_ms``). Every process
    that writes to the ledger builds its policy here: one with a shorter retention would prune
    decisions whose outcome is still to come. ``params``: the configuration's trigger
    parameters, when the caller has them already (else they are built, plugins loaded)."""
    if params is None:
        params = TriggerParams.from_config(config)
    windows = [g.window_ms for g in params.goals.values()]
    horizon = max(windows) + params.lateness_ms if windows else 0
    return Policy.from_config(config["policy"], horizon)


def default_trigger_params() -> TriggerParams:
    """The trigger parameters of the built-in defaults."""
    return TriggerParams.from_config(build_config())


# The defaults with the built-in catalogue only (no plugins).
DEFAULTS: dict[str, Any] = defaults_for(builtin_registry())
