"""The import contract: the layout of ``streams/`` is the architecture, and this keeps it so.

- ``streams.core`` is pure: it imports the standard library, orjson, msgspec (the typed input
  events) and itself, nothing else
  (no faust, mode, aiokafka, redis, yaml, prometheus_client), not even inside a function.
- The worker (everything but ``streams.tools`` and the command line on top) never imports the
  tools; the ledger never imports the Kafka shell.
- No two modules import each other, directly or in a circle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "streams"
THIRD_PARTY_ALLOWED_IN_CORE = {"orjson", "msgspec"}
TOP_LEVEL = {"streams.cli", "streams.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """Every module a file imports (``from a import b`` yields ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "__future__":
                continue
            yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    yield f"{node.module}.{alias.name}"


def _is_stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def test_the_layout_has_the_architectures_packages() -> None:
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    assert {"streams.core", "streams.kafka", "streams.ledger", "streams.ops", "streams.tools"} <= (
        packages
    )
    flat = {n for n in MODULES if n.count(".") == 1} - packages
    # Only the command line, the configuration and the worker settings sit on top.
    assert flat == {"streams.__main__", "streams.cli", "streams.config", "streams.settings"}


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith("streams.core")))
def test_the_core_imports_only_the_standard_library_orjson_msgspec_and_itself(module: str) -> None:
    foreign = [
        name
        for name in _imports(MODULES[module])
        if not _is_stdlib(name)
        and name.split(".")[0] not in THIRD_PARTY_ALLOWED_IN_CORE
        and not (name == "streams.core" or name.startswith("streams.core."))
    ]
    assert foreign == [], f"{module} imports {foreign}"


@pytest.mark.parametrize(
    "module", sorted(n for n in MODULES if not n.startswith("streams.tools") and n not in TOP_LEVEL)
)
def test_the_worker_never_imports_the_tools(module: str) -> None:
    tools = [n for n in _imports(MODULES[module]) if n.startswith("streams.tools")]
    assert tools == [], f"{module} imports {tools}"


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith("streams.ledger")))
def test_the_ledger_never_imports_the_kafka_shell(module: str) -> None:
    shell = [
        n
        for n in _imports(MODULES[module])
        if n.startswith(("streams.kafka", "faust", "mode", "aiokafka"))
    ]
    assert shell == [], f"{module} imports {shell}"


def test_no_import_circles() -> None:
    graph = {
        name: {
            n
            for n in _imports(path, top_level_only=True)
            if n in MODULES and n != name and not name.startswith(n + ".")
        }
        for name, path in MODULES.items()
    }
    # Tarjan's strongly connected components: any with more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []
