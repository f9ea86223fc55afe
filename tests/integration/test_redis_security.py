"""Redis AUTH (password, least-privilege ACL user) and TLS for the contact ledger, and no secret
anywhere a user or an operator can see it.

Given redis-servers started by the test (one with ``--requirepass``, one with TLS and client
certificates made at test time with the openssl CLI), the ledger decides through them; a wrong
password is refused with a clear message that does not show it (library and ``ledger show``);
the ACL user of docs-reliability.md can do everything the ledger does and nothing else; and a
worker run with secrets in REDIS_URL and KAFKA_SASL_PASSWORD never shows them in its log,
``/metrics`` or ``--help``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from streams.config import default_policy
from streams.core.decisions import Candidate
from streams.core.errors import ConfigError
from streams.ledger import ContactLedger, LedgerRefused, LedgerUnavailable
from streams.ledger.redis_url import mask, parse
from streams.tools.devstack import DevStack, RedisServer, free_port
from tests.support import WorkerProcess, produce, run, unique_topics, write_config

T0 = 1_772_357_400_000
NO_HOLDOUT = dataclasses.replace(default_policy(), holdout_rate=0.0)
ADMIN_PW = "admin-Pw-7f3a"
LEDGER_PW = "ledger-Pw-19c2"
KAFKA_PW = "kafka-Pw-55e1"
# The least privileges of docs-reliability.md: the script and what it calls, ping, WAIT,
# and the reads of `ledger show` (in MULTI/EXEC), on the ledger's keys only.
LEDGER_ACL = (
    "resetkeys ~lt:* resetchannels -@all "
    "+evalsha +script|load +ping +wait +multi +exec +zrange +hgetall +hmget "
    "+hget +hset +hdel +hexists +hincrby +zadd +zcount +zrangebyscore +zremrangebyscore "
    "+pexpire +persist"
)


def cand(customer: str, trigger: str = "a", channel: str = "email") -> Candidate:
    return Candidate(customer, trigger, "1", "act", channel, "marketing", 50, ("e",), T0)


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# -- one URL setting, three kinds, passwords masked -----------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://ledger:p@ss:w@rd@h:6380/0", "rediss://ledger:***@h:6380/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis+cluster://u:pw@a:1,b:2", "redis+cluster://u:***@a:1,b:2"),
        (
            "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0?sentinel_password=spw&x=1",
            "redis+sentinel://:***@s1:26379,s2:26379/mymaster/0?sentinel_password=***&x=1",
        ),
        ("redis://h:1/0?password=pw", "redis://h:1/0?password=***"),
        ("not a url :pw@", "not a url :pw@"),
    ],
)
def test_mask_hides_every_password(url: str, shown: str) -> None:
    assert mask(url) == shown


def test_parse_the_three_kinds() -> None:
    assert parse("rediss://h:1/0").kind == "single"
    cluster = parse("rediss+cluster://u:pw@a:7000,b:7001?ssl_cert_reqs=required")
    assert (cluster.kind, cluster.nodes, cluster.tls) == (
        "cluster",
        (("a", 7000), ("b", 7001)),
        True,
    )
    assert cluster.options["username"] == "u" and cluster.options["password"] == "pw"
    assert cluster.options["ssl"] is True and cluster.options["ssl_cert_reqs"] == "required"
    sentinel = parse("redis+sentinel://:pw@s1:1,s2:2/mymaster/2?sentinel_password=spw")
    assert (sentinel.kind, sentinel.service_name, sentinel.options["db"]) == (
        "sentinel",
        "mymaster",
        2,
    )
    assert sentinel.sentinel_options["password"] == "spw" and sentinel.options["password"] == "pw"
    assert "pw" not in repr(sentinel)
    for bad in ("http://h:1", "redis+cluster://a:notaport", "redis+sentinel://s:1/"):
        with pytest.raises(ConfigError):
            parse(bad)


# -- AUTH -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"))
    server.start()
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    admin.config_set("requirepass", ADMIN_PW)  # after start: RedisServer pings without one
    admin = redis.Redis(host="127.0.0.1", port=server.port, password=ADMIN_PW)
    admin.execute_command("ACL", "SETUSER", "ledger", "on", f">{LEDGER_PW}", *LEDGER_ACL.split())
    admin.close()
    yield server
    server.stop()


def test_password_and_acl_user_work_and_a_wrong_password_is_refused_clearly(
    auth_redis: RedisServer,
) -> None:
    where = f"127.0.0.1:{auth_redis.port}"

    async def body() -> None:
        async with ContactLedger(f"redis://:{ADMIN_PW}@{where}/0", NO_HOLDOUT, "lt") as ledger:
            assert (await ledger.decide([cand(f"c-{uuid.uuid4().hex}")], T0))[0].outcome == (
                "contact"
            )
        async with ContactLedger(f"redis://:wrong-{ADMIN_PW}@{where}/0", NO_HOLDOUT) as ledger:
            with pytest.raises(LedgerRefused) as err:
                await ledger.ping()
        message = str(err.value)
        assert "refused our credentials" in message and ADMIN_PW not in message
        assert f"redis://:***@{where}/0" in message
        async with ContactLedger(f"redis://{where}/0", NO_HOLDOUT) as ledger:  # no password
            with pytest.raises(LedgerUnavailable):
                await ledger.decide([cand("c-x")], T0)

    run(body())


def test_least_privilege_acl_user_can_do_all_the_ledger_does_and_nothing_else(
    auth_redis: RedisServer,
) -> None:
    url = f"redis://ledger:{LEDGER_PW}@127.0.0.1:{auth_redis.port}/0"
    customer = f"c-{uuid.uuid4().hex}"

    async def body() -> None:
        async with ContactLedger(url, NO_HOLDOUT, "lt") as ledger:
            await ledger.ping()
            [decided] = await ledger.decide([cand(customer)], T0)
            assert decided.outcome == "contact"
            # Read back when the decision's goal resolves (outcome records).
            recalled = await ledger.recall(customer, [decided.decision_id, "d-unknown"])
            assert list(recalled) == [decided.decision_id]
            assert recalled[decided.decision_id].outcome == "contact"
            await ledger.record_engagement(customer, "email", "opened", T0 + 1)
            await ledger.record_consent(customer, "sms", "opted_out", T0 + 2)
            await ledger.record_complaint(customer, T0 + 3)
            assert await ledger.record_outside_contact(customer, "push", T0 + 4, "cards", "x1")
            shown = await ledger.show(customer, T0 + 5)
            assert shown["caps"]["global_7d"]["count"] == 2 and shown["opted_out"] == ["sms"]
            # WAIT is allowed too (this server has no replica: 0 of 1 acknowledged).
            ledger.wait_replicas, ledger.wait_timeout_ms = 1, 10
            with pytest.raises(LedgerUnavailable, match="0 of 1 replicas"):
                await ledger.decide([cand(customer, "b")], T0 + 6)
        # Another namespace's keys and other commands are refused.
        async with ContactLedger(url, NO_HOLDOUT, "other") as ledger:
            with pytest.raises(LedgerRefused, match="may not run"):
                await ledger.show(customer, T0)
        client = aioredis.from_url(url)
        try:
            for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await client.execute_command(*command)
        finally:
            await client.aclose()

    run(body())


def test_a_user_who_may_not_read_decisions_back_is_refused_at_start(
    auth_redis: RedisServer,
) -> None:
    # Without HMGET the worker would decide, then stall when the first goal resolves: the
    # start-up check (ping) reads the way recall does, so such a user is refused at once.
    admin = redis.Redis(port=auth_redis.port, password=ADMIN_PW)
    try:
        acl = LEDGER_ACL.replace(" +hmget", "")
        admin.execute_command("ACL", "SETUSER", "nohmget", "on", f">{LEDGER_PW}", *acl.split())
    finally:
        admin.close()
    url = f"redis://nohmget:{LEDGER_PW}@127.0.0.1:{auth_redis.port}/0"

    async def body() -> None:
        async with ContactLedger(url, NO_HOLDOUT, "lt") as ledger:
            with pytest.raises(LedgerRefused, match="hmget"):
                await ledger.ping()

    run(body())


def test_ledger_show_with_a_wrong_password_fails_at_start_with_a_clear_message(
    auth_redis: RedisServer,
) -> None:
    url = f"redis://ledger:wrong-{LEDGER_PW}@127.0.0.1:{auth_redis.port}/0"
    done = _run_cli("ledger", "show", "c-1", "--redis-url", url)
    assert done.returncode == 1, done.stderr
    assert "refused our credentials" in done.stderr
    assert "ledger:***@" in done.stderr
    assert f"wrong-{LEDGER_PW}" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("redis-certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)  # noqa: S603,S607

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=ledger-test-ca")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "san.ext"]
        openssl("x509", "-req", "-in", f"{name}.csr", *sign, "-out", f"{name}.pem", "-days", "2")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
            "other-ca.pem", "-days", "2", "-subj", "/CN=someone-else")  # fmt: skip
    return d


def test_tls_with_client_certificates(certs: Path, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    tls_port = free_port()
    try:
        server.start(
            extra_args=(
                "--tls-port",
                str(tls_port),
                "--tls-cert-file",
                str(certs / "server.pem"),
                "--tls-key-file",
                str(certs / "server.key"),
                "--tls-ca-cert-file",
                str(certs / "ca.pem"),
                "--tls-auth-clients",
                "yes",
            )
        )
        redis.Redis(host="127.0.0.1", port=server.port).config_set("requirepass", ADMIN_PW)
        base = f"rediss://:{ADMIN_PW}@127.0.0.1:{tls_port}/0?ssl_cert_reqs=required"
        client_cert = f"&ssl_certfile={certs / 'client.pem'}&ssl_keyfile={certs / 'client.key'}"
        good = f"{base}&ssl_ca_certs={certs / 'ca.pem'}{client_cert}"

        async def body() -> None:
            async with ContactLedger(good, NO_HOLDOUT, "lt") as ledger:
                await ledger.ping()
                d = (await ledger.decide([cand(f"c-{uuid.uuid4().hex}")], T0))[0]
                assert d.outcome == "contact"
                ssl_conn = await ledger.client.connection_pool.get_connection()
                try:
                    assert type(ssl_conn).__name__ == "SSLConnection"
                finally:
                    await ledger.client.connection_pool.release(ssl_conn)
            # A server certificate from a CA we do not trust is refused.
            untrusted = f"{base}&ssl_ca_certs={certs / 'other-ca.pem'}{client_cert}"
            async with ContactLedger(untrusted, NO_HOLDOUT, "lt", timeout=2) as ledger:
                with pytest.raises(LedgerUnavailable) as err:
                    await ledger.ping()
                assert ADMIN_PW not in str(err.value)
            # Without a client certificate the server refuses us.
            no_client_cert = f"{base}&ssl_ca_certs={certs / 'ca.pem'}"
            async with ContactLedger(no_client_cert, NO_HOLDOUT, "lt", timeout=2) as ledger:
                with pytest.raises(LedgerUnavailable):
                    await ledger.ping()

        run(body())
    finally:
        server.stop()


# -- no secret where anyone can see it ------------------------------------------------------


def test_no_secret_in_worker_log_metrics_or_help(
    dev_stack: DevStack, auth_redis: RedisServer, tmp_path: Path
) -> None:
    """Secrets in REDIS_URL and KAFKA_SASL_PASSWORD never show: not when the worker refuses
    to start (a wrong Redis password; SASL credentials with a plaintext protocol), not in the
    log or /metrics of a worker that runs with the right password, not in any --help."""
    topics = unique_topics("secrets")
    config = write_config(tmp_path / "config.yaml", topics)
    where = f"127.0.0.1:{auth_redis.port}"
    wrong_url = f"redis://ledger:{LEDGER_PW}-wrong@{where}/0"
    right_url = f"redis://ledger:{LEDGER_PW}@{where}/0"
    secrets = (LEDGER_PW, KAFKA_PW)
    base = {
        "KAFKA_BOOTSTRAP_SERVERS": dev_stack.bootstrap_servers,
        "BROKER_KIND": "tansu",
        "TRIGGERS_CONFIG": str(config),
        "STATE_STORE": "memory",
        "METRICS_PORT": "0",
    }

    # Refused at start, before anything is consumed: exit 2 with a clear, masked message.
    wrong = _run_cli("worker", env={**base, "REDIS_URL": wrong_url})
    assert wrong.returncode == 2, wrong.stderr[-2000:]
    assert "refused our credentials" in wrong.stderr and "ledger:***@" in wrong.stderr
    sasl = _run_cli("worker", env={**base, "REDIS_URL": right_url, "KAFKA_SASL_PASSWORD": KAFKA_PW})
    assert sasl.returncode == 2 and "KAFKA_SASL_PASSWORD" in sasl.stderr, sasl.stderr[-2000:]

    # A worker with the right password runs, and its log and metrics hold no secret.
    worker = WorkerProcess(
        dev_stack,
        config,
        f"secrets-{uuid.uuid4().hex[:8]}",
        tmp_path / "state",
        # The least-privilege user may touch the "lt" namespace's keys only.
        extra_env={"REDIS_URL": right_url, "LEDGER_NAMESPACE": "lt"},
    ).start()
    try:
        worker.wait_ready()
        # A complaint makes the worker call the ledger through the password-protected user.
        complaint = {
            "event_id": "e1",
            "customer_id": "c1",
            "type": "complaint",
            "occurred_at": "2026-03-01T09:30:00Z",
            "category": "queue",
        }
        run(
            produce(
                dev_stack.bootstrap_servers, topics.usage_events, [(b"c1", orjson.dumps(complaint))]
            )
        )
        deadline = time.monotonic() + 30
        while worker.metric("lifecycle_ledger_call_seconds_count", operation="complaint") < 1:
            assert time.monotonic() < deadline, worker.log_text()[-3000:]
            time.sleep(0.3)
        status, metrics = worker.get("/metrics")
        assert status == 200 and "lifecycle_redis_up 1.0" in metrics
        log = worker.log_text()
        assert "ledger:***@" in log
    finally:
        assert worker.stop() == 0
    env = {"REDIS_URL": wrong_url, "KAFKA_SASL_PASSWORD": KAFKA_PW}
    helps = [
        _run_cli(*cmd, "--help", env=env).stdout
        for cmd in (("worker",), ("ledger", "show"), ("ledger", "record-contact"), ("config",))
    ]
    for secret in secrets:
        for text in (log, metrics, wrong.stdout, wrong.stderr, sasl.stdout, sasl.stderr, *helps):
            assert secret not in text
    assert all("REDIS_URL" in h for h in helps[:3])
