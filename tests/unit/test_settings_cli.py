"""Settings and the command line: options, environment, defaults, and refusals by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.cli import main
from streams.errors import ConfigError
from streams.settings import OPTIONS, Settings, mask_url

CONTRACT_OPTIONS = {
    "--bootstrap-servers": "KAFKA_BOOTSTRAP_SERVERS",
    "--redis-url": "REDIS_URL",
    "--clock": "CLOCK",
    "--config": "TRIGGERS_CONFIG",
    "--partitions": "TOPIC_PARTITIONS",
    "--metrics-port": "METRICS_PORT",
    "--state-dir": "STATE_DIR",
    "--app-id": "APP_ID",
}


def test_defaults_are_the_contracts() -> None:
    s = Settings.from_options({}, environ={})
    assert s.bootstrap_servers == "localhost:9092"
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.clock, s.partitions, s.metrics_port, s.app_id) == (
        "wall",
        8,
        9108,
        "lifecycle-triggers",
    )


def test_options_win_over_environment_which_wins_over_defaults() -> None:
    env = {"CLOCK": "event", "TOPIC_PARTITIONS": "4", "APP_ID": "from-env"}
    s = Settings.from_options({"app_id": "from-flag"}, environ=env)
    assert (s.clock, s.partitions, s.app_id) == ("event", 4, "from-flag")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"clock": "sometimes"}, r"--clock \(CLOCK\): must be one of wall, event"),
        ({"partitions": "many"}, r"--partitions \(TOPIC_PARTITIONS\): must be a whole number"),
        ({"partitions": "0"}, "between 1 and"),
        ({"metrics_port": "70000"}, "--metrics-port"),
        ({"bootstrap_servers": "nohost"}, "--bootstrap-servers"),
        ({"redis_url": "http://x"}, "--redis-url"),
        ({"app_id": "has space"}, "--app-id"),
        ({"store": "disk"}, "--store"),
        ({"session_timeout": "1", "heartbeat_interval": "2"}, "--heartbeat-interval"),
    ],
)
def test_bad_options_are_refused_by_name(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_options(values, environ={})


def test_secrets_are_masked() -> None:
    url = "rediss://ledger:s3cret-pw@redis.internal:6380/0"
    s = Settings.from_options({"redis_url": url}, environ={})
    assert "s3cret-pw" not in repr(s)
    assert s.redis_url_masked == "rediss://ledger:***@redis.internal:6380/0"
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    with pytest.raises(ConfigError) as info:
        Settings.from_options({"redis_url": "http://u:s3cret-pw@h"}, environ={})
    assert "s3cret-pw" not in str(info.value)


def test_worker_help_shows_every_contract_option_with_its_variable() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams", "worker", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flat = " ".join(out.split())
    for flag, env in CONTRACT_OPTIONS.items():
        assert flag in flat
        assert f"env: {env}" in flat
    for opt in OPTIONS:
        assert f"env: {opt.env}" in flat


def test_worker_refuses_a_bad_clock_before_consuming(capsys: pytest.CaptureFixture[str]) -> None:
    # The broker address points nowhere: the refusal must come before any connection.
    assert main(["worker", "--clock", "sometimes", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--clock" in err and "sometimes" in err


def test_worker_refuses_an_unknown_config_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text("policy:\n  global_caps:\n    per_7_days: 2\n    per_week: 3\n")
    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "worker",
            "--config",
            str(config),
            "--bootstrap-servers",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 2
    assert "policy.global_caps.per_week: unknown key" in code.stderr


def test_config_command_prints_the_effective_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("policy:\n  holdout_rate: 0.1\n")
    assert main(["config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "holdout_rate: 0.1" in out and "savings_drop_to_wire" in out
