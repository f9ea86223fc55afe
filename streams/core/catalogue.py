"""The trigger catalogue: the registry of trigger families, and its view of every trigger.

A family (``streams.core.triggers.api.TriggerFamily``) declares its triggers (name, action,
channel, category, default priority, parameters with defaults), its state and its hooks. The
registry holds the built-in families (``streams.core.triggers``: savings, renewal, reactivation,
recurrence, usage lapse, price rise) and the plugins:

- every entry point of the group ``lifecycle_triggers.triggers`` (``importlib.metadata``) of the
  installed distributions, and
- the modules named in the configuration's ``triggers.plugins``.

An entry point or module gives a family, a family class (instantiated without arguments), a
sequence of those, or a module with ``TRIGGER_FAMILIES``. Two families or two triggers with one
name, a trigger name that is not ``[a-z][a-z0-9_]*``, an unknown channel or category, or a
plugin that cannot be imported stop the start with a ``ConfigError`` naming it.

The configuration's defaults and validation (``streams.config``), the trigger parameters
(``TriggerParams``), the metrics, the demo and the contract's table (``docs/contract.md``) all read
the catalogue from here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from streams.core.errors import ConfigError
from streams.core.events import CHANNELS, Event
from streams.core.goals import SLICE as GOALS_SLICE
from streams.core.goals import GoalSpec, default_goal_config, goal_of
from streams.core.state import CustomerState
from streams.core.triggers import price, reactivation, recurrence, renewal, savings, usage
from streams.core.triggers.api import (
    CATEGORIES,
    MARKETING,
    SERVICE,
    SERVICE_PRIORITY,
    TriggerFamily,
    TriggerSpec,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "MARKETING",
    "SERVICE",
    "SERVICE_PRIORITY",
    "Registry",
    "TriggerFamily",
    "TriggerSpec",
    "builtin_registry",
    "load_registry",
    "registry_for",
]

ENTRY_POINT_GROUP = "lifecycle_triggers.triggers"
# Keys of the configuration's ``triggers`` section that are not triggers.
RESERVED = frozenset({"plugins"})
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

BUILTIN_FAMILIES: tuple[TriggerFamily, ...] = (
    savings.FAMILY,
    renewal.FAMILY,
    reactivation.FAMILY,
    recurrence.FAMILY,
    usage.FAMILY,
    price.FAMILY,
)


@dataclass(frozen=True, eq=False)
class Registry:
    """The installed trigger families and their triggers, in registration order."""

    families: tuple[TriggerFamily, ...]
    plugins: tuple[str, ...] = ()
    specs: Mapping[str, TriggerSpec] = field(init=False)
    names: tuple[str, ...] = field(init=False)
    family_names: frozenset[str] = field(init=False)
    # The families with data in the record's own fields, and those with a slice.
    legacy: tuple[TriggerFamily, ...] = field(init=False)
    sliced: tuple[TriggerFamily, ...] = field(init=False)
    # Event type -> the families whose ``apply`` can fold it in; filled on first sight.
    _for: dict[type, tuple[TriggerFamily, ...]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        specs = {t.name: t for f in self.families for t in f.triggers}
        object.__setattr__(self, "specs", MappingProxyType(specs))
        object.__setattr__(self, "names", tuple(specs))
        object.__setattr__(self, "family_names", frozenset(f.name for f in self.families))
        object.__setattr__(self, "legacy", tuple(f for f in self.families if not f.uses_slice))
        object.__setattr__(self, "sliced", tuple(f for f in self.families if f.uses_slice))

    def busy(self, state: CustomerState) -> list[TriggerFamily]:
        """The families with data in ``state`` (the others have nothing due or to prune)."""
        # Plain loops: this runs at least once per event, for a handful of families, where a
        # comprehension's own call costs as much as the checks.
        busy = []
        for f in self.legacy:
            if f.holds_data(state):
                busy.append(f)
        if state.slices or state.ext:
            for f in self.sliced:
                if f.holds_data(state):
                    busy.append(f)
        return busy

    def families_for(self, kind: type) -> tuple[TriggerFamily, ...]:
        families = self._for.get(kind)
        if families is None:
            families = tuple(f for f in self.families if issubclass(kind, f.events))
            self._for[kind] = families
        return families

    def default_parameters(self) -> dict[str, Any]:
        """Every trigger's parameters with their defaults (and ``plugins``), fresh and mutable."""
        out: dict[str, Any] = {n: _thaw(s.parameters) for n, s in self.specs.items()}
        for n, s in self.specs.items():
            goal = goal_of(n, s.goal)
            if goal is not None:
                out[n]["goal"] = default_goal_config(goal)
        out["plugins"] = list(self.plugins)
        return out

    def default_priorities(self) -> dict[str, int]:
        """The ``policy.priorities`` default: ``service`` and every marketing trigger."""
        out = {"service": SERVICE_PRIORITY}
        out.update({n: s.priority for n, s in self.specs.items() if s.priority is not None})
        return out

    def marketing(self) -> tuple[str, ...]:
        return tuple(n for n, s in self.specs.items() if s.category == MARKETING)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _families_of(obj: Any, where: str) -> list[TriggerFamily]:
    if isinstance(obj, ModuleType):
        if not hasattr(obj, "TRIGGER_FAMILIES"):
            raise ConfigError(f"{where}: module {obj.__name__} has no TRIGGER_FAMILIES")
        obj = obj.TRIGGER_FAMILIES
    if isinstance(obj, type) and issubclass(obj, TriggerFamily):
        obj = obj()
    if isinstance(obj, TriggerFamily):
        return [obj]
    if isinstance(obj, list | tuple):
        return [f for item in obj for f in _families_of(item, where)]
    raise ConfigError(
        f"{where}: gives {type(obj).__name__}, not a TriggerFamily (or a sequence of them)"
    )


def _check(family: TriggerFamily, where: str) -> None:
    if not isinstance(family.name, str) or _NAME.fullmatch(family.name) is None:
        raise ConfigError(f"{where}: family name {family.name!r} must match [a-z][a-z0-9_]*")
    if not family.triggers:
        raise ConfigError(f"{where}: family {family.name!r} declares no triggers")
    if family.name == GOALS_SLICE:
        raise ConfigError(f"{where}: family name {family.name!r} is the goals' state slice")
    if not all(isinstance(k, type) and issubclass(k, Event) for k in family.events):
        raise ConfigError(f"{where}: family {family.name!r}: events must be event classes")
    for t in family.triggers:
        here = f"{where}: trigger {t.name!r}"
        if not isinstance(t, TriggerSpec):
            raise ConfigError(f"{where}: family {family.name!r}: triggers must be TriggerSpecs")
        if not isinstance(t.name, str) or _NAME.fullmatch(t.name) is None or t.name in RESERVED:
            raise ConfigError(f"{here}: a trigger name must match [a-z][a-z0-9_]* (not plugins)")
        if t.family != family.name:
            raise ConfigError(f"{here}: declared by family {family.name!r} but names {t.family!r}")
        if t.channel not in CHANNELS:
            raise ConfigError(f"{here}: channel {t.channel!r} is not one of {', '.join(CHANNELS)}")
        if t.category not in CATEGORIES:
            raise ConfigError(f"{here}: category must be marketing or service, got {t.category!r}")
        if not t.action or not isinstance(t.action, str):
            raise ConfigError(f"{here}: needs an action")
        if t.category == SERVICE and t.priority is not None:
            raise ConfigError(f"{here}: a service trigger takes policy.priorities.service")
        if t.category == MARKETING and (
            isinstance(t.priority, bool) or not isinstance(t.priority, int) or t.priority < 0
        ):
            raise ConfigError(f"{here}: a marketing trigger needs a priority (a whole number >= 0)")
        if t.goal is not None and not isinstance(t.goal, GoalSpec):
            raise ConfigError(f"{here}: goal must be a streams.core.goals.GoalSpec or None")
        if "goal" in t.parameters:
            raise ConfigError(f"{here}: 'goal' is declared with with_goal(), not a parameter")
        if not isinstance(t.parameters.get("enabled"), bool):
            raise ConfigError(f"{here}: parameter 'enabled' must default to true or false")


def _build(families: Iterable[tuple[TriggerFamily, str]], plugins: tuple[str, ...]) -> Registry:
    kept: list[TriggerFamily] = []
    family_from: dict[str, str] = {}
    trigger_from: dict[str, str] = {}
    for family, where in families:
        _check(family, where)
        if family.name in family_from:
            raise ConfigError(
                f"{where}: trigger family {family.name!r} is registered twice "
                f"(also by {family_from[family.name]})"
            )
        family_from[family.name] = where
        for t in family.triggers:
            if t.name in trigger_from:
                raise ConfigError(
                    f"{where}: trigger {t.name!r} is registered twice "
                    f"(also by {trigger_from[t.name]})"
                )
            trigger_from[t.name] = where
        kept.append(family)
    return Registry(tuple(kept), plugins)


def _entry_point_families() -> list[tuple[TriggerFamily, str]]:
    out = []
    for ep in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
    ):
        where = f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP})"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin stops the start
            raise ConfigError(f"{where}: cannot be loaded: {type(exc).__name__}: {exc}") from None
        out += [(f, where) for f in _families_of(obj, where)]
    return out


def _module_families(plugins: Sequence[str]) -> list[tuple[TriggerFamily, str]]:
    out = []
    for i, path in enumerate(plugins):
        where = f"triggers.plugins[{i}] ({path})"
        try:
            module = importlib.import_module(path)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin stops the start
            raise ConfigError(f"{where}: cannot be imported: {type(exc).__name__}: {exc}") from None
        out += [(f, where) for f in _families_of(module, where)]
    return out


@functools.cache
def load_registry(plugins: tuple[str, ...] = (), *, entry_points: bool = True) -> Registry:
    """The built-in families, the installed entry points' and those of ``plugins`` (modules)."""
    found = [(f, "built in") for f in BUILTIN_FAMILIES]
    if entry_points:
        found += _entry_point_families()
    found += _module_families(plugins)
    return _build(found, tuple(plugins))


def builtin_registry() -> Registry:
    """Only the built-in families (what the contract's catalogue documents)."""
    return load_registry((), entry_points=False)


def registry_for(config: Mapping[str, Any]) -> Registry:
    """The registry of a validated configuration (its ``triggers.plugins``)."""
    return load_registry(tuple(config["triggers"].get("plugins", ())))


def registry_of(
    families: Sequence[TriggerFamily], *, entry_points: bool = False, plugins: Sequence[str] = ()
) -> Registry:
    """The built-in families and these (the testing kit's); the installed entry points' and
    those of the ``plugins`` modules too when asked."""
    found = [(f, "built in") for f in BUILTIN_FAMILIES]
    if entry_points:
        found += _entry_point_families()
    found += _module_families(plugins)
    given = [(f, "given") for f in families if all(f is not g for g, _ in found)]
    return _build(found + given, tuple(plugins))
