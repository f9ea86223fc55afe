"""The record-level pipeline between the Kafka shell and the pure core.

``Ingest.accept`` turns one raw input record into a typed event or a dead-letter record. It
knows nothing of Faust: the batch driver (``streams/kafka/driver.py``) feeds it, and tests call
it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from streams.core.errors import InvalidEvent
from streams.core.events import Event
from streams.core.ingest import (
    DEFAULT_DEAD_LETTER_MAX_VALUE_BYTES,
    Decoder,
    bounded_key,
    dead_letter,
)
from streams.kafka.topics import TopicNames
from streams.ops.metrics import Metrics
from streams.ops.ratelimited_log import SummaryLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that goes to the dead-letter topic: its original key (cut like the dead
    letter's copy of it when longer) and the dead letter."""

    key: bytes | None
    value: bytes
    error: InvalidEvent


class Ingest:
    """Decode, validate and count input records; bad ones become dead letters, never exceptions."""

    def __init__(
        self,
        topics: TopicNames,
        decoder: Decoder,
        metrics: Metrics,
        wall_ms: Callable[[], int],
        dead_letter_max_value_bytes: int = DEFAULT_DEAD_LETTER_MAX_VALUE_BYTES,
    ) -> None:
        self._topics = topics
        self._decoder = decoder
        self._metrics = metrics
        self._wall_ms = wall_ms
        self._max_value_bytes = dead_letter_max_value_bytes
        self._consumed = metrics.tally(metrics.events_consumed)
        self._dead_log = SummaryLog(log, "dead-lettered")

    def accept(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        kind: str | None = None,
    ) -> Event | Rejected:
        """Decode one record of ``topic`` (of the ``kind`` given, else the topic's own: a record
        forwarded through the repartition topic keeps its source's kind, and was counted as
        consumed at its source)."""
        now = self._wall_ms()
        forwarded = kind is not None
        try:
            event = self._decoder.decode(kind or self._topics.kind_of(topic), key, value, now)
        except InvalidEvent as exc:
            self._metrics.dead_letters.labels(topic, exc.code).inc()
            self._dead_log.note(
                exc.code,
                f"{topic}[{partition}]@{offset}",
                "dead letter %s[%d]@%d: %s",
                topic,
                partition,
                offset,
                exc.message,
            )
            record = dead_letter(
                source_topic=topic,
                partition=partition,
                offset=offset,
                key=key,
                value=value,
                error=exc,
                received_at_ms=now,
                max_value_bytes=self._max_value_bytes,
            )
            return Rejected(bounded_key(key, self._max_value_bytes), record, exc)
        if not forwarded:
            self._consumed.add(topic, event.type)
        return event
