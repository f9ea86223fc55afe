"""One base exception for the project; subclasses where callers act differently."""

from __future__ import annotations


class LifecycleError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(LifecycleError):
    """A bad option or configuration: refused at start, before anything is consumed."""


class InvalidEvent(LifecycleError):
    """An input record that is not a valid event; it goes to the dead-letter topic.

    ``code`` is a short, bounded reason class (used as a metric label); the message names the
    field and the problem in words a producer's developer understands.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DevStackError(LifecycleError):
    """The local dev stack (Tansu broker, redis-server) could not be started or reached."""


class ReplacedLogError(LifecycleError):
    """State that belongs to another log than the broker's (a fresh broker, recreated topics,
    a changelog behind local state) while ``stream.on_replaced_log`` is ``fail``."""


class BrokerUnavailable(LifecycleError):
    """No Kafka broker answered at the bootstrap servers (within the start-up wait)."""
