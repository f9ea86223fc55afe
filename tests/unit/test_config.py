"""Configuration: contract defaults built in; anything unknown or wrong refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.config import (
    MAX_MESSAGE_BYTES_LIMIT,
    PRODUCER_MAX_REQUEST_BYTES,
    build_config,
    defaults_for,
    dump_config,
    load_config,
    thaw,
)
from streams.core.catalogue import load_registry
from streams.core.errors import ConfigError, InvalidEvent
from streams.core.ingest import dead_letter
from streams.kafka.app import _faust_settings
from streams.settings import Settings


def test_defaults_are_the_contracts() -> None:
    config = build_config()
    assert config["policy"]["global_caps"] == {"per_7_days": 2, "per_30_days": 6}
    assert config["policy"]["holdout_rate"] == 0.05
    assert config["triggers"]["renewal_reminder"]["days_before"] == (30, 7)
    assert config["topics"]["dead_letters"] == "dead-letters"
    assert thaw(config) == defaults_for(load_registry())


def test_override_merges_with_defaults_and_is_frozen() -> None:
    config = build_config({"policy": {"channel_caps": {"sms": {"max": 3}}}})
    assert config["policy"]["channel_caps"]["sms"] == {"max": 3, "days": 7}
    with pytest.raises(TypeError):
        config["policy"]["holdout_rate"] = 0.5  # type: ignore[index]


def test_open_maps_take_new_keys() -> None:
    config = build_config({"triggers": {"replacement_due": {"cycle_days": {"water_filter": 60}}}})
    assert config["triggers"]["replacement_due"]["cycle_days"]["water_filter"] == 60
    assert config["triggers"]["replacement_due"]["cycle_days"]["phone"] == 730


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"polcy": {}}, "polcy: unknown key"),
        ({"policy": {"holdout": 0.1}}, "policy.holdout: unknown key"),
        ({"policy": {"holdout_rate": 1.5}}, "policy.holdout_rate: must be between 0 and 1"),
        ({"policy": {"trigger_cooldown_days": 0}}, "policy.trigger_cooldown_days: must be greater"),
        ({"policy": {"trigger_cooldown_days": 1.5}}, "must be a whole number"),
        (
            {"policy": {"channel_caps": {"fax": {"max": 1, "days": 7}}}},
            "policy.channel_caps.fax: unknown key",
        ),
        ({"policy": {"priorities": {"not_a_trigger": 1}}}, "policy.priorities.not_a_trigger"),
        ({"triggers": {"never_activated": {"enabled": "yes"}}}, "must be true or false"),
        ({"triggers": {"renewal_reminder": {"days_before": []}}}, "days_before"),
        (
            {"triggers": {"savings_drop_to_wire": {"drop_fraction": 0.4}}},
            "triggers.savings_drop_to_wire.drop_fraction: must equal",
        ),
        ({"topics": {"dead_letters": "bad topic name"}}, "not a valid Kafka topic name"),
        ({"topics": {"dead_letters": "account-events"}}, "its own name"),
        ({"stream": "fast"}, "stream: must be a mapping"),
        ([1, 2], "the configuration: must be a mapping"),
    ],
)
def test_bad_configuration_is_refused_naming_the_key(override: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build_config(override)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  holdout_rate: 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*policy.holdout_rate"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("policy: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_empty_file_means_defaults_and_dump_round_trips(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert thaw(load_config(empty)) == defaults_for(load_registry())
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(dump_config(build_config({"policy": {"holdout_rate": 0}})))
    assert load_config(dumped)["policy"]["holdout_rate"] == 0


def test_channel_fallbacks_are_lists_of_known_channels() -> None:
    config = build_config({"policy": {"channel_fallbacks": {"renewal_reminder": ["push", "sms"]}}})
    assert config["policy"]["channel_fallbacks"]["renewal_reminder"] == ("push", "sms")
    assert config["policy"]["channel_fallbacks"]["never_activated"] == ()
    for bad in (["fax"], ["push", "push"]):
        with pytest.raises(ConfigError, match="channel_fallbacks.renewal_reminder"):
            build_config({"policy": {"channel_fallbacks": {"renewal_reminder": bad}}})


def test_max_message_bytes_is_bounded_by_what_the_producer_can_carry() -> None:
    limit = MAX_MESSAGE_BYTES_LIMIT
    assert build_config({"stream": {"max_message_bytes": limit}})["stream"]["max_message_bytes"]
    for too_big in (limit + 1, 10**26):
        with pytest.raises(ConfigError) as info:
            build_config({"stream": {"max_message_bytes": too_big}})
        message = str(info.value)
        assert message.startswith("stream.max_message_bytes: must be between 1 and")
        assert str(limit) in message and str(too_big) in message
    with pytest.raises(ConfigError, match=r"stream\.max_message_bytes"):
        build_config({"stream": {"max_message_bytes": 0}})


def test_a_dead_letter_of_the_largest_accepted_value_fits_one_producer_request() -> None:
    # Binary values go base64 into the dead letter (4/3 of their size), in a JSON envelope;
    # the producer refuses a record above its request limit (MessageSizeTooLargeError).
    value = bytes(range(256)) * (MAX_MESSAGE_BYTES_LIMIT // 256)
    key = b"c" * 128
    record = dead_letter(
        source_topic="account-events",
        partition=0,
        offset=1,
        key=key,
        value=value,
        error=InvalidEvent("invalid_json", "value: not valid UTF-8 JSON (unexpected byte)"),
        received_at_ms=0,
    )
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, record, [])
    assert size <= PRODUCER_MAX_REQUEST_BYTES
    assert (
        _faust_settings(Settings.from_options({}, environ={}))["producer_max_request_size"]
        == PRODUCER_MAX_REQUEST_BYTES
    )
