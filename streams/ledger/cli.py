"""``lifecycle-triggers ledger ...``: look into the contact ledger and record outside contacts.

``ledger show CUSTOMER_ID`` prints a customer's contact history, the caps in force with their
current counts, back-off state, opt-outs and complaint quiet period. ``ledger record-contact``
records a contact another business unit made, so that it counts against the global caps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from streams.core.errors import ConfigError
from streams.core.timeutil import format_ms, parse_rfc3339_ms, wall_ms

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis URL of the contact ledger [env: REDIS_URL; default: {DEFAULT_REDIS_URL}]",
    )
    parser.add_argument(
        "--namespace",
        default="lt",
        help="key namespace of the ledger (default: lt; a back-test uses its own)",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("TRIGGERS_CONFIG"),
        help="YAML configuration file whose policy applies [env: TRIGGERS_CONFIG]",
    )


def add_ledger_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ledger show`` and ``ledger record-contact`` on the CLI's subparsers."""
    ledger: argparse.ArgumentParser = subparsers.add_parser(
        "ledger",
        help="show a customer's contact ledger or record an outside contact",
        description="Read or write the shared Redis contact ledger.",
    )
    sub = ledger.add_subparsers(dest="ledger_command", metavar="LEDGER_COMMAND", required=True)

    show = sub.add_parser(
        "show",
        help="print a customer's contact history, caps in force and back-off state",
        description="Print a customer's contact history, the caps in force with their current "
        "counts, back-off state, opt-outs and complaint quiet period.",
    )
    show.add_argument("customer_id", metavar="CUSTOMER_ID")
    show.add_argument("--at", help="the moment to evaluate windows at, RFC 3339 (default: now)")
    show.add_argument("--segment", help="the customer's segment, e.g. high_affinity")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common(show)

    record = sub.add_parser(
        "record-contact",
        help="record a contact made by another business unit (counts against the caps)",
        description="Record a contact that another business unit made, so that it counts "
        "against the global caps. Idempotent by (business unit, contact id).",
    )
    record.add_argument("customer_id", metavar="CUSTOMER_ID")
    record.add_argument("--channel", required=True, help="email, sms, phone, direct_mail, push")
    record.add_argument("--business-unit", required=True, help="who made the contact")
    record.add_argument("--contact-id", required=True, help="that unit's id of the contact")
    record.add_argument("--at", help="when it was made, RFC 3339 (default: now)")
    record.add_argument(
        "--category",
        default="marketing",
        choices=("marketing", "service"),
        help="marketing (default; counts against caps) or service (recorded only)",
    )
    _common(record)
    return ledger


def _moment(text: str | None) -> int:
    if text is None:
        return wall_ms()
    at = parse_rfc3339_ms(text)
    if at is None:
        raise ConfigError(f"--at: not an RFC 3339 date-time with offset: {text!r}")
    return at


def run_ledger_command(args: argparse.Namespace) -> int:
    """Run ``ledger show`` or ``ledger record-contact``; returns the process exit code
    (0 done, 1 ledger unavailable, 2 bad option or configuration)."""
    from streams.ledger import LedgerUnavailable

    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"ledger {args.ledger_command}: error: {exc}", file=sys.stderr)
        return 2
    except LedgerUnavailable as exc:
        print(f"ledger {args.ledger_command}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"ledger {args.ledger_command}: error: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace) -> int:
    from streams.config import load_config, policy_of
    from streams.ledger import ContactLedger

    config = load_config(Path(args.config) if args.config else None)
    at = _moment(args.at)
    async with ContactLedger(args.redis_url, policy_of(config), args.namespace) as ledger:
        if args.ledger_command == "show":
            summary = await ledger.show(args.customer_id, at, args.segment)
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                print(format_summary(args.customer_id, summary))
            return 0
        new = await ledger.record_outside_contact(
            args.customer_id,
            args.channel,
            at,
            args.business_unit,
            args.contact_id,
            args.category,
        )
        state = "recorded" if new else "already recorded (nothing changed)"
        print(f"{args.business_unit} contact {args.contact_id} for {args.customer_id}: {state}")
        return 0


def _ms(value: int | None) -> str:
    return "-" if value is None else format_ms(value)


def format_summary(customer_id: str, s: dict[str, Any]) -> str:
    """The text form of ``ContactLedger.show``'s result."""
    lines = [f"customer {customer_id} at {format_ms(s['now_ms'])}"]
    if s["segment"]:
        lines[0] += f" (segment {s['segment']})"
    lines.append("history:")
    for h in s["history"] or []:
        who = h["trigger"] or f"outside:{h['business_unit']}"
        reasons = f" [{', '.join(h['reasons'])}]" if h["reasons"] else ""
        if h.get("global_control"):
            reasons += " [global control]"
        lines.append(
            f"  {format_ms(h['decided_at_ms'])}  {h['outcome']:<10} {h['channel']:<11} "
            f"{h['category']:<9} {who}{reasons}"
        )
    if not s["history"]:
        lines.append("  (none)")
    caps = s["caps"]
    lines.append("caps in force (marketing contacts in the rolling window / cap):")
    lines.append(f"  global 7 days:  {caps['global_7d']['count']}/{caps['global_7d']['cap']}")
    lines.append(f"  global 30 days: {caps['global_30d']['count']}/{caps['global_30d']['cap']}")
    for name, cap in caps["channels"].items():
        lines.append(f"  {name} {cap['days']} days: {cap['count']}/{cap['cap']}")
    for unit, c in caps.get("business_units", {}).items():
        lines.append(
            f"  business unit {unit}: 7 days {c['count_7d']}/{c.get('cap_7d', '-')}, "
            f"30 days {c['count_30d']}/{c.get('cap_30d', '-')}"
        )
    nr = s["non_responder"]
    state = "ACTIVE" if nr["active"] else "inactive"
    lines.append(
        f"non-responder back-off: {state} ({nr['unanswered']} unanswered, back-off after "
        f"{nr['after']}; {nr['count']}/{nr['cap']} contacts in its window); last engaged "
        f"{_ms(nr['engaged_at_ms'])}"
    )
    if "sunset" in s:
        sunset = s["sunset"]
        counts = ", ".join(f"{c} {n}" for c, n in sunset["unanswered"].items() if n)
        lines.append(
            f"sunset (no marketing after {sunset['after']} unanswered on a channel): "
            f"{', '.join(sunset['sunset']) or '-'}; unanswered {counts or '-'}"
        )
    if "undeliverable" in s:
        lines.append(f"undeliverable (bounced): {', '.join(s['undeliverable']) or '-'}")
    lines.append(f"opted out: {', '.join(s['opted_out']) or '-'}")
    lines.append(f"complaint quiet until: {_ms(s['complaint_quiet_until_ms'])}")
    cooldowns = s["trigger_cooldown_until_ms"]
    lines.append(
        "trigger cooldowns until: "
        + (", ".join(f"{t} {format_ms(u)}" for t, u in sorted(cooldowns.items())) or "-")
    )
    return "\n".join(lines)
