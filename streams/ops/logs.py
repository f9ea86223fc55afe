"""The log: one format for our lines and Faust's, text or JSON, on stderr.

Faust's worker installs its own (coloured, stdout) handler unless it is given a logging
configuration; ``logging_config`` is that configuration, so both go through the same handler.
Faust's and mode's INFO lines are mostly start-up tables and one "Starting..." line per
service (about 190 lines before the first line of ours); they are demoted to DEBUG, except
the few an operator follows (ready, rebalances, seeks, stopping). mode's services (Faust's and
the worker's own) log through their module's logger with a "[^--Service]: " prefix.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Faust's and mode's INFO lines kept at INFO (the first line of the message is matched).
_KEPT = re.compile(
    r"Ready\b|Worker ready|Revoking|[Nn]ewly assigned|Seek stream|Stopping worker|"
    r"Gathering service tasks|Shutting down|Timer .* woke up too late|Exiting"
)
_LIBRARIES = ("faust", "mode", "aiokafka", "kafka")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (RFC 3339, UTC), level, logger, message, and exception
    with its traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        doc: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


class QuietLibraries(logging.Filter):
    """Demotes Faust's and mode's INFO lines to DEBUG, except those ``_KEPT`` matches; a
    demoted line passes only when the handler's level lets DEBUG through."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        first = record.getMessage().split("\n", 1)[0]
        # mode's services log through the logger of their module (ours too): "[^--Name]: ..."
        if not record.name.startswith(_LIBRARIES) and not first.startswith("[^"):
            return True
        if _KEPT.search(first):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self._level <= logging.DEBUG


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` configuration for ``level`` and ``fmt`` (text, json)."""
    number = getattr(logging, level.upper(), logging.INFO)
    formatter: dict[str, Any] = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"quiet": {"()": QuietLibraries, "level": number}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": sys.stderr,
                "formatter": "default",
                "filters": ["quiet"],
                "level": number,
            }
        },
        "root": {"level": number, "handlers": ["default"]},
    }


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger (the command line's lines before Faust starts)."""
    import logging.config

    logging.config.dictConfig(logging_config(level, fmt))
