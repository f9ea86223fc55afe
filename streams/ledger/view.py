"""The read side: what the ledger holds for one customer, summarised for ``ledger show``.

It reads the same keys the script writes and counts the same rolling windows, half-open like
the script's ((now - w, now]). The rules themselves are decided only by ``ledger.lua``; where
the summary has to restate one (whether a channel is opted out), it does so in one function
here, ``consent_opted_out``, which follows the script's ``opted_out``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from streams.core.events import CHANNELS
from streams.core.policy import GLOBAL_WINDOW_7D_MS, GLOBAL_WINDOW_30D_MS, Policy
from streams.core.timeutil import MS_PER_DAY
from streams.ledger.keys import KEY_PARTS
from streams.ledger.topology import LedgerClient


def consent_opted_out(records: Iterable[tuple[int, str]]) -> bool:
    """Whether consent records ``(at_ms, "in" | "out")`` (a channel's own and the one for
    ``all``) leave the channel opted out: the latest decides, and at equal times an opt-out
    wins (the careful reading). No record: not opted out. ``ledger.lua``'s ``opted_out`` is the
    same rule, in the script that decides."""
    latest: int | None = None
    out = False
    for at, status in records:
        if latest is None or at > latest:
            latest, out = at, status == "out"
        elif at == latest:
            out = out or status == "out"
    return out


def _undeliverable(state: Mapping[str, str], channel: str) -> bool:
    """A bounce with no later delivered, opened or clicked (``ledger.lua``'s rule)."""
    bounced = state.get(f"bounced:{channel}")
    if bounced is None:
        return False
    reached = state.get(f"reached:{channel}")
    return reached is None or int(bounced) >= int(reached)


def _consents(state: Mapping[str, str]) -> dict[str, tuple[int, str]]:
    """The state hash's consent records: channel or ``all`` -> (at, "in" | "out")."""
    consents = {}
    for name, value in state.items():
        if name.startswith("consent:"):
            at, status = value.split("|", 1)
            consents[name.removeprefix("consent:")] = (int(at), status)
    return consents


async def read(client: LedgerClient, keys: list[str], unit_keys: list[str]) -> list[Any]:
    """The customer's sets and hashes in one transaction: ``keys`` are the parts of
    ``KEY_PARTS`` (as ``customer_keys`` orders them), ``unit_keys`` one per business unit."""
    dec, idx, mk, tr, cmp_key, st = keys[: len(KEY_PARTS)]
    async with client.pipeline(transaction=True) as pipe:
        pipe.zrange(idx, 0, -1, withscores=True)
        pipe.hgetall(dec)
        pipe.zrange(mk, 0, -1, withscores=True)
        pipe.zrange(tr, 0, -1, withscores=True)
        pipe.zrange(cmp_key, 0, -1, withscores=True)
        pipe.hgetall(st)
        for key in unit_keys:
            pipe.zrange(key, 0, -1, withscores=True)
        return list(await pipe.execute())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _in_window(at: float, now_ms: int, window_ms: int) -> bool:
    return now_ms - window_ms < at <= now_ms


def summary(
    policy: Policy,
    segment: str | None,
    now_ms: int,
    history_ids: list[tuple[bytes, float]],
    records: dict[bytes, bytes],
    contacts: list[tuple[bytes, float]],
    marks: list[tuple[bytes, float]],
    complaints: list[tuple[bytes, float]],
    state: dict[bytes, bytes],
    units: Mapping[str, list[tuple[bytes, float]]],
) -> dict[str, Any]:
    """What ``read`` returned, summarised at ``now_ms`` (``units``: business unit -> its
    contacts): history, caps in force and their counts, back-off, opt-outs, quiet periods."""
    caps = policy.caps_for(segment)
    history = []
    for raw_id, at in history_ids:
        record = json.loads(records.get(raw_id, b"{}"))
        item: dict[str, Any] = {
            "id": _text(raw_id),
            "decided_at_ms": int(at),
            "outcome": record.get("o"),
            "channel": record.get("c"),
            "category": record.get("k"),
            "trigger": record.get("g"),
            "business_unit": record.get("bu"),
            "reasons": [r for r in record.get("r", "").split(",") if r],
        }
        details = record.get("d")
        if isinstance(details, dict) and details.get("global_control") is True:
            item["global_control"] = True  # a holdout of the global control group
        history.append(item)
    contact_list = [(_text(m).split("|", 1)[0], at) for m, at in contacts]

    def count(window_ms: int, channel: str | None = None) -> int:
        return sum(
            1
            for ch, at in contact_list
            if _in_window(at, now_ms, window_ms) and (channel is None or ch == channel)
        )

    st = {_text(k): _text(v) for k, v in state.items()}
    consents = _consents(st)

    def opted_out(channel: str) -> bool:
        return consent_opted_out(consents[c] for c in (channel, "all") if c in consents)

    streak = int(st.get("streak", "0"))
    quiet = [int(at) for _, at in complaints if _in_window(at, now_ms, policy.complaint_quiet_ms)]
    cooldowns: dict[str, int] = {}
    for member, at in marks:
        trigger = _text(member).split("|", 1)[0]
        if _in_window(at, now_ms, policy.cooldown_ms):
            cooldowns[trigger] = max(cooldowns.get(trigger, 0), int(at) + policy.cooldown_ms)
    unit_caps = {}
    for unit, members in units.items():
        cap = policy.business_unit_cap(unit, segment)
        times = [at for _, at in members]
        entry: dict[str, Any] = {
            "count_7d": sum(1 for at in times if _in_window(at, now_ms, GLOBAL_WINDOW_7D_MS)),
            "count_30d": sum(1 for at in times if _in_window(at, now_ms, GLOBAL_WINDOW_30D_MS)),
        }
        if cap is not None and cap.per_7_days is not None:
            entry["cap_7d"] = cap.per_7_days
        if cap is not None and cap.per_30_days is not None:
            entry["cap_30d"] = cap.per_30_days
        unit_caps[unit] = entry
    shown: dict[str, Any] = {
        "now_ms": now_ms,
        "segment": segment,
        "history": history,
        "caps": {
            "global_7d": {"count": count(GLOBAL_WINDOW_7D_MS), "cap": caps.global_7d},
            "global_30d": {"count": count(GLOBAL_WINDOW_30D_MS), "cap": caps.global_30d},
            "channels": {
                name: {
                    "count": count(cap.window_ms, name),
                    "cap": cap.max,
                    "days": cap.window_ms // MS_PER_DAY,
                }
                for name, cap in caps.channels.items()
            },
            "business_units": unit_caps,
        },
        "non_responder": {
            "unanswered": streak,
            "after": policy.non_responder_after,
            "active": streak >= policy.non_responder_after,
            "count": count(policy.non_responder_window_ms),
            "cap": policy.non_responder_max_contacts,
            "engaged_at_ms": int(st["engaged_at"]) if "engaged_at" in st else None,
            "last_engagement": json.loads(st["last_engagement"])
            if "last_engagement" in st
            else None,
        },
        "opted_out": [c for c in CHANNELS if opted_out(c)],
        "complaint_quiet_until_ms": max(quiet) + policy.complaint_quiet_ms if quiet else None,
        "trigger_cooldown_until_ms": cooldowns,
    }
    if policy.sunset_after_unanswered is not None:
        after = policy.sunset_after_unanswered
        unanswered = {c: int(st.get(f"unanswered:{c}", "0")) for c in CHANNELS}
        shown["sunset"] = {
            "after": after,
            "unanswered": unanswered,
            "sunset": [c for c in CHANNELS if unanswered[c] >= after],
        }
    if policy.undeliverable:
        shown["undeliverable"] = [c for c in CHANNELS if _undeliverable(st, c)]
    return shown
