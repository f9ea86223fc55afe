"""Signals and closed pipes: the commands stop and end quietly whatever their output does.

Given ``lifecycle-triggers dev --sample 2>&1 | tee FILE`` under a terminal (a pty), when ``tee``
is gone and Ctrl-C (or SIGTERM) comes, then the command stops and stops what it started. Given
``ledger show`` whose reader closed the pipe (``| head``), then it ends with no traceback.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.tools.devstack import DevStack

BIN = Path(sys.executable).parent


def _children(pid: int) -> dict[int, str]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][:1] != "Z"


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_dev_stops_on_a_signal_after_its_output_pipe_is_gone(tmp_path: Path, how: str) -> None:
    out = tmp_path / "tee.out"
    shell = f"{BIN / 'lifecycle-triggers'} dev --sample --partitions 2 2>&1 | tee {out} >/dev/null"
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvp("bash", ["bash", "-c", shell])  # noqa: S606 - the pipeline is the test
    dev = tee = None
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if out.exists() and "sample: counters at" in out.read_text(errors="replace"):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"dev --sample never got ready:\n{out.read_text()[-3000:]}")
        children = _children(pid)
        devs = [p for p, args in children.items() if "lifecycle-triggers dev" in args]
        assert len(devs) == 1, children
        dev = devs[0]
        (tee,) = [p for p, args in children.items() if args.startswith("tee ")]
        started = _children(dev)  # the broker and redis-server it started
        assert len(started) >= 2, started
        os.kill(tee, signal.SIGKILL)
        time.sleep(1)
        if how == "ctrl-c":
            os.write(fd, b"\x03")  # the terminal sends SIGINT to the foreground job
        else:
            os.kill(dev, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(dev):
            time.sleep(0.2)
        assert not _alive(dev), "dev ignored the signal once its output pipe was gone"
        assert not [p for p in started if _alive(p)], "dev left what it started running"
    finally:
        for p in [dev, *started]:
            if p is not None and _alive(p):
                os.kill(p, signal.SIGKILL)
        os.close(fd)
        os.waitpid(pid, 0)


def test_ledger_show_into_a_closed_pipe_ends_quietly(dev_stack: DevStack) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) is gone before the first line
    try:
        result = subprocess.run(
            [str(BIN / "lifecycle-triggers"), "ledger", "show", "nobody-here", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "REDIS_URL": dev_stack.redis_url},
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert result.returncode == 0
