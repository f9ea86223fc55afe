"""The wheel ships the wire contract's JSON Schemas (and their examples) as data files.

No code reads the schemas at run time, so they are not package data: an installed wheel puts
them under ``<prefix>/share/lifecycle-triggers/schemas/`` for the teams that validate their
producers and consumers against them (docs/contract.md). The wheel is built from a copy of the
sources, so the test writes nothing into the checkout; pip builds it the way ``make install``
builds the project (an isolated build environment with the build requirements of
pyproject.toml).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = re.compile(r"^[^/]+\.data/data/share/lifecycle-triggers/(schemas/.+)$")


def test_the_wheel_holds_every_schema_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("streams", "schemas"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    out = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = out.glob("lifecycle_triggers-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            m.group(1): archive.read(name)
            for name in archive.namelist()
            if (m := DATA.match(name)) is not None
        }
        modules = {n for n in archive.namelist() if n.startswith("streams/")}

    expected = {
        path.relative_to(ROOT).as_posix(): path.read_bytes()
        for path in sorted((ROOT / "schemas").rglob("*"))
        if path.is_file()
    }
    assert "schemas/dead_letter.json" in expected
    assert sorted(set(expected) - set(shipped)) == [], "schema files missing from the wheel"
    assert sorted(set(shipped) - set(expected)) == [], "files in the wheel that are not in schemas/"
    assert shipped == expected
    # Data files, not a copy inside the import package.
    assert not any("schemas" in name for name in modules)
