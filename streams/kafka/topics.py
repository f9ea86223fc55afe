"""Every topic the worker touches, declared once, and their creation with explicit partitions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from streams.core.errors import BrokerUnavailable, ConfigError
from streams.kafka.security import KafkaSecurity, aiokafka_kwargs

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
BOOTSTRAP_OPTION = "--bootstrap-servers (KAFKA_BOOTSTRAP_SERVERS)"
# A probe that gets no answer in this time counts as "no broker" and is tried again.
PROBE_TIMEOUT_MS = 10_000
# Waiting for the broker at start: retries from half a second, doubling, at most 5 s apart,
# so that a worker started before its broker goes on within seconds of the broker's start.
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The contract topics (names are settings: the ``topics`` config section)."""

    account_events: str
    usage_events: str
    contact_decisions: str
    dead_letters: str
    # The goals' outcomes (streams/core/goals.py); keyed by customer id like the decisions.
    decision_outcomes: str = "decision-outcomes"

    @classmethod
    def from_config(cls, topics: Mapping[str, str]) -> TopicNames:
        return cls(**dict(topics))

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.account_events, self.usage_events)

    @property
    def all(self) -> tuple[str, ...]:
        return (
            self.account_events,
            self.usage_events,
            self.contact_decisions,
            self.dead_letters,
            self.decision_outcomes,
        )

    def kind_of(self, topic: str) -> str:
        """``account`` or ``usage``: which event catalogue an input topic carries."""
        return "account" if topic == self.account_events else "usage"


async def ensure_topics(
    bootstrap_servers: str,
    names: tuple[str, ...],
    partitions: int,
    replication_factor: int = 1,
    security: KafkaSecurity | None = None,
    topic_configs: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Create the topics that do not exist yet (with ``topic_configs``); return every topic's
    partition count.

    Existing topics are left as they are (their partition count is reported, not changed).
    """
    admin = _admin(bootstrap_servers, security)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(n, partitions, replication_factor, topic_configs=topic_configs)
                    for n in missing
                ]
            )
            for name, code, message in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise ConfigError(f"cannot create topic {name!r}: error {code} {message}")
            log.info("created topics %s with %d partitions", ", ".join(missing), partitions)
        counts: dict[str, int] = {}
        for meta in await admin.describe_topics(list(names)):
            if meta["error_code"]:
                raise ConfigError(f"topic {meta['topic']!r}: metadata error {meta['error_code']}")
            counts[meta["topic"]] = len(meta["partitions"])
        return counts
    except KafkaError as exc:
        if exc.retriable:
            # Connection refused, broker not ready, timed out: the broker is not there (yet).
            raise BrokerUnavailable(
                f"{BOOTSTRAP_OPTION}: no broker answers at {bootstrap_servers} ({exc})"
            ) from None
        raise ConfigError(
            f"{BOOTSTRAP_OPTION}: the brokers at {bootstrap_servers} refused: {exc}"
        ) from None
    finally:
        await admin.close()


def _admin(
    bootstrap_servers: str, security: KafkaSecurity | None, timeout_ms: int = 15_000
) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        **aiokafka_kwargs(security or KafkaSecurity()),
    )


class _Muffle(logging.Filter):
    """Keeps the client's own error lines of a probe out of the log (one line per attempt and
    address, every few seconds of a long wait), remembering the last for our message."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.last = record.getMessage()
        return False


async def probe_brokers(bootstrap_servers: str, security: KafkaSecurity | None = None) -> None:
    """Return when a broker answers a metadata request; else BrokerUnavailable saying why
    (the client's error, and the last connection error it logged)."""
    admin = _admin(bootstrap_servers, security, PROBE_TIMEOUT_MS)
    muffle = _Muffle()
    client_log = logging.getLogger("aiokafka")
    client_log.addFilter(muffle)
    try:
        await admin.start()
        await admin.list_topics()
    except (TimeoutError, KafkaError) as exc:
        why = str(exc) or type(exc).__name__
        raise BrokerUnavailable(f"{why}; {muffle.last}" if muffle.last else why) from None
    finally:
        client_log.removeFilter(muffle)
        await admin.close()


def backoff_delays(
    first: float = FIRST_RETRY_SECONDS, cap: float = MAX_RETRY_SECONDS
) -> Iterator[float]:
    """Seconds between attempts: doubling from ``first`` up to ``cap``, then ``cap`` on."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


async def wait_for_brokers(
    bootstrap_servers: str,
    wait_seconds: float,
    security: KafkaSecurity | None = None,
    probe: Callable[[str, KafkaSecurity | None], Awaitable[None]] = probe_brokers,
) -> None:
    """Return once a broker answers; retry with backoff for up to ``wait_seconds``.

    The first failure is logged as one warning naming the option and the address; a bound
    that runs out raises BrokerUnavailable with the last error (the CLI exits 1).
    """
    started = time.monotonic()
    deadline = started + wait_seconds
    delays = backoff_delays()
    failures = 0
    while True:
        try:
            await probe(bootstrap_servers, security)
        except BrokerUnavailable as exc:
            failures += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnavailable(
                    f"{BOOTSTRAP_OPTION}: no broker answered at {bootstrap_servers} within "
                    f"{wait_seconds:g} s (last error: {exc})"
                ) from None
            if failures == 1:
                log.warning(
                    "%s: no broker answers at %s; retrying for up to %g s",
                    BOOTSTRAP_OPTION,
                    bootstrap_servers,
                    wait_seconds,
                )
            else:
                log.debug("still no broker at %s: %s", bootstrap_servers, exc)
            await asyncio.sleep(min(next(delays), left))
            continue
        if failures:
            log.info(
                "%s: a broker answers at %s after %.1f s",
                BOOTSTRAP_OPTION,
                bootstrap_servers,
                time.monotonic() - started,
            )
        return


def check_copartitioned(
    topics: TopicNames, counts: Mapping[str, int], expected: int | None = None
) -> int:
    """The shared partition count of the input topics; refuse to start when they differ, or
    differ from ``expected`` (``--partitions``): the tables, the ticks and the repartition
    topic are made with that count, and a customer's events, state and due items must share
    one partition number."""
    a, u = (counts[t] for t in topics.inputs)
    if a != u:
        raise ConfigError(
            f"topics: {topics.account_events!r} has {a} partitions but {topics.usage_events!r} has "
            f"{u}; the input topics must be co-partitioned (the same count, keyed by "
            "customer_id): one customer's events, state and due items share one partition "
            "number, which no setting can make true across different counts. Give both topics "
            "the same count (adding partitions to a keyed topic moves keys: do it before the "
            "first worker runs)"
        )
    if expected is not None and a != expected:
        raise ConfigError(
            f"--partitions (TOPIC_PARTITIONS) is {expected} but the input topics "
            f"{topics.account_events!r} and {topics.usage_events!r} have {a} partitions: set it "
            f"to {a}"
        )
    return a


async def cluster_id(bootstrap_servers: str, security: KafkaSecurity | None = None) -> str | None:
    """The id of the cluster the brokers belong to (Metadata v2 and later), or None.

    aiokafka reads the id but does not keep it, so the worker asks once at start: the state's
    log identity (``streams/core/log_identity.py``) records it.
    """
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers, **aiokafka_kwargs(security or KafkaSecurity())
    )
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        response = await client.send(node, MetadataRequest([], False))
        found = getattr(response, "cluster_id", None)
        return str(found) if found else None
    except KafkaError as exc:
        raise ConfigError(f"--bootstrap-servers: cannot reach the brokers ({exc})") from None
    finally:
        await client.close()
