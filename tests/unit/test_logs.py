"""The log format: text or JSON for every line, Faust's start-up chatter at DEBUG."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from streams.ops.logs import logging_config


def _capture(level: str, fmt: str) -> io.StringIO:
    stream = io.StringIO()
    config = logging_config(level, fmt)
    config["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(config)
    return stream


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_level_logger_message_and_exception() -> None:
    stream = _capture("info", "json")
    logging.getLogger("streams.kafka.pipeline").warning(
        "dead letter %s[%d]@%d: %s", "t", 1, 7, "bad"
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("faust.worker").exception("crashed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "streams.kafka.pipeline"
    assert first["message"] == "dead letter t[1]@7: bad"
    assert first["ts"].endswith("Z")
    assert second["logger"] == "faust.worker"
    assert "ValueError: boom" in second["exception"]


def test_faust_and_mode_info_chatter_is_debug_but_what_an_operator_follows_stays() -> None:
    stream = _capture("info", "text")
    logging.getLogger("faust.tables.table").info("[^--Table: customers]: Starting...")
    logging.getLogger("streams.kafka.app").info("[^-_HttpService]: Starting...")
    logging.getLogger("faust.worker").info("[^Worker]: Ready")
    logging.getLogger("faust.tables.recovery").info("[^---Recovery]: Seek stream partitions")
    logging.getLogger("streams.ops.http").info("metrics on http://127.0.0.1:9108/metrics")
    logging.getLogger("faust.transport").info("Subscribed to topic(s):\n+------+\n| t |")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "Ready" in lines[0] and "Seek stream" in lines[1] and "metrics on" in lines[2]


def test_at_debug_the_demoted_lines_are_there() -> None:
    stream = _capture("debug", "text")
    logging.getLogger("faust.tables.table").info("[^--Table: customers]: Starting...")
    assert "DEBUG faust.tables.table: [^--Table: customers]: Starting..." in stream.getvalue()
