"""The worked examples of ``docs/tools.md`` work exactly as written.

Given the shell blocks of ``docs/tools.md`` marked with a ``<!-- tested -->`` line, when they run
in order as one bash session in an empty directory (with the project's virtualenv first on the
PATH, as the document asks), then the session succeeds and prints what the document says: the
ground truth of ``simulate``, every expected decision published by ``dev --clock event``, the
ledger of a planted customer, the back-test reports. The examples start their own dev stack
(``lifecycle-triggers dev``) and stop it at the end; whatever happens, the test stops it too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "tools.md"
MARK = "<!-- tested -->"
# The whole session: the dev stack's start, a 17,000-record simulation, two back-tests.
TIMEOUT_SECONDS = 180


def marked_blocks(text: str) -> list[str]:
    """The fenced ``sh`` blocks of ``text`` whose fence directly follows a ``MARK`` line."""
    blocks: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARK:
            fence = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if not re.fullmatch(r"```(sh|bash|shell)", fence):
                raise ValueError(f"{DOC.name}:{i + 2}: {MARK} must be followed by a ```sh fence")
            end = i + 2
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise ValueError(f"{DOC.name}:{i + 2}: the tested block is never closed")
            blocks.append("\n".join(lines[i + 2 : end]))
            i = end
        i += 1
    return blocks


def test_the_marked_blocks_are_found() -> None:
    text = "x\n<!-- tested -->\n```sh\necho a\n```\n\n```sh\necho untested\n```\n"
    text += "<!-- tested -->\n```sh\necho b\necho c\n```\n"
    assert marked_blocks(text) == ["echo a", "echo b\necho c"]
    with pytest.raises(ValueError, match="must be followed"):
        marked_blocks("<!-- tested -->\n\n```sh\necho a\n```\n")


def _stop_group(pgid: int, deadline: float) -> bool:
    """Let the session's processes (the backgrounded ``dev``) end, SIGTERM them if they do not
    by ``deadline`` (``dev`` stops its broker and redis-server itself on SIGTERM, so nothing is
    left behind); whether any had to be signalled."""
    signalled = False
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return signalled
        if time.monotonic() > deadline and not signalled:
            os.killpg(pgid, signal.SIGTERM)
            signalled = True
            deadline = time.monotonic() + 30
        elif time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            return signalled
        time.sleep(0.2)


def test_the_worked_examples_of_the_tools_guide_run_as_written(tmp_path: Path) -> None:
    blocks = marked_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 6, "docs/tools.md lost its tested examples"
    script = tmp_path / "session.sh"
    script.write_text("set -euo pipefail\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")
    env = {
        **os.environ,
        # The virtualenv active, as the document asks: its console script first on the PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "TRIGGERS_CONFIG", "TOPIC_PARTITIONS"):
        env.pop(name, None)  # the examples export their own
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the backgrounded dev is in it
    )
    left_running = True
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"the examples did not finish within {TIMEOUT_SECONDS} s:\n{out[-4000:]}")
    finally:
        left_running = _stop_group(proc.pid, time.monotonic() + 20)
    dev_log = tmp_path / "dev.log"
    context = out[-4000:] + (
        "\n--- dev.log\n" + dev_log.read_text()[-3000:] if dev_log.exists() else ""
    )
    assert proc.returncode == 0, context

    # simulate --dry-run: the ground truth, and the planted customer the ledger example reads.
    expected = re.search(r"ground truth: ([\d,]+) decisions, written to truth.jsonl", out)
    assert expected, context
    truth = expected.group(1).replace(",", "")
    assert '"customer_id":"c-00041","trigger":"savings_drop_to_checking"' in out
    # dev --clock event: every decision of the ground truth published.
    assert f"published {truth} decisions, ground truth {truth}" in out, context
    assert re.search(r"broker 127\.0\.0\.1:\d+, ledger redis://127\.0\.0\.1:\d+/0", out)
    # ledger show / record-contact.
    assert "contact    email       marketing savings_drop_to_checking" in out, context
    assert "cards contact sms-2025-12-28-1 for c-00041: recorded" in out, context
    assert "global 7 days:  2/2" in out, context
    # backtest: the same candidates as the ground truth, more suppressed by stricter caps.
    totals = [line.split() for line in out.splitlines() if line.startswith("total ")]
    assert len(totals) == 3, context
    assert totals[0][-1] == totals[1][-1] == truth, totals
    assert int(totals[1][2]) > int(totals[0][2]), totals  # suppressed
    assert re.search(r"^  global_cap_7d\s+\d+", out, re.M), context
    assert re.search(r"^renewal_after_positive_visit\s+1\s+0\s+0\s+1$", out, re.M), context
    assert totals[2][1:] == ["1", "0", "0", "1"], totals
    # The last example stopped the dev stack: nothing of the session was left for the test.
    assert not left_running, "the examples left a process running (the dev stack?)"
