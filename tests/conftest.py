"""Shared fixtures: one real dev stack (Tansu broker + redis-server) per test session."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.tools.devstack import DevStack
from tests.support import worker_log_digest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A failed test that ran workers in its ``tmp_path`` shows what their logs tell."""
    outcome = yield
    report = outcome.get_result()
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.when == "call" and report.failed and isinstance(tmp, Path):
        digest = worker_log_digest(tmp)
        if digest:
            report.sections.append(("worker logs", digest))


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """A real broker and a real redis-server on free ports, shared by the whole session.

    Tests keep out of each other's way with unique topic, group and key names.
    """
    workdir: Path = tmp_path_factory.mktemp("devstack")
    stack = DevStack(workdir)
    stack.start()
    yield stack
    stack.stop()
