"""Shared fixtures: one real dev stack (Tansu broker + redis-server) per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devstack import DevStack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


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
