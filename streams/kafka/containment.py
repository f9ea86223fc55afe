"""Poison records are contained: no record's content stops the worker or a partition.

Two parts, both used by the batch driver in ``streams/kafka/driver.py``:

``DeadLetterOut`` publishes dead letters. Dead letters are bounded (``streams/core/ingest.py``), so
the producer takes them; should the producer or the broker still refuse one for its content
(too large, an invalid record), it is counted, logged at ERROR with the record's position and
skipped: the record stays on its input topic at that position. Any other failure (the broker
is down, a timeout) is raised as before: the batch's input is not acked and is read again.

``Contained`` applies one decoded event and turns an exception of the processing (loading the
customer's record, the core's step, the triggers, encoding the record) into a
``processing_error`` dead letter for that record, as Kafka Streams' processing exception
handler does (KIP-1033). ``Processor.step_event_nowait`` changes nothing when it raises, so the
records after it are applied as if the failed one had not been there. Many failures in a row
are a bug, not bad records: above ``stream.processing_error_max_share`` of the last
``stream.processing_error_window`` records the worker stops instead of dead-lettering the
stream.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from streams.core.errors import InvalidEvent
from streams.core.events import Event
from streams.core.ingest import DEFAULT_DEAD_LETTER_MAX_VALUE_BYTES, bounded_key, dead_letter
from streams.kafka.pipeline import Rejected
from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)

PROCESSING_ERROR = "processing_error"
DEFAULT_MAX_SHARE = 0.5
DEFAULT_WINDOW = 100

# Errors that say this record can never be sent, however often it is tried: the producer's
# own size check, and the broker's answers about the record itself.
UNSENDABLE: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)

Send = Callable[[bytes | None, bytes], Awaitable[Awaitable[Any]]]
"""Send a dead letter (key, value); the outer await hands it to the producer, the inner one is
the broker's acknowledgement."""


def unsendable(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, says the record can never be sent
    (Faust raises ProducerSendError from aiokafka's error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UNSENDABLE):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record was on its input topic."""

    topic: str
    partition: int
    offset: int


Sent = list[tuple[Position, Awaitable[Any]]]
"""Dead letters handed to the producer, not yet acknowledged."""


class DeadLetterOut:
    """Publishes dead letters; skips, counted and logged, those that can never be sent."""

    def __init__(self, send: Send, metrics: Metrics) -> None:
        self._send = send
        self._metrics = metrics
        self._sent: Sent = []

    async def send(self, rejected: Rejected, where: Position) -> None:
        """Hand a dead letter to the producer; its acknowledgement is awaited by ``settle``."""
        try:
            ack = await self._send(rejected.key, rejected.value)
        except Exception as exc:
            if not unsendable(exc):
                raise
            self._skip(where, exc)
            return
        self._sent.append((where, ack))

    def seal(self) -> Sent:
        """The dead letters sent since the last ``seal``, for ``settle``."""
        sent, self._sent = self._sent, []
        return sent

    async def settle(self, sent: Sent) -> None:
        """Wait for the broker's acknowledgement of ``sent``: before their records are acked,
        so that no offset commit passes a dead letter that may still be lost. One the broker
        refuses for its content is skipped; any other failure is raised."""
        for where, ack in sent:
            try:
                await ack
            except Exception as exc:
                if not unsendable(exc):
                    raise
                self._skip(where, exc)

    def _skip(self, where: Position, exc: BaseException) -> None:
        self._metrics.dead_letters_unsendable.labels(where.topic).inc()
        log.error(
            "dead letter of %s[%d]@%d cannot be sent, skipped (the record stays on its topic "
            "at that position): %r",
            where.topic,
            where.partition,
            where.offset,
            exc,
        )


class ProcessingErrorsExceeded(RuntimeError):
    """Too large a share of the last records failed processing: a bug, not bad records."""


class FailureShare:
    """The outcomes of the last ``window`` records; says when more than ``max_share`` of the
    window failed (counted over a full window, so a run of failures at the start counts too).

    Only the failures are remembered (by their record's number): a success is one addition
    (``passed``), which the worker makes for nearly every record.
    """

    def __init__(self, max_share: float, window: int) -> None:
        self.max_share = max_share
        self.window = window
        self.seen = 0  # records noted so far
        self._failures: collections.deque[int] = collections.deque()  # their numbers

    @property
    def failed(self) -> int:
        """How many of the last ``window`` records failed."""
        failures, oldest = self._failures, self.seen - self.window
        while failures and failures[0] <= oldest:
            failures.popleft()
        return len(failures)

    def passed(self) -> None:
        """Take one record that did not fail."""
        self.seen += 1

    def note(self, failed: bool) -> bool:
        """Take one record's outcome; True when the failures now exceed the share."""
        self.seen += 1
        if failed:
            self._failures.append(self.seen)
        return self.failed > self.max_share * self.window


Step = Callable[[str, int, int, Event], None]
"""Apply one event (kind, partition, offset, event); changes nothing when it raises."""


class Contained:
    """Applies events one at a time; a record whose processing raises becomes a dead letter."""

    def __init__(
        self,
        step: Step,
        metrics: Metrics,
        wall_ms: Callable[[], int],
        max_share: float = DEFAULT_MAX_SHARE,
        window: int = DEFAULT_WINDOW,
        max_value_bytes: int = DEFAULT_DEAD_LETTER_MAX_VALUE_BYTES,
    ) -> None:
        self._step = step
        self._metrics = metrics
        self._wall_ms = wall_ms
        self.share = FailureShare(max_share, window)
        self._max_value_bytes = max_value_bytes

    def apply(
        self,
        kind: str,
        topic: str,
        partition: int,
        offset: int,
        event: Event,
        key: bytes | None,
        value: bytes | None,
    ) -> Rejected | None:
        """Apply ``event`` (the record ``key``/``value`` at ``topic[partition]@offset``); the
        dead letter for it if its processing raised, else None. Raises
        ``ProcessingErrorsExceeded`` when too many of the last records failed."""
        try:
            self._step(kind, partition, offset, event)
        except Exception as exc:
            return self._failed(kind, Position(topic, partition, offset), key, value, exc)
        self.share.seen += 1  # FailureShare.passed, inline: once per record
        return None

    def _failed(
        self,
        kind: str,
        where: Position,
        key: bytes | None,
        value: bytes | None,
        exc: Exception,
    ) -> Rejected:
        share = self.share
        if share.note(True):
            message = (
                f"{share.failed} of the last {share.window} records failed processing, more "
                f"than stream.processing_error_max_share {share.max_share} of "
                f"stream.processing_error_window: a fault of the processor, not bad records; "
                f"stopping (the records are read again after a restart). The last, "
                f"{where.topic}[{where.partition}]@{where.offset}: {type(exc).__name__}: {exc}"
            )
            log.error("%s", message)
            raise ProcessingErrorsExceeded(message) from exc
        text = f"{type(exc).__name__}: {exc}"
        self._metrics.dead_letters.labels(where.topic, PROCESSING_ERROR).inc()
        log.error(
            "dead letter %s[%d]@%d: processing failed: %s",
            where.topic,
            where.partition,
            where.offset,
            text,
            exc_info=exc,
        )
        error = InvalidEvent(PROCESSING_ERROR, f"processing the {kind} event failed: {text}")
        record = dead_letter(
            source_topic=where.topic,
            partition=where.partition,
            offset=where.offset,
            key=key,
            value=value,
            error=error,
            received_at_ms=self._wall_ms(),
            max_value_bytes=self._max_value_bytes,
        )
        return Rejected(bounded_key(key, self._max_value_bytes), record, error)
