"""bench/pure_bench.py: the decisions-only digest and --config, which compare two trees."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from streams.config import build_config

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def pure_bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # pure_bench imports benchlib as a sibling
    try:
        return importlib.import_module("pure_bench")
    finally:
        sys.path.remove(str(BENCH))


def test_decisions_digest_ignores_key_order_not_values(pure_bench: ModuleType) -> None:
    one = {"decision_id": "d-1", "outcome": "contact", "reasons": []}
    same = {"reasons": [], "outcome": "contact", "decision_id": "d-1"}
    other = {"decision_id": "d-1", "outcome": "suppressed", "reasons": ["sunset"]}
    assert pure_bench.decisions_digest([one]) == pure_bench.decisions_digest([same])
    assert pure_bench.decisions_digest([one]) != pure_bench.decisions_digest([other])
    assert pure_bench.decisions_digest([one, other]) != pure_bench.decisions_digest([other, one])


def test_config_switches_a_trigger_off_in_the_pure_path(pure_bench: ModuleType) -> None:
    records = pure_bench.make_records(6_000, 2_000, 8, 7)
    default = pure_bench.run_pure(records, 500, build_config())
    again = pure_bench.run_pure(records, 500, build_config())
    off = pure_bench.run_pure(
        records, 500, build_config({"triggers": {"usage_lapsed": {"enabled": False}}})
    )
    assert (again.decisions, again.digest, again.decisions_digest) == (
        default.decisions,
        default.digest,
        default.decisions_digest,
    )
    assert off.decisions < default.decisions  # the mix has lapsed usage at this size
    assert off.decisions_digest != default.decisions_digest


def test_a_bad_config_file_is_named(
    pure_bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  sunset: {enabled: maybe}\n", encoding="utf-8")
    assert pure_bench.main(["--quick", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "policy.sunset.enabled" in err
