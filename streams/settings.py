"""The worker's settings: one frozen object, built from options and environment, validated."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streams.config import load_config
from streams.core.errors import ConfigError
from streams.kafka.security import KafkaSecurity, from_env
from streams.ledger import redis_url as redis_url_module

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
CLOCKS = ("wall", "event")
STORES = ("rocksdb", "memory")
STATE_RESTORES = ("bulk", "faust")
BROKER_KINDS = ("kafka", "tansu")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Option:
    """One worker option: its flag, environment variable, default and help."""

    flag: str
    env: str
    default: str | None
    help: str
    secret: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


# The options outside tools rely on first; the rest are additions (docs/contract.md,
# "Command line": additions are allowed, renames are not).
OPTIONS: tuple[Option, ...] = (
    Option(
        "--bootstrap-servers",
        "KAFKA_BOOTSTRAP_SERVERS",
        "localhost:9092",
        "Kafka bootstrap servers, host:port[,host:port...]",
    ),
    Option(
        "--redis-url",
        "REDIS_URL",
        "redis://localhost:6379/0",
        "Redis URL of the contact ledger (redis://, rediss:// for TLS; password masked in logs)",
        secret=True,
    ),
    Option(
        "--clock",
        "CLOCK",
        "wall",
        "wall: now is the wall clock; event: now is each partition's stream time",
    ),
    Option(
        "--config",
        "TRIGGERS_CONFIG",
        None,
        "YAML file with the sections topics, triggers, policy (defaults built in)",
    ),
    Option(
        "--partitions",
        "TOPIC_PARTITIONS",
        "8",
        "partition count used when the worker creates topics",
    ),
    Option(
        "--metrics-port",
        "METRICS_PORT",
        "9108",
        "port of /metrics, /healthz, /ready and /ledger (0 picks a free port and logs it)",
    ),
    Option(
        "--metrics-host",
        "METRICS_HOST",
        "127.0.0.1",
        "address the metrics port listens on (0.0.0.0: every interface, as in the container "
        "image, for a scraper on another host)",
    ),
    Option(
        "--state-dir", "STATE_DIR", "./state", "directory where the RocksDB store keeps its files"
    ),
    Option(
        "--app-id",
        "APP_ID",
        "lifecycle-triggers",
        "consumer group id and prefix of internal topics",
    ),
    Option(
        "--store",
        "STATE_STORE",
        "rocksdb",
        "table store: rocksdb (durable, default) or memory (tests and small runs)",
    ),
    Option(
        "--state-restore",
        "STATE_RESTORE",
        "bulk",
        "how RocksDB partitions are restored from their changelogs when assigned: bulk (large "
        "fetches written in batches, then Faust's recovery reads the tail) or faust (Faust's "
        "recovery alone, record by record)",
    ),
    Option(
        "--broker-kind",
        "BROKER_KIND",
        "kafka",
        "kafka, or tansu for the local dev broker (works around its ListOffsets answer)",
    ),
    Option(
        "--session-timeout",
        "KAFKA_SESSION_TIMEOUT",
        "30",
        "consumer group session timeout in seconds (3-6 on the dev stack)",
    ),
    Option(
        "--heartbeat-interval",
        "KAFKA_HEARTBEAT_INTERVAL",
        "3",
        "consumer group heartbeat interval in seconds",
    ),
    Option(
        "--commit-interval",
        "KAFKA_COMMIT_INTERVAL",
        "2.8",
        "seconds between input offset commits (Faust's default); longer means more input "
        "read again after a crash, never less safety",
    ),
    Option(
        "--replication-factor",
        "TOPIC_REPLICATION_FACTOR",
        "1",
        "replication factor of topics the worker creates (3 on a production cluster)",
    ),
    Option(
        "--ledger-wait-replicas",
        "LEDGER_WAIT_REPLICAS",
        "0",
        "replicas every ledger write waits for (WAIT); 1 closes the failover window, at a cost",
    ),
    Option(
        "--group-instance-id",
        "GROUP_INSTANCE_ID",
        None,
        "static group membership id (e.g. the pod name): a restart within the session timeout "
        "keeps its partitions without a rebalance",
    ),
    Option(
        "--ledger-namespace",
        "LEDGER_NAMESPACE",
        "lt",
        "key prefix of the contact ledger in Redis (a back-test uses its own)",
    ),
    Option(
        "--broker-wait-seconds",
        "BROKER_WAIT_SECONDS",
        "300",
        "how long the worker waits at start for a broker to answer, retrying with backoff, "
        "before it exits 1 (0: one attempt)",
    ),
    Option(
        "--shutdown-timeout-seconds",
        "SHUTDOWN_TIMEOUT_SECONDS",
        "30",
        "after SIGTERM/SIGINT, how long the worker may take to leave the group and flush before "
        "it exits 1 anyway (a broker that went away first holds the stop for ever); what it had "
        "not written is read again, as after a crash",
    ),
    Option("--log-level", "LOG_LEVEL", "info", "debug, info, warning or error"),
    Option(
        "--log-format",
        "LOG_FORMAT",
        "text",
        "text, or json (one object a line) for a log collector; covers Faust's lines too",
    ),
)
# The longest start-up wait for the broker: a day; beyond that a supervisor should restart.
MAX_BROKER_WAIT_SECONDS = 86_400


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add every worker option, each showing its environment variable in --help."""
    for opt in OPTIONS:
        shown = "(none)" if opt.default is None else opt.default
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            default=None,
            metavar=opt.dest.upper(),
            help=f"{opt.help} [env: {opt.env}; default: {shown}]",
        )


def mask_url(url: str) -> str:
    """The URL with any password replaced by *** (every Redis URL form we accept)."""
    return redis_url_module.mask(url)


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}: must be a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{name}: must be between 0 and 3600 seconds, got {text!r}")
    return value


def _wait_seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: must be a number of seconds, got {text!r}") from None
    if not 0 <= value <= MAX_BROKER_WAIT_SECONDS:
        raise ConfigError(
            f"{name}: must be between 0 and {MAX_BROKER_WAIT_SECONDS} seconds, got {text!r}"
        )
    return value


def check_bootstrap_servers(name: str, text: str) -> str:
    """``host:port[,host:port...]`` with a host and a port from 1 to 65535 each (IPv6 hosts in
    brackets); the stripped text. Raises ConfigError naming ``name`` and the bad address."""
    servers = text.strip()
    if not servers:
        raise ConfigError(f"{name}: must be host:port[,host:port...], got {text!r}")
    for item in servers.split(","):
        address = item.strip()
        host, colon, port = address.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if (
            not colon
            or not host
            or (":" in host and not bracketed)
            or host.strip("[]") == ""
            or any(c.isspace() for c in host)
            or not port.isdigit()
            or not 0 < int(port) < 65_536
        ):
            raise ConfigError(
                f"{name}: {address!r} is not host:port (a host name or address and a port "
                f"from 1 to 65535; IPv6 in brackets, [::1]:9092); got {text!r}"
            )
    return servers


def check_host(name: str, text: str) -> str:
    """An IP address or a host name to listen on."""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    labels = text.split(".")
    if text and len(text) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels):
        return text
    raise ConfigError(f"{name}: must be an IP address or a host name, got {text!r}")


def _choice(name: str, text: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {text!r}")
    return text


@dataclass(frozen=True)
class Settings:
    """Everything the worker needs to run, validated. Secrets are masked in ``repr``."""

    bootstrap_servers: str
    redis_url: str = field(repr=False)
    clock: str
    config_path: Path | None
    config: Mapping[str, Any] = field(repr=False)
    partitions: int
    metrics_port: int
    metrics_host: str
    state_dir: Path
    app_id: str
    store: str
    state_restore: str
    broker_kind: str
    session_timeout: float
    heartbeat_interval: float
    commit_interval: float
    replication_factor: int
    group_instance_id: str | None
    ledger_wait_replicas: int
    ledger_namespace: str
    log_level: str
    log_format: str
    broker_wait_seconds: float
    shutdown_timeout_seconds: float
    # SASL/TLS for Kafka come from the environment only (KAFKA_SECURITY_PROTOCOL, ...): never
    # a secret on a command line.
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity, repr=False)

    @property
    def redis_url_masked(self) -> str:
        return mask_url(self.redis_url)

    @property
    def topics(self) -> Mapping[str, str]:
        topics: Mapping[str, str] = self.config["topics"]
        return topics

    @classmethod
    def from_options(
        cls, values: Mapping[str, str | None], environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Options given on the command line win over the environment, which wins over defaults.

        Raises ConfigError naming the option (and its environment variable) that is wrong.
        """
        env = os.environ if environ is None else environ
        raw: dict[str, str | None] = {}
        names: dict[str, str] = {}
        for opt in OPTIONS:
            given = values.get(opt.dest)
            raw[opt.dest] = given if given is not None else env.get(opt.env, opt.default)
            names[opt.dest] = f"{opt.flag} ({opt.env})"

        def text(dest: str) -> str:
            value = raw[dest]
            assert value is not None  # noqa: S101 - every option but --config has a default
            return value

        bootstrap = check_bootstrap_servers(names["bootstrap_servers"], text("bootstrap_servers"))
        redis_url = text("redis_url")
        if urlsplit(redis_url).scheme not in redis_url_module.SCHEMES:
            raise ConfigError(
                f"{names['redis_url']}: must start with one of "
                f"{', '.join(s + '://' for s in redis_url_module.SCHEMES)}; "
                f"got {mask_url(redis_url)!r}"
            )
        try:
            redis_url_module.parse(redis_url)
        except ConfigError as exc:
            raise ConfigError(f"{names['redis_url']}: {exc}") from None
        heartbeat = _seconds(names["heartbeat_interval"], text("heartbeat_interval"))
        session = _seconds(names["session_timeout"], text("session_timeout"))
        if heartbeat >= session:
            raise ConfigError(
                f"{names['heartbeat_interval']}: must be less than the session timeout "
                f"({session} s)"
            )
        app_id = text("app_id")
        if not app_id or not all(c.isalnum() or c in "._-" for c in app_id):
            raise ConfigError(
                f"{names['app_id']}: letters, digits, '.', '_' and '-' only, got {app_id!r}"
            )
        namespace = text("ledger_namespace")
        if not namespace or any(c in namespace for c in "{}: "):
            raise ConfigError(
                f"{names['ledger_namespace']}: must be non-empty, without '{{', '}}', ':' or "
                f"spaces, got {namespace!r}"
            )
        config_path = Path(raw["config"]) if raw["config"] else None
        log_level = _choice(
            names["log_level"], text("log_level").lower(), ("debug", "info", "warning", "error")
        )
        return cls(
            bootstrap_servers=bootstrap,
            redis_url=redis_url,
            clock=_choice(names["clock"], text("clock"), CLOCKS),
            config_path=config_path,
            config=load_config(config_path),
            partitions=_int(names["partitions"], text("partitions"), 1, 10_000),
            metrics_port=_int(names["metrics_port"], text("metrics_port"), 0, 65_535),
            metrics_host=check_host(names["metrics_host"], text("metrics_host")),
            state_dir=Path(text("state_dir")),
            app_id=app_id,
            store=_choice(names["store"], text("store"), STORES),
            state_restore=_choice(names["state_restore"], text("state_restore"), STATE_RESTORES),
            broker_kind=_choice(names["broker_kind"], text("broker_kind"), BROKER_KINDS),
            session_timeout=session,
            heartbeat_interval=heartbeat,
            commit_interval=_seconds(names["commit_interval"], text("commit_interval")),
            replication_factor=_int(
                names["replication_factor"], text("replication_factor"), 1, 100
            ),
            group_instance_id=raw["group_instance_id"] or None,
            ledger_wait_replicas=_int(
                names["ledger_wait_replicas"], text("ledger_wait_replicas"), 0, 16
            ),
            ledger_namespace=namespace,
            log_level=log_level,
            log_format=_choice(names["log_format"], text("log_format").lower(), LOG_FORMATS),
            broker_wait_seconds=_wait_seconds(
                names["broker_wait_seconds"], text("broker_wait_seconds")
            ),
            shutdown_timeout_seconds=_seconds(
                names["shutdown_timeout_seconds"], text("shutdown_timeout_seconds")
            ),
            kafka_security=from_env(env),
        )
