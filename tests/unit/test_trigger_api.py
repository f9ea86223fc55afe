"""The trigger API: the registry refuses what is ambiguous or broken at start, plugins named in
the configuration take part like built-in families, and their state slices are versioned and
survive an uninstall (kept unread, then dropped)."""

from __future__ import annotations

import orjson
import pytest

from streams.config import build_config
from streams.core import events as ev
from streams.core.catalogue import BUILTIN_FAMILIES, builtin_registry, load_registry, registry_of
from streams.core.engine import step
from streams.core.errors import ConfigError
from streams.core.state import CustomerState
from streams.core.triggers import TriggerParams
from streams.core.triggers.api import MARKETING, ORPHAN_KEEP_MS, TriggerFamily, spec
from streams.testing import Story, params_for
from tests.unit.plugin_fixture import BigSpender

PLUGIN = "tests.unit.plugin_fixture"


def _family(name: str, *triggers: str, **kw: object) -> TriggerFamily:
    class F(TriggerFamily):
        pass

    F.name = name
    F.triggers = tuple(
        spec(t, name, "act", str(kw.get("channel", "email")), MARKETING, 1) for t in triggers
    )
    return F()


def test_the_builtin_catalogue_is_the_registry_of_the_builtin_families() -> None:
    registry = builtin_registry()
    assert registry.families == BUILTIN_FAMILIES
    assert registry.names[:3] == (
        "savings_drop_to_checking",
        "savings_drop_to_wire",
        "savings_drop_unexplained",
    )
    assert len(registry.names) == len(set(registry.names)) == 16


def test_a_trigger_name_registered_twice_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match="'savings_drop_to_wire' is registered twice"):
        registry_of([_family("copycat", "savings_drop_to_wire")])


def test_a_family_name_registered_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="family 'savings' is registered twice"):
        registry_of([_family("savings", "something_new")])


def test_a_spec_with_an_unknown_channel_is_refused() -> None:
    with pytest.raises(ConfigError, match="channel 'pigeon'"):
        registry_of([_family("birds", "carrier", channel="pigeon")])


def test_a_plugin_module_named_in_the_configuration_takes_part() -> None:
    # Given a configuration naming the plugin module, with its parameter set
    config = build_config({"triggers": {"plugins": [PLUGIN], "big_purchase": {"min_amount": 500}}})
    params = TriggerParams.from_config(config)
    assert "big_purchase" in params.registry.names
    assert config["policy"]["priorities"]["big_purchase"] == 15
    # When a customer buys for 500
    event = ev.Purchase(
        event_id="p1",
        customer_id="c",
        occurred_at_ms=0,
        product_category="tv",
        amount_cents=50_000,
    )
    fired = step(None, event, 0, params).candidates
    # Then the plugin's trigger fires with its catalogue entry
    assert [(c.trigger, c.action, c.priority) for c in fired] == [
        ("big_purchase", "vip_welcome", 15)
    ]


def test_a_plugin_parameter_of_the_wrong_type_is_refused_by_its_key() -> None:
    with pytest.raises(ConfigError, match="triggers.big_purchase.min_amount: must be a number"):
        build_config({"triggers": {"plugins": [PLUGIN], "big_purchase": {"min_amount": "x"}}})


def test_a_plugin_that_does_not_import_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"triggers.plugins\[0\] \(no_such_module\.x\)"):
        build_config({"triggers": {"plugins": ["no_such_module.x"]}})
    with pytest.raises(ConfigError, match="triggers.plugins: must be a list of module paths"):
        build_config({"triggers": {"plugins": ["not a module"]}})


def test_an_unknown_trigger_section_is_refused() -> None:
    with pytest.raises(ConfigError, match="triggers.big_purchase: unknown key"):
        build_config({"triggers": {"big_purchase": {"enabled": True}}})


def _purchase(story: Story, day: float, amount: int = 2_000) -> None:
    story.send("purchase", day, product_category="tv", amount=amount, event_id=f"p{day}")


def test_a_slice_is_versioned_and_one_of_another_version_starts_afresh() -> None:
    # Given a customer with the plugin's slice (version 2)
    story = Story(triggers=["big_purchase"], families=[BigSpender()])
    _purchase(story, 0)
    _purchase(story, 1)
    assert story.state is not None
    stored = CustomerState.from_bytes(story.state.to_bytes())
    assert stored.ext == {"big_spender": [2, {"n": 2}]}
    # When the record says version 1 (written by an older plugin this one cannot read)
    stored.ext["big_spender"][0] = 1
    story.state = CustomerState.from_bytes(stored.to_bytes())
    _purchase(story, 2)
    # Then the slice starts afresh instead of being misread
    assert CustomerState.from_bytes(story.state.to_bytes()).ext == {"big_spender": [2, {"n": 1}]}


def test_the_slice_of_an_uninstalled_plugin_is_kept_unread_then_dropped() -> None:
    # Given a record with the plugin's slice
    with_plugin = Story(triggers=["big_purchase"], families=[BigSpender()])
    _purchase(with_plugin, 0)
    assert with_plugin.state is not None
    raw = with_plugin.state.to_bytes()
    # When a worker without the plugin goes on with it
    without = Story(params=params_for())
    assert "big_purchase" not in without.params.registry.names
    without.state = CustomerState.from_bytes(raw)
    without.send("complaint", 1, category="billing", event_id="k1")
    # Then the slice is kept as it was, marked with the floor it was first found orphaned at
    assert without.state is not None
    entry = CustomerState.from_bytes(without.state.to_bytes()).ext["big_spender"]
    assert entry[:2] == [2, {"n": 1}]
    orphaned_at = entry[2]
    # and a reinstalled plugin still reads it
    again = Story(triggers=["big_purchase"], families=[BigSpender()])
    again.state = CustomerState.from_bytes(without.state.to_bytes())
    _purchase(again, 2)
    assert CustomerState.from_bytes(again.state.to_bytes()).ext["big_spender"] == [2, {"n": 2}]
    # but kept only until the floor (the clock less the 7 days' lateness) is more than
    # ORPHAN_KEEP_MS past that
    kept_until_day = without.day(orphaned_at + ORPHAN_KEEP_MS) + 7
    without.send("complaint", kept_until_day, category="billing", event_id="k2")
    assert without.state.floor_ms == orphaned_at + ORPHAN_KEEP_MS
    assert "big_spender" in CustomerState.from_bytes(without.state.to_bytes()).ext
    without.send("complaint", kept_until_day + 1, category="billing", event_id="k3")
    assert "big_spender" not in CustomerState.from_bytes(without.state.to_bytes()).ext


def test_the_installed_entry_points_are_registered() -> None:
    # The example plugin (examples/complaint_triggers) is installed by the test setup.
    assert {"complaint_streak", "complaint_check_in"} <= set(load_registry().names)


def test_an_entry_point_that_does_not_load_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an installed distribution whose entry point names a module that is not there
    import importlib.metadata

    from streams.core import catalogue

    broken = importlib.metadata.EntryPoint(
        name="broken", value="no_such_plugin_module:FAMILY", group=catalogue.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(catalogue.importlib.metadata, "entry_points", lambda group: [broken])
    # Then the registry refuses to start, naming the entry point and why
    with pytest.raises(
        ConfigError, match=r"entry point broken = no_such_plugin_module:FAMILY .* cannot be loaded"
    ):
        catalogue.registry_of([], entry_points=True)


def test_the_kit_takes_plugin_modules_from_the_configuration() -> None:
    story = Story(triggers=["big_purchase"], config={"triggers": {"plugins": [PLUGIN]}})
    _purchase(story, 0)
    assert story.names() == ["big_purchase"]


def test_the_kit_writes_events_as_the_contract_s_json_and_reads_them_back() -> None:
    # Given typed events with money, times and optional fields
    from streams.core.ingest import validate_payload
    from streams.testing import to_wire

    story = Story()
    events = [
        story.event(ev.Contract, 1, contract_id="k", product="gym", status="active",
                    expires_at_ms=story.at(90), auto_renew=True, price_cents=1_999),
        story.event(ev.Transaction, 2, account_id="a", account_type="savings",
                    direction="debit", amount_cents=150_000, rail="wire"),
        story.event(ev.Visit, 3, venue="zoo", sentiment="positive"),
    ]  # fmt: skip
    for event in events:
        # When written in the wire format and decoded by the worker's validator
        wire = to_wire(event)
        again = validate_payload(event.topic_kind, orjson.loads(orjson.dumps(wire)))
        # Then it is the same event
        assert again == event, wire
    assert to_wire(events[0])["price"] == 19.99 and to_wire(events[1])["amount"] == 1500


def test_the_metrics_know_every_registered_trigger() -> None:
    from streams.ops.metrics import Metrics

    metrics = Metrics()
    names = load_registry().names
    metrics.preset(("a", "u"), names)
    fired = {s.labels["trigger"] for m in metrics.triggers_fired.collect() for s in m.samples}
    assert set(names) <= fired and "complaint_streak" in fired
