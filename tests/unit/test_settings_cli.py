"""Settings and the command line: options, environment, defaults, and refusals by name."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.cli import main
from streams.core.errors import BrokerUnavailable, ConfigError
from streams.kafka.topics import backoff_delays, wait_for_brokers
from streams.settings import OPTIONS, Settings, mask_url
from streams.tools.devstack import free_port

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
        ({"metrics_host": "not a host"}, r"--metrics-host \(METRICS_HOST\): must be an IP"),
        ({"metrics_host": ""}, "--metrics-host"),
        ({"log_format": "xml"}, r"--log-format \(LOG_FORMAT\): must be one of text, json"),
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


BOOTSTRAP = r"--bootstrap-servers \(KAFKA_BOOTSTRAP_SERVERS\)"


@pytest.mark.parametrize(
    "servers",
    [
        "localhost:notaport",
        ":9092",
        "",
        "   ",
        "localhost",
        "localhost:0",
        "localhost:65536",
        "localhost:-1",
        "::1:9092",  # IPv6 needs brackets: which colon starts the port?
        "[]:9092",
        "kafka-1:9092,,kafka-2:9092",
        "kafka-1:9092,",
        "kafka 1:9092",
    ],
)
def test_a_malformed_broker_address_is_refused_by_name(servers: str) -> None:
    with pytest.raises(ConfigError, match=BOOTSTRAP):
        Settings.from_options({"bootstrap_servers": servers}, environ={})


@pytest.mark.parametrize(
    "servers", ["kafka:9092", "10.0.0.1:1", "[::1]:9092", "k1:9092, k2:9093", " k:65535 "]
)
def test_well_formed_broker_addresses_are_accepted(servers: str) -> None:
    settings = Settings.from_options({"bootstrap_servers": servers}, environ={})
    assert settings.bootstrap_servers == servers.strip()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:abc/0", "port 'abc' is not a number"),
        ("rediss://:s3cret-pw@localhost:abc/0", "port 'abc' is not a number"),
        ("redis://localhost:0/0", "port '0'"),
        ("redis://localhost:99999/0", "port '99999'"),
        ("redis://localhost:/0", "port ''"),
        ("redis://localhost:6379/ledger", "must be a database number"),
        ("redis://localhost:6379/0?socket_timeout=soon", "socket_timeout"),
        ("unix:///run/redis.sock?db=first", "'db'"),
    ],
)
def test_a_malformed_redis_url_is_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"--redis-url \(REDIS_URL\)") as info:
        Settings.from_options({"redis_url": url}, environ={})
    assert message in str(info.value)
    assert "s3cret-pw" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost/0", "rediss://u:p@h:6380", "redis://[::1]:6379/2", "unix:///r.sock"]
)
def test_well_formed_redis_urls_are_accepted(url: str) -> None:
    assert Settings.from_options({"redis_url": url}, environ={}).redis_url == url


def test_broker_wait_is_a_setting_with_a_default_and_a_range() -> None:
    assert Settings.from_options({}, environ={}).broker_wait_seconds == 300
    env = {"BROKER_WAIT_SECONDS": "12.5"}
    assert Settings.from_options({}, environ=env).broker_wait_seconds == 12.5
    assert Settings.from_options({"broker_wait_seconds": "0"}, environ={}).broker_wait_seconds == 0
    for bad in ("-1", "soon", "86401", "nan"):
        with pytest.raises(ConfigError, match=r"--broker-wait-seconds \(BROKER_WAIT_SECONDS\)"):
            Settings.from_options({"broker_wait_seconds": bad}, environ={})


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--redis-url", "redis://localhost:abc/0", "--redis-url (REDIS_URL)"),
        ("--bootstrap-servers", "localhost:notaport", "--bootstrap-servers"),
        ("--bootstrap-servers", ":9092", "--bootstrap-servers"),
    ],
)
def test_worker_exits_2_naming_a_malformed_address(
    option: str, value: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens at either default address here: a refusal must come before connecting.
    assert main(["worker", option, value]) == 2
    err = capsys.readouterr().err
    assert named in err and value in err


def test_worker_waits_for_an_absent_broker_then_exits_1_in_one_line() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "streams", "worker"],
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "BROKER_WAIT_SECONDS": "2",
            "STATE_STORE": "memory",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    waiting = [line for line in result.stderr.splitlines() if "retrying for up to 2 s" in line]
    assert len(waiting) == 1, result.stderr
    assert (
        f"--bootstrap-servers (KAFKA_BOOTSTRAP_SERVERS): no broker answers at 127.0.0.1:{port}"
        in waiting[0]
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lifecycle-triggers worker: error: --bootstrap-servers")
    assert f"no broker answered at 127.0.0.1:{port} within 2 s" in last
    # The client's own connection errors are folded into ours, not one line per attempt.
    assert "ERROR aiokafka" not in result.stderr


def test_the_start_up_wait_backs_off_to_a_cap() -> None:
    delays = list(itertools.islice(backoff_delays(0.5, 5.0), 7))
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_a_wait_of_zero_tries_once_and_names_the_option_and_address() -> None:
    calls: list[str] = []

    async def absent(servers: str, security: object) -> None:
        calls.append(servers)
        raise BrokerUnavailable("Unable to bootstrap")

    with pytest.raises(BrokerUnavailable) as info:
        asyncio.run(wait_for_brokers("k:9", 0, probe=absent))
    assert calls == ["k:9"]
    assert str(info.value) == (
        "--bootstrap-servers (KAFKA_BOOTSTRAP_SERVERS): no broker answered at k:9 within 0 s "
        "(last error: Unable to bootstrap)"
    )


def test_the_wait_goes_on_once_a_broker_answers(caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([False, False, True])

    async def late(servers: str, security: object) -> None:
        if not next(answers):
            raise BrokerUnavailable("Unable to bootstrap")

    with caplog.at_level(logging.INFO, logger="streams.kafka.topics"):
        asyncio.run(wait_for_brokers("k:9", 60, probe=late))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "--bootstrap-servers (KAFKA_BOOTSTRAP_SERVERS): no broker answers at k:9; "
        "retrying for up to 60 s"
    ]
    assert any("a broker answers at k:9 after" in r.getMessage() for r in caplog.records)


def test_the_metrics_port_listens_on_this_machine_only_unless_told() -> None:
    assert Settings.from_options({}, environ={}).metrics_host == "127.0.0.1"
    for host in ("0.0.0.0", "::", "worker-0.lifecycle-triggers", "10.1.2.3"):  # noqa: S104
        assert Settings.from_options({}, environ={"METRICS_HOST": host}).metrics_host == host
    assert Settings.from_options({}, environ={}).log_format == "text"


def test_the_worker_exits_2_naming_a_bad_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--log-format", "yaml"]) == 2
    assert "--log-format (LOG_FORMAT): must be one of text, json" in capsys.readouterr().err
