"""A worker whose broker went away still stops on SIGTERM, within its shutdown timeout.

Given a running worker, when its broker dies and the worker then gets SIGTERM, then it exits
(code 1, an ERROR line saying why) once ``--shutdown-timeout-seconds`` is over; before, Faust's
stop waited for the broker for ever (still running 90 s after the signal), so a supervisor or a
test had to SIGKILL it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from streams.tools.devstack import DevStack
from tests.support import WorkerProcess, unique_topics, write_config


def test_sigterm_after_the_broker_died_ends_the_worker_within_the_timeout(tmp_path: Path) -> None:
    # A stack of its own: its broker is killed.
    with DevStack(tmp_path / "stack") as stack:
        topics = unique_topics("shutdown")
        config = write_config(tmp_path / "shutdown.yaml", topics)
        worker = WorkerProcess(
            stack,
            config,
            "shutdown-1",
            tmp_path / "state",
            extra_env={"SHUTDOWN_TIMEOUT_SECONDS": "5"},
        ).start()
        try:
            worker.wait_ready(90)
            assert stack.broker is not None
            stack.broker.stop(kill=True)
            time.sleep(2)
            assert worker.proc is not None
            signalled = time.monotonic()
            worker.proc.send_signal(signal.SIGTERM)
            try:
                code = worker.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError("still running 60 s after SIGTERM") from None
            took = time.monotonic() - signalled
        finally:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
    assert code == 1
    assert took < 30  # the 5 s timeout, with room for a busy machine; not a speed check
    assert "did not stop within 5 s of the signal" in worker.log_text()
