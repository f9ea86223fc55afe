"""The ``simulate``, ``demo`` and ``backtest`` commands of ``lifecycle-triggers``.

``add_demo_commands(subparsers)`` registers them; ``run_demo_command(args)`` runs the one
chosen and returns the exit code. Options can also come from the environment variables shown
in ``--help`` (a command-line option wins).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from streams.core.errors import ConfigError

DEMO_COMMANDS = ("simulate", "demo", "backtest")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _conversion(text: str) -> tuple[str, float, float]:
    trigger, _, rates = text.partition("=")
    contact, _, holdout = rates.partition(",")
    try:
        pair = (_fraction(contact), _fraction(holdout))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"TRIGGER=CONTACT,HOLDOUT: {exc}") from None
    if not trigger:
        raise argparse.ArgumentTypeError(f"must be TRIGGER=CONTACT,HOLDOUT, got {text!r}")
    return trigger, *pair


def _simulation_options(
    p: argparse.ArgumentParser, customers: int, days: int, planted_rate: str = "0.03"
) -> None:
    """Options shared by ``simulate`` and ``demo``: what to simulate."""
    p.add_argument(
        "--customers",
        type=_positive_int,
        default=_env("SIM_CUSTOMERS", str(customers)),
        help=f"simulated customers [env: SIM_CUSTOMERS; default: {customers}]",
    )
    p.add_argument(
        "--days",
        type=_positive_int,
        default=_env("SIM_DAYS", str(days)),
        help="days of history; triggers whose scenario needs more are not planted (the yearly "
        f"habit needs 747) [env: SIM_DAYS; default: {days}]",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=_env("SIM_SEED", "7"),
        help="random seed: the same seed gives the same records [env: SIM_SEED; default: 7]",
    )
    p.add_argument(
        "--start",
        default=_env("SIM_START", "2024-01-01"),
        help="first simulated day, YYYY-MM-DD [env: SIM_START; default: 2024-01-01]",
    )
    p.add_argument(
        "--planted-rate",
        type=_fraction,
        default=_env("SIM_PLANTED_RATE", planted_rate),
        help="share of customers carrying a planted scenario, spread over the triggers (at "
        f"least one per trigger) [env: SIM_PLANTED_RATE; default: {planted_rate}]",
    )
    p.add_argument(
        "--near-miss-rate",
        type=_fraction,
        default=_env("SIM_NEAR_MISS_RATE", "0.03"),
        help="share of customers carrying a near-miss (just on the wrong side of one clause) "
        "[env: SIM_NEAR_MISS_RATE; default: 0.03]",
    )
    p.add_argument(
        "--malformed-rate",
        type=_fraction,
        default=_env("SIM_MALFORMED_RATE", "0.005"),
        help="malformed records per valid one [env: SIM_MALFORMED_RATE; default: 0.005]",
    )
    p.add_argument(
        "--conversion-contact",
        type=_fraction,
        default=_env("SIM_CONVERSION_CONTACT", "0.30"),
        help="probability that a planted decision with a goal, contacted, gets its goal event "
        "in its window [env: SIM_CONVERSION_CONTACT; default: 0.30]",
    )
    p.add_argument(
        "--conversion-holdout",
        type=_fraction,
        default=_env("SIM_CONVERSION_HOLDOUT", "0.10"),
        help="the same for a held-out one; the planted lift is the difference "
        "[env: SIM_CONVERSION_HOLDOUT; default: 0.10]",
    )
    p.add_argument(
        "--conversion",
        type=_conversion,
        action="append",
        default=[],
        metavar="TRIGGER=CONTACT,HOLDOUT",
        help="the two probabilities for one trigger (repeatable)",
    )
    p.add_argument(
        "--no-engagement",
        action="store_true",
        help="do not simulate answers (opened, clicked, ...) to earlier decisions",
    )
    p.add_argument(
        "--partitions",
        type=_positive_int,
        default=_env("TOPIC_PARTITIONS", "8"),
        help="partitions of the input topics [env: TOPIC_PARTITIONS; default: 8]",
    )
    p.add_argument(
        "--truth",
        type=Path,
        default=os.environ.get("SIM_TRUTH"),
        help="write the ground truth (JSON lines) to this file [env: SIM_TRUTH]",
    )
    p.add_argument(
        "--pace",
        choices=("fast", "realtime"),
        default=_env("SIM_PACE", "fast"),
        help="fast: as fast as the broker takes it; realtime: hold each record until its "
        "time, sped up by --speed [env: SIM_PACE; default: fast]",
    )
    p.add_argument(
        "--speed",
        type=_positive_float,
        default=_env("SIM_SPEED", "86400"),
        help="with --pace realtime, simulated seconds per wall second (1: real time; 86400: "
        "a day per second) [env: SIM_SPEED; default: 86400]",
    )


def add_demo_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulate``, ``demo`` and ``backtest`` on the CLI's subparsers."""
    sim = subparsers.add_parser(
        "simulate",
        help="produce simulated customers with planted, labelled scenarios to a broker",
        description="Produce realistic, contract-valid histories of simulated customers, with "
        "planted scenarios and near-misses for every trigger, to the input topics of any "
        "broker; write the ground truth with --truth. The same seed gives the same records.",
    )
    _simulation_options(sim, 2_000, 760)
    sim.add_argument(
        "--bootstrap-servers",
        default=_env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
        help="Kafka bootstrap servers [env: KAFKA_BOOTSTRAP_SERVERS; default: localhost:9092]",
    )
    sim.add_argument(
        "--config",
        default=os.environ.get("TRIGGERS_CONFIG"),
        help="YAML configuration whose topics section names the input topics and whose "
        "policy.holdout_rate says which decisions the worker holds out [env: TRIGGERS_CONFIG]",
    )
    sim.add_argument(
        "--dry-run",
        action="store_true",
        help="only build the records and the ground truth; produce nothing",
    )

    demo = subparsers.add_parser(
        "demo",
        help="dev stack + worker + simulated customers: see every planted scenario found",
        description="Start the local dev stack (Tansu broker, redis-server), a worker with "
        "the event clock, and simulated customers with planted scenarios; show decisions "
        "live and end with a summary against the ground truth. Exits 1 when a planted "
        "scenario was missed or a near-miss fired. Ctrl-C stops everything it started.",
    )
    # Most customers planted and half the decisions held out: about 75 planted decisions per
    # trigger, enough in one run for every trigger's lift interval to say something.
    _simulation_options(demo, 1_500, 760, planted_rate="0.8")
    demo.add_argument(
        "--holdout-rate",
        type=_fraction,
        default=_env("DEMO_HOLDOUT_RATE", "0.5"),
        help="policy.holdout_rate of the worker (and of the simulator's arms) "
        "[env: DEMO_HOLDOUT_RATE; default: 0.5]",
    )
    demo.add_argument(
        "--settle-seconds",
        type=_positive_float,
        default=_env("DEMO_SETTLE_SECONDS", "20"),
        help="after all events are in, how long to wait for missing decisions "
        "[env: DEMO_SETTLE_SECONDS; default: 20]",
    )
    demo.add_argument(
        "--plain",
        action="store_true",
        help="progress as plain lines (the default when stdout is not a terminal)",
    )

    bt = subparsers.add_parser(
        "backtest",
        help="replay historical events through triggers and policy in an isolated ledger",
        description="Replay a JSON-lines file of contract events (or the input topics) through "
        "the triggers and the contact policy, with the event clock and a contact ledger in its "
        "own Redis namespace, and report decision volumes per trigger, cap hits by reason and "
        "trigger conflicts. Publishes nothing; the production ledger keys are not touched.",
    )
    source = bt.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, help="JSON-lines file of input events")
    source.add_argument(
        "--from-topics",
        action="store_true",
        help="read the input topics (named by --config) from their start to their current end",
    )
    bt.add_argument(
        "--bootstrap-servers",
        default=_env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
        help="with --from-topics [env: KAFKA_BOOTSTRAP_SERVERS; default: localhost:9092]",
    )
    bt.add_argument(
        "--redis-url",
        default=_env("REDIS_URL", "redis://localhost:6379/0"),
        help="Redis for the back-test's own ledger namespace [env: REDIS_URL; default: "
        "redis://localhost:6379/0]",
    )
    bt.add_argument(
        "--config",
        default=os.environ.get("TRIGGERS_CONFIG"),
        help="YAML configuration to try (triggers, policy, topics) [env: TRIGGERS_CONFIG]",
    )
    bt.add_argument(
        "--namespace",
        default=None,
        help="ledger namespace (default: bt-<random>; 'lt', production, is refused)",
    )
    bt.add_argument(
        "--keep-ledger",
        action="store_true",
        help="keep the namespace's ledger keys afterwards (default: deleted)",
    )
    bt.add_argument(
        "--partitions",
        type=_positive_int,
        default=_env("TOPIC_PARTITIONS", "8"),
        help="partitions to spread customers over, as the worker's topics do (stream time is "
        "per partition) [env: TOPIC_PARTITIONS; default: 8]",
    )
    bt.add_argument("--since", help="only events at or after this time (RFC 3339 or a date)")
    bt.add_argument("--until", help="only events before this time (RFC 3339 or a date)")
    bt.add_argument("--json", action="store_true", help="print the report as JSON")


def _sim_config(
    args: argparse.Namespace, holdout_rate: float, global_control_rate: float = 0.0
) -> object:
    from streams.tools.simulator import SimConfig

    try:
        return SimConfig(
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            start=args.start,
            planted_rate=args.planted_rate,
            near_miss_rate=args.near_miss_rate,
            malformed_rate=args.malformed_rate,
            engagement=not args.no_engagement,
            partitions=args.partitions,
            conversion_contact=args.conversion_contact,
            conversion_holdout=args.conversion_holdout,
            conversion_by_trigger=tuple(args.conversion),
            holdout_rate=holdout_rate,
            global_control_rate=global_control_rate,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _cmd_simulate(args: argparse.Namespace) -> int:
    from streams.config import load_config
    from streams.kafka.topics import TopicNames, ensure_topics
    from streams.tools.simulator import SimConfig, generate, produce

    loaded = load_config(Path(args.config) if args.config else None)
    # Which decisions the worker holds out (by hash) is what the planted conversions need.
    policy = loaded["policy"]
    config = _sim_config(args, float(policy["holdout_rate"]), float(policy["global_control_rate"]))
    assert isinstance(config, SimConfig)  # noqa: S101 - narrows the lazy import's type
    topics = TopicNames.from_config(loaded["topics"])
    sim = generate(config)
    if args.truth:
        sim.write_truth(args.truth)
    print(
        f"simulated {len(sim.records):,} records ({sim.malformed_records:,} malformed) for "
        f"{config.customers:,} customers over {config.days} days; ground truth: "
        f"{sim.expected_decisions:,} decisions"
        + (f", written to {args.truth}" if args.truth else ""),
        flush=True,
    )
    if args.dry_run:
        return 0

    async def go() -> int:
        counts = await ensure_topics(args.bootstrap_servers, topics.all, config.partitions)
        have = counts[topics.account_events]
        if have != config.partitions:
            raise ConfigError(
                f"--partitions: {topics.account_events!r} has {have} partitions, not "
                f"{config.partitions}; the ground truth depends on the partition count"
            )
        return await produce(sim, args.bootstrap_servers, topics, pace=args.pace, speed=args.speed)

    try:
        sent = asyncio.run(go())
    except KeyboardInterrupt:
        return 130
    print(f"produced {sent:,} records to {', '.join(topics.inputs)}", flush=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streams.tools.demo import DemoOptions, run_demo
    from streams.tools.simulator import SimConfig

    config = _sim_config(args, args.holdout_rate)
    assert isinstance(config, SimConfig)  # noqa: S101 - narrows the lazy import's type
    opts = DemoOptions(
        sim=config,
        holdout_rate=args.holdout_rate,
        truth_path=args.truth,
        pace=args.pace,
        speed=args.speed,
        settle_seconds=args.settle_seconds,
        plain=True if args.plain else None,
    )
    return run_demo(opts)


def _cmd_backtest(args: argparse.Namespace) -> int:
    from streams.config import load_config
    from streams.kafka.topics import TopicNames
    from streams.tools.backtest import (
        BacktestReport,
        parse_time,
        read_jsonl,
        read_topics,
        run_backtest,
    )

    config = load_config(Path(args.config) if args.config else None)
    since = parse_time(args.since, "--since")
    until = parse_time(args.until, "--until")
    report = BacktestReport(args.namespace or "")
    if args.events is not None and not args.events.is_file():
        raise ConfigError(f"--events: {str(args.events)!r} is not a file")

    async def go() -> BacktestReport:
        events = (
            read_jsonl(args.events, report)
            if args.events is not None
            else read_topics(
                args.bootstrap_servers, TopicNames.from_config(config["topics"]), report
            )
        )
        return await run_backtest(
            events,
            redis_url=args.redis_url,
            config=config,
            namespace=args.namespace,
            partitions=args.partitions,
            since_ms=since,
            until_ms=until,
            keep_ledger=args.keep_ledger,
            report=report,
        )

    result = asyncio.run(go())
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        result.render(sys.stdout)
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    """Run ``simulate``, ``demo`` or ``backtest``; returns the exit code."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    commands = {"simulate": _cmd_simulate, "demo": _cmd_demo, "backtest": _cmd_backtest}
    return commands[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.tools.demo_cli COMMAND``: the three commands on their own (the same
    parsers and code as ``lifecycle-triggers COMMAND``)."""
    parser = argparse.ArgumentParser(prog="lifecycle-triggers")
    add_demo_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return run_demo_command(args)
    except ConfigError as exc:
        print(f"lifecycle-triggers {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
