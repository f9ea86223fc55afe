"""Every topic the worker touches, declared once, and their creation with explicit partitions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from streams.errors import ConfigError
from streams.kafka_security import KafkaSecurity, aiokafka_kwargs

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The four contract topics (names are settings: the ``topics`` config section)."""

    account_events: str
    usage_events: str
    contact_decisions: str
    dead_letters: str

    @classmethod
    def from_config(cls, topics: Mapping[str, str]) -> TopicNames:
        return cls(**dict(topics))

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.account_events, self.usage_events)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.account_events, self.usage_events, self.contact_decisions, self.dead_letters)

    def kind_of(self, topic: str) -> str:
        """``account`` or ``usage``: which event catalogue an input topic carries."""
        return "account" if topic == self.account_events else "usage"


async def ensure_topics(
    bootstrap_servers: str,
    names: tuple[str, ...],
    partitions: int,
    replication_factor: int = 1,
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    """Create the topics that do not exist yet; return every topic's partition count.

    Existing topics are left as they are (their partition count is reported, not changed).
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=15_000,
        **aiokafka_kwargs(security or KafkaSecurity()),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(n, partitions, replication_factor) for n in missing]
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
        raise ConfigError(f"--bootstrap-servers: cannot reach the brokers ({exc})") from None
    finally:
        await admin.close()


def check_copartitioned(topics: TopicNames, counts: Mapping[str, int]) -> int:
    """The shared partition count of the input topics; refuse to start when they differ."""
    a, u = (counts[t] for t in topics.inputs)
    if a != u:
        raise ConfigError(
            f"topics: {topics.account_events!r} has {a} partitions but {topics.usage_events!r} has "
            f"{u}; the input topics must be co-partitioned (same count, keyed by customer_id)"
        )
    return a


async def cluster_id(bootstrap_servers: str, security: KafkaSecurity | None = None) -> str | None:
    """The id of the cluster the brokers belong to (Metadata v2 and later), or None.

    aiokafka reads the id but does not keep it, so the worker asks once at start: the state's
    log identity (``streams/log_identity.py``) records it.
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
