"""The bulk restore's step in Faust's recovery runs without Faust's step timeout, and only it.

Faust runs each recovery step under ``broker_request_timeout`` and stops its recovery when one
takes longer; a bulk restore of a large state does (``streams/kafka/bulk_restore.py``). The
broker side is covered by ``tests/integration/test_replaced_log.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import faust
import pytest
from faust.tables import recovery as faust_recovery

from streams.kafka import bulk_restore


@pytest.fixture
def recovery(monkeypatch: pytest.MonkeyPatch) -> tuple[bulk_restore.Recovery, list[Any]]:
    seen: list[Any] = []

    async def recorded(self: Any, coro: Any, timeout: Any = None) -> None:
        seen.append((coro.cr_code.co_name, timeout, self._unbounded))
        coro.close()

    monkeypatch.setattr(faust_recovery.Recovery, "_wait", recorded)
    app = faust.App("bulk-restore-unit", TableManager=bulk_restore.TableManager)
    return app.tables.recovery, seen


def test_the_app_recovers_with_the_bulk_restoring_recovery(
    recovery: tuple[bulk_restore.Recovery, list[Any]],
) -> None:
    assert isinstance(recovery[0], bulk_restore.Recovery)


def test_the_active_offsets_step_runs_without_the_timeout(
    recovery: tuple[bulk_restore.Recovery, list[Any]],
) -> None:
    rec, seen = recovery
    asyncio.run(rec._wait(rec._build_offsets(None, set(), Counter(), "active"), timeout=90.0))
    assert seen == [("_build_offsets", None, True)]
    assert rec._unbounded is False  # only while that step runs


def test_every_other_step_keeps_the_timeout(
    recovery: tuple[bulk_restore.Recovery, list[Any]],
) -> None:
    rec, seen = recovery
    asyncio.run(rec._wait(rec._build_offsets(None, set(), Counter(), "standby"), timeout=90.0))
    asyncio.run(rec._wait(rec._build_highwaters(None, set(), Counter(), "active"), timeout=90.0))
    assert seen == [("_build_offsets", 90.0, False), ("_build_highwaters", 90.0, False)]
