"""The ``lifecycle-triggers`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from streams import __version__
from streams.core.errors import BrokerUnavailable, ConfigError, DevStackError, ReplacedLogError

PROG = "lifecycle-triggers"


def _parser() -> argparse.ArgumentParser:
    from streams.settings import add_options

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Kafka-native trigger processor for data-driven customer retention.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = sub.add_parser(
        "worker",
        help="run the stream processor until SIGTERM/SIGINT",
        description="Run the stream processor until SIGTERM/SIGINT, then leave the group and "
        "flush. Every option can also be set by the environment variable shown.",
    )
    add_options(worker)

    dev = sub.add_parser(
        "dev",
        help="start the local dev stack (Tansu broker, redis-server) and run a worker on it",
        description="Start a real Kafka-protocol broker (Tansu, memory storage) and a real "
        "redis-server on free local ports, create the topics, and run a worker against them "
        "until Ctrl-C; then stop everything it started.",
    )
    dev.add_argument("--partitions", type=int, default=8, help="partitions per topic (default 8)")
    dev.add_argument("--clock", default="wall", help="wall or event (default wall)")
    dev.add_argument("--config", default=None, help="YAML configuration file")
    dev.add_argument(
        "--metrics-port", default="0", help="metrics port (default 0: a free one, logged)"
    )
    dev.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics port listens on (default 127.0.0.1: this machine only)",
    )
    dev.add_argument("--log-format", default="text", help="text or json (default text)")
    dev.add_argument(
        "--sample",
        action="store_true",
        help="once the worker is ready, produce a few sample events (some malformed) and "
        "print the dead letters they cause",
    )

    config = sub.add_parser(
        "config",
        help="print the effective configuration (defaults merged with --config)",
        description="Validate a configuration file and print the effective configuration.",
    )
    config.add_argument(
        "--config",
        default=os.environ.get("TRIGGERS_CONFIG"),
        help="YAML configuration file [env: TRIGGERS_CONFIG]",
    )
    from streams.ledger.cli import add_ledger_commands
    from streams.tools.demo_cli import add_demo_commands
    from streams.tools.report import add_report_command

    add_ledger_commands(sub)
    add_demo_commands(sub)
    add_report_command(sub)
    return parser


def _setup_logging(level: str = "info", fmt: str = "text") -> None:
    from streams.ops.logs import setup_logging

    setup_logging(level, fmt)


def _cmd_worker(args: argparse.Namespace) -> int:
    from streams.kafka.app import run_worker
    from streams.settings import Settings

    settings = Settings.from_options(vars(args))
    _setup_logging(settings.log_level, settings.log_format)
    return run_worker(settings)


def _cmd_config(args: argparse.Namespace) -> int:
    from streams.config import dump_config, load_config

    sys.stdout.write(dump_config(load_config(Path(args.config) if args.config else None)))
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from streams.kafka.app import run_worker
    from streams.kafka.topics import TopicNames
    from streams.settings import Settings
    from streams.tools.devstack import (
        DEV_HEARTBEAT_INTERVAL,
        DEV_SESSION_TIMEOUT,
        DevStack,
        free_port,
    )

    # Validate everything we can before starting servers.
    probe = Settings.from_options(
        {
            "clock": args.clock,
            "config": args.config,
            "metrics_port": args.metrics_port,
            "metrics_host": args.metrics_host,
            "log_format": args.log_format,
            "partitions": str(args.partitions),
        }
    )
    _setup_logging(probe.log_level, probe.log_format)
    # SIGTERM must run the finally below (stop what we started), like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    stack = DevStack()
    try:
        stack.start()
        topics = TopicNames.from_config(probe.topics)
        stack.create_topics(topics.all, args.partitions)
        state_dir = tempfile.mkdtemp(prefix="lifecycle-state-", dir=stack.workdir)
        metrics_port = args.metrics_port
        if args.sample and metrics_port == "0":
            metrics_port = str(free_port())  # the sample player must know where to look
        settings = Settings.from_options(
            {
                "bootstrap_servers": stack.bootstrap_servers,
                "redis_url": stack.redis_url,
                "clock": args.clock,
                "config": args.config,
                "partitions": str(args.partitions),
                "metrics_port": metrics_port,
                "metrics_host": args.metrics_host,
                "log_format": args.log_format,
                "state_dir": state_dir,
                "app_id": "lifecycle-triggers-dev",
                "broker_kind": "tansu",
                "session_timeout": str(DEV_SESSION_TIMEOUT),
                "heartbeat_interval": str(DEV_HEARTBEAT_INTERVAL),
            }
        )
        print(
            f"dev stack: KAFKA_BOOTSTRAP_SERVERS={stack.bootstrap_servers} "
            f"REDIS_URL={stack.redis_url}\n"
            f"produce JSON events keyed by customer_id to {topics.account_events!r} or "
            f"{topics.usage_events!r}; decisions appear on {topics.contact_decisions!r}, "
            f"bad input on {topics.dead_letters!r}. Ctrl-C stops everything.",
            flush=True,
        )
        if args.sample:
            from streams.tools.samples import play_samples

            threading.Thread(
                target=asyncio.run,
                args=(play_samples(stack.bootstrap_servers, topics, settings.metrics_port),),
                daemon=True,
            ).start()
        try:
            return run_worker(settings)
        except SystemExit as exc:
            return int(exc.code or 0)
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()


def _cmd_ledger(args: argparse.Namespace) -> int:
    from streams.ledger.cli import run_ledger_command

    return run_ledger_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from streams.tools.demo_cli import run_demo_command

    return run_demo_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from streams.tools.report import run_report_command

    return run_report_command(args)


COMMANDS = {
    "worker": _cmd_worker,
    "dev": _cmd_dev,
    "config": _cmd_config,
    "ledger": _cmd_ledger,
    "simulate": _cmd_demo,
    "demo": _cmd_demo,
    "backtest": _cmd_demo,
    "report": _cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from streams.ops.pipesafe import protect_standard_streams

    protect_standard_streams()
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DevStackError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ReplacedLogError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except BrokerUnavailable as exc:  # not a bad option: the broker was not there in time
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
