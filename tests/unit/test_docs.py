"""The docs point only at what is in the repository.

Every relative link of the Markdown files (with its ``#anchor``, when it has one) and every
repository path they quote in backticks or code blocks (``streams/kafka/app.py``,
``schemas/dead_letter.json``, ``deploy/k8s``) must resolve; and no file of the repository may
name the documents that exist only outside it. A quoted path counts as a repository path only
when it starts with a top-level directory of the repository, so user paths in examples
(``/etc/...``, ``./state``, ``registry.example.com/...``) are left alone; quoted paths are read
from the repository root, links from the file that holds them.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Written in two pieces so that this file does not name them itself.
FORBIDDEN = ("CONTRACT" + ".md", "DESIGN" + ".md", ".." + "/shared")
# Only used when git is not there (an unpacked archive): what a checkout never holds.
NOT_SOURCE = {
    ".git",
    ".venv",
    "build",
    "dist",
    "state",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
}

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
PATH_WORD = re.compile(r"[A-Za-z0-9_.\-/]+")
GLOB = re.compile(r"[*?\[\]{}<>]|\.\.\.")


def repository_files() -> list[Path]:
    """The files of the repository: tracked and new ones, not what git ignores."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        found = []
        for directory, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in NOT_SOURCE and not d.endswith(".egg-info")]
            found += [Path(directory, f).relative_to(ROOT) for f in files]
        return sorted(found)
    paths = {Path(p) for p in out.decode().split("\0") if p}
    return sorted(p for p in paths if (ROOT / p).is_file())


FILES = repository_files()
TOP_DIRECTORIES = {p.parts[0] for p in FILES if len(p.parts) > 1}
MARKDOWN = [p for p in FILES if p.suffix == ".md"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def lines_outside_fences(text: str) -> list[tuple[int, str, bool]]:
    """(line number, line, inside a fenced code block) for every line but the fences."""
    result = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        result.append((number, line, fenced))
    return result


def anchors(path: Path) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for _, line, fenced in lines_outside_fences(path.read_text(encoding="utf-8")):
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(1))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def link_problems(doc: Path, root: Path = ROOT) -> list[str]:
    """Relative links of ``doc`` (relative to ``root``) that do not resolve."""
    problems = []
    for number, line, fenced in lines_outside_fences((root / doc).read_text(encoding="utf-8")):
        if fenced:
            continue
        targets = LINK.findall(line)
        reference = REFERENCE.match(line)
        if reference:
            targets.append(reference.group(1))
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto: ...: not a file of ours
            file_part, _, anchor = target.partition("#")
            resolved = (root / doc).parent / file_part if file_part else root / doc
            where = f"{doc}:{number}: link {target!r}"
            if not resolved.exists():
                problems.append(f"{where}: {file_part} does not exist")
            elif resolved.resolve() != root and root not in resolved.resolve().parents:
                problems.append(f"{where}: points outside the repository")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}: no heading with the anchor #{anchor}")
    return problems


def quoted_paths(line: str, fenced: bool, top: set[str]) -> list[str]:
    """Words of a code span (or of a code block line) that look like repository paths."""
    texts = [line] if fenced else [m.group(2) for m in CODE_SPAN.finditer(line)]
    paths = []
    for text in texts:
        for word in text.split():
            word = word.split("::")[0].strip("\"'(),;:")
            if GLOB.search(word) or not PATH_WORD.fullmatch(word) or "/" not in word:
                continue
            if word.split("/")[0] in top:
                paths.append(word)
    return paths


def git_ignores(path: str, root: Path) -> bool:
    """Whether git ignores ``path``: an output location (``bench/results/``), not a source."""
    try:
        return (
            subprocess.run(
                ["git", "check-ignore", "-q", "--no-index", path], cwd=root, check=False
            ).returncode
            == 0
        )
    except OSError:
        ignore = root / ".gitignore"
        entries = ignore.read_text(encoding="utf-8").split() if ignore.exists() else []
        return any(path.rstrip("/") == e.rstrip("/") for e in entries if "/" in e.strip("/"))


def path_problems(doc: Path, root: Path = ROOT, top: set[str] = TOP_DIRECTORIES) -> list[str]:
    """Repository paths quoted in ``doc`` (relative to ``root``) that do not exist, read from
    the root or from the file's own directory (``deploy/k8s/README.md`` quotes its
    ``schemas/podmonitor.json``)."""
    problems = []
    here = (root / doc).parent
    for number, line, fenced in lines_outside_fences((root / doc).read_text(encoding="utf-8")):
        for path in quoted_paths(line, fenced, top):
            if (root / path).exists() or (here / path).exists() or git_ignores(path, root):
                continue
            problems.append(f"{doc}:{number}: `{path}` is not in the repository")
    return problems


def test_the_docs_exist_and_are_checked() -> None:
    assert Path("README.md") in MARKDOWN
    assert Path("docs/contract.md") in MARKDOWN
    assert {"streams", "schemas", "tests", "docs"} <= TOP_DIRECTORIES


@pytest.mark.parametrize("doc", MARKDOWN, ids=str)
def test_every_relative_link_resolves(doc: Path) -> None:
    problems = link_problems(doc)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", MARKDOWN, ids=str)
def test_every_quoted_repository_path_exists(doc: Path) -> None:
    problems = path_problems(doc)
    assert not problems, "\n".join(problems)


def test_no_file_names_documents_outside_the_repository() -> None:
    offenders = []
    for path in FILES:
        data = (ROOT / path).read_bytes()
        for number, line in enumerate(data.splitlines(), 1):
            offenders += [f"{path}:{number}: {n}" for n in FORBIDDEN if n.encode() in line]
    assert not offenders, "\n".join(offenders)


README_MAX_LINES = 320


def test_the_readme_stays_a_front_page() -> None:
    """The README says what this is, how to run it and where to read more; detail goes to docs/
    (it was 1,289 lines, a third of them a log of every measurement)."""
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert "make test" in ci
    assert re.search(r"^make test\b", readme, re.M), "the README's two commands lost make test"


# --- the checks themselves -----------------------------------------------------------------


def test_slug_is_githubs() -> None:
    assert slug("Trigger catalogue") == "trigger-catalogue"
    assert slug("`demo` and `simulate`") == "demo-and-simulate"
    assert slug("Failover, `WAIT 1`, and the window that remains without it") == (
        "failover-wait-1-and-the-window-that-remains-without-it"
    )
    assert slug("Partitioners and co-partitioning (for the teams that run the producers)") == (
        "partitioners-and-co-partitioning-for-the-teams-that-run-the-producers"
    )


def test_a_broken_link_and_a_missing_path_are_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "contract.md").write_text("# Contract\n\n## Clock\n", encoding="utf-8")
    (tmp_path / "streams" / "kafka").mkdir(parents=True)
    (tmp_path / "streams" / "kafka" / "app.py").write_text("", encoding="utf-8")
    (tmp_path / "deploy" / "k8s").mkdir(parents=True)
    (tmp_path / "docs" / "probe.md").write_text(
        "# Probe\n\n"
        "[ok](contract.md#clock) [gone](missing.md) [bad anchor](contract.md#no-such-part)\n"
        "[self](#probe) [web](https://example.com/x.md) [up](../../outside.md)\n"
        "`streams/kafka/app.py`, `streams/nothing_here.py`, `/etc/passwd`, `./state`, "
        "`streams/*.py`, `deploy/k8s`, `tests/a.py` (no tests/ here: not a repository path)\n"
        "```\nkubectl apply -k deploy/k8s && cat streams/not_a_module.py\n```\n",
        encoding="utf-8",
    )
    top = {"docs", "streams", "deploy"}
    links = link_problems(Path("docs/probe.md"), tmp_path)
    paths = path_problems(Path("docs/probe.md"), tmp_path, top)
    assert len(links) == 3, links
    assert "missing.md" in links[0] and "#no-such-part" in links[1] and "outside" in links[2]
    assert len(paths) == 2, paths
    assert "streams/nothing_here.py" in paths[0] and "streams/not_a_module.py" in paths[1]
