"""Poison records contained, without a broker: bounded dead letters, processing errors
dead-lettered with nothing half-applied, a run of failures stopping the worker, and dead
letters that can never be sent told apart from a broker outage.

The same on the real broker: ``tests/integration/test_poison_records.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import events as ev
from streams.core.clock import Clock
from streams.core.errors import InvalidEvent
from streams.core.ingest import Decoder, dead_letter
from streams.kafka.containment import (
    Contained,
    DeadLetterOut,
    FailureShare,
    Position,
    ProcessingErrorsExceeded,
    unsendable,
)
from streams.kafka.pipeline import Ingest, Rejected
from streams.kafka.processor import ContactAll, Processor, Stores
from streams.kafka.topics import TopicNames
from streams.ops.metrics import Metrics
from tests.unit.test_processor import DictStore, Publisher, TinyCore, _visit

ERROR = InvalidEvent("too_large", "value: 5242880 bytes exceeds the limit of 65536 bytes")
TOPIC = "account-events"

# Bytes that grow when a dead letter copies them: JSON escapes (quotes, backslashes, control
# characters up to six bytes each), multi-byte characters, and invalid UTF-8 (base64).
_GROWING = st.lists(
    st.sampled_from(
        [b'"', b"\\", b"\x00", b"\x01", b"\x1f", b"\n", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"a"]
    ),
    max_size=3_000,
).map(b"".join)
RAW = st.binary(max_size=3_000) | _GROWING | st.text(max_size=2_000).map(str.encode)


def _letter(key: bytes | None, value: bytes | None, limit: int) -> bytes:
    return dead_letter(
        source_topic=TOPIC,
        partition=7,
        offset=2**40,
        key=key,
        value=value,
        error=ERROR,
        received_at_ms=1_700_000_000_000,
        max_value_bytes=limit,
    )


# A dead letter with empty copies, plus what its copies can add besides their text: the
# "_encoding" fields and the lengths' digits.
FIXED = len(_letter(b"", b"", 1)) + 2 * len(',"x_encoding":"base64"') + 2 * 20


def _copy(letter: dict[str, Any], field: str) -> bytes:
    if letter.get(f"{field}_encoding") == "base64":
        return base64.b64decode(letter[field])
    text: str = letter[field]
    return text.encode()


@settings(max_examples=300, deadline=None)
@given(key=st.none() | RAW, value=st.none() | RAW, limit=st.integers(1, 2_500))
def test_a_dead_letter_is_bounded_and_describes_the_original(
    key: bytes | None, value: bytes | None, limit: int
) -> None:
    raw = _letter(key, value, limit)
    assert len(raw) <= 2 * limit + FIXED
    letter = orjson.loads(raw)
    for field, original in (("key", key), ("value", value)):
        if original is None:
            assert letter[field] is None and f"{field}_bytes" not in letter
            continue
        copy = _copy(letter, field)
        encoded = len(orjson.dumps(letter[field])) - 2
        assert encoded <= limit
        assert original.startswith(copy)
        assert letter[f"{field}_truncated"] is (copy != original)
        if letter[f"{field}_truncated"]:
            # Cut no shorter than needed: one more character (at most six bytes as JSON
            # text) or base64 group (four) would not fit.
            assert encoded > limit - 6
        assert letter[f"{field}_bytes"] == len(original)
        assert letter[f"{field}_sha256"] == hashlib.sha256(original).hexdigest()


@pytest.mark.parametrize(
    "value",
    [
        b"x" * (5 * 1024 * 1024),
        b'"\\' * 300_000,
        bytes(range(1, 32)) * 20_000,
        b"\xff" + b"\x80abc" * 200_000,
    ],
    ids=["5 MiB", "quotes and backslashes", "control characters", "invalid UTF-8"],
)
def test_the_records_that_stopped_the_worker_fit_the_producer(value: bytes) -> None:
    """The values seen to stop the worker: their dead letters were 1.2 MB and more, over the
    producer's 1,000,000-byte request limit; cut to the default bound they are not."""
    letter = _letter(b"c1", value, 64 * 1024)
    assert len(letter) <= 64 * 1024 + FIXED
    decoded = orjson.loads(letter)
    assert decoded["value_truncated"] is True and decoded["value_bytes"] == len(value)


def test_ingest_cuts_the_key_that_keys_a_dead_letter() -> None:
    topics = TopicNames("a", "u", "d", "dl")
    ingest = Ingest(topics, Decoder(), Metrics(), lambda: 0, dead_letter_max_value_bytes=100)
    rejected = ingest.accept("a", 0, 3, b"k" * 2_000_000, b"{}")
    assert isinstance(rejected, Rejected)
    assert rejected.key == b"k" * 100
    letter = orjson.loads(rejected.value)
    assert letter["key"] == "k" * 100 and letter["key_bytes"] == 2_000_000
    assert letter["key_truncated"] is True and letter["value"] == "{}"


# --- processing errors ------------------------------------------------------------------


class FailingCore(TinyCore):
    """TinyCore that fails on the events whose id is planted, at one step of the processing."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.planted: set[str] = set()

    def step(self, state: Any, event: ev.Event, now_ms: int) -> Any:
        if self.where == "step" and event.event_id in self.planted:
            raise ValueError(f"the core cannot apply {event.event_id}")
        result = super().step(state, event, now_ms)
        if self.where == "dump" and event.event_id in self.planted:
            result[0]["poison"] = True
        return result

    def dump(self, state: dict[str, Any]) -> bytes:
        if state.get("poison"):
            raise TypeError("the record cannot be encoded")
        return super().dump(state)


def _processor(core: TinyCore, publisher: Publisher) -> tuple[Processor, Stores]:
    stores = Stores(DictStore(), DictStore(), DictStore())
    return Processor(core, stores, Clock("event"), ContactAll(), publisher, Metrics()), stores


@pytest.mark.parametrize("where", ["step", "dump"])
def test_a_failing_event_leaves_the_processor_as_it_was(where: str) -> None:
    """The failing event moves no stream time, starts no ledger work (no decision) and leaves
    no write: processed with it, the stream ends as it does without it."""

    async def go(poisoned: bool) -> tuple[list[Any], dict[bytes, bytes], dict[bytes, bytes]]:
        core = FailingCore(where)
        publisher = Publisher()
        processor, stores = _processor(core, publisher)
        metrics = Metrics()
        contained = Contained(processor.step_event_nowait, metrics, lambda: 0, 0.5, 10)
        events = [(0, _visit("e1", 1_000)), (1, _visit("e2", 900_000)), (2, _visit("e3", 2_000))]
        if not poisoned:
            del events[1]
        core.planted = {"e2"}
        failed = []
        for offset, event in events:
            rejected = contained.apply("usage", TOPIC, 0, offset, event, b"c1", b"raw bytes")
            if rejected is not None:
                failed.append(orjson.loads(rejected.value))
            processor.apply_time_nowait(0)
        if poisoned:
            assert [f["error_code"] for f in failed] == ["processing_error"]
            assert failed[0]["offset"] == 1 and failed[0]["value"] == "raw bytes"
            assert failed[0]["error"].startswith("processing the usage event failed: ")
            assert metrics.dead_letters.labels(TOPIC, "processing_error")._value.get() == 1
        else:
            assert failed == []
        await processor.flush()
        assert orjson.loads(stores.customers[b"c1"])["offsets"] == {"usage": 2}
        return (
            [(d.candidate.trigger, d.candidate.instance, d.decided_at_ms) for d in publisher.sent],
            dict(stores.customers),
            dict(stores.clock),
        )

    assert asyncio.run(go(True)) == asyncio.run(go(False))


def test_a_run_of_failures_stops_instead_of_dead_lettering_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = FailingCore("step")
    processor, _ = _processor(core, Publisher())
    contained = Contained(processor.step_event_nowait, Metrics(), lambda: 0, 0.2, 10)
    core.planted = {f"bad{i}" for i in range(10)}

    async def go() -> None:
        # One failure in ten, for long: under the share.
        for i in range(50):
            eid = "bad0" if i % 10 == 0 else f"ok{i}"
            contained.apply("usage", TOPIC, 0, i, _visit(eid, 1_000 + i), None, b"v")
        # Then the third failure within ten records: over 0.2 of the window.
        for i in range(50, 52):
            assert contained.apply("usage", TOPIC, 0, i, _visit(f"bad{i % 10}", 2_000), None, b"v")
        with pytest.raises(ProcessingErrorsExceeded) as stopped:
            contained.apply("usage", TOPIC, 0, 52, _visit("bad3", 2_000), None, b"v")
        assert "3 of the last 10 records failed" in str(stopped.value)
        assert "stream.processing_error_max_share 0.2" in str(stopped.value)
        assert f"{TOPIC}[0]@52" in str(stopped.value)

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
    assert any("processing_error_max_share" in r.getMessage() for r in caplog.records)


def test_failure_share_counts_a_full_window() -> None:
    share = FailureShare(0.5, 4)
    assert [share.note(True), share.note(True)] == [False, False]
    assert share.note(True)  # 3 of the last 4 (a run at the start counts too)
    share = FailureShare(0.5, 4)
    outcomes = [share.note(f) for f in (True, False, True, False, True, False, True, False)]
    assert not any(outcomes)  # never more than 2 of 4
    assert not FailureShare(1.0, 2).note(True)
    assert FailureShare(0.0, 2).note(True)


# --- dead letters that cannot be sent ---------------------------------------------------


def _wrapped(exc: Exception) -> ProducerSendError:
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapped:
        return wrapped


def test_unsendable_tells_content_from_outage() -> None:
    assert unsendable(MessageSizeTooLargeError("1200558 bytes"))
    assert unsendable(_wrapped(MessageSizeTooLargeError("1200558 bytes")))
    assert not unsendable(_wrapped(KafkaTimeoutError()))
    assert not unsendable(KafkaConnectionError("broker down"))
    assert not unsendable(ConnectionError("gone"))


class FakeProducer:
    """Hands records over like Faust's topic.send; refuses or fails some as told."""

    def __init__(self) -> None:
        self.refuse_on_send: Exception | None = None
        self.refuse_on_ack: Exception | None = None
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def __call__(self, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        if self.refuse_on_send is not None:
            raise self.refuse_on_send
        self.sent.append((key, value))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuse_on_ack is not None:
            ack.set_exception(self.refuse_on_ack)
        else:
            ack.set_result(None)
        return ack


def test_a_dead_letter_refused_for_its_content_is_counted_logged_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    producer = FakeProducer()
    out = DeadLetterOut(producer, metrics)
    rejected = Rejected(b"k", b"{}", ERROR)

    async def go() -> None:
        producer.refuse_on_send = _wrapped(MessageSizeTooLargeError("too large"))
        await out.send(rejected, Position(TOPIC, 2, 17))
        producer.refuse_on_send = None
        producer.refuse_on_ack = MessageSizeTooLargeError("the broker says too large")
        await out.send(rejected, Position(TOPIC, 2, 18))
        await out.settle(out.seal())

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
    assert metrics.dead_letters_unsendable.labels(TOPIC)._value.get() == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"{TOPIC}[2]@17" in m for m in errors)
    assert any(f"{TOPIC}[2]@18" in m for m in errors)


@pytest.mark.parametrize("at", ["send", "ack"])
def test_a_broker_outage_is_not_skipped(at: str) -> None:
    metrics = Metrics()
    producer = FakeProducer()
    out = DeadLetterOut(producer, metrics)
    outage = _wrapped(KafkaTimeoutError())

    async def go() -> None:
        if at == "send":
            producer.refuse_on_send = outage
        else:
            producer.refuse_on_ack = outage
        await out.send(Rejected(b"k", b"{}", ERROR), Position(TOPIC, 0, 1))
        await out.settle(out.seal())

    with pytest.raises(ProducerSendError):
        asyncio.run(go())
    assert metrics.dead_letters_unsendable.labels(TOPIC)._value.get() == 0


@settings(max_examples=200, deadline=None)
@given(
    window=st.integers(1, 12),
    max_share=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
    outcomes=st.lists(st.booleans(), max_size=60),
    passed_inline=st.booleans(),
)
def test_failure_share_is_the_share_of_the_last_window_records(
    window: int, max_share: float, outcomes: list[bool], passed_inline: bool
) -> None:
    """Remembering only the failures says what a list of the last ``window`` outcomes says,
    also when successes are taken the worker's way (``passed``)."""
    share = FailureShare(max_share, window)
    last: list[bool] = []
    for failed in outcomes:
        last = (last + [failed])[-window:]
        if failed or not passed_inline:
            assert share.note(failed) == (sum(last) > max_share * window)
        else:
            share.passed()
        assert share.failed == sum(last)
