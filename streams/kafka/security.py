"""Kafka security settings: SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and TLS.

One frozen ``KafkaSecurity``, read from the environment and validated at start (each error
names its environment variable), turned into what each client needs: Faust credentials for the
app (``faust_credentials``) and keyword arguments for aiokafka's admin client, producers and
consumers (``aiokafka_kwargs``). The password never appears in ``repr`` or in an error.

| variable | meaning |
| --- | --- |
| ``KAFKA_SECURITY_PROTOCOL`` | ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL`` |
| ``KAFKA_SASL_MECHANISM`` | ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` (default with SASL) |
| ``KAFKA_SASL_USERNAME`` / ``KAFKA_SASL_PASSWORD`` | the SASL user (required with SASL) |
| ``KAFKA_SSL_CAFILE`` | PEM bundle that signs the brokers' certificates (default: system CAs) |
| ``KAFKA_SSL_CERTFILE`` / ``KAFKA_SSL_KEYFILE`` | client certificate and key (mutual TLS) |
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV = {
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "username": "KAFKA_SASL_USERNAME",
    "password": "KAFKA_SASL_PASSWORD",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "ssl_certfile": "KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "KAFKA_SSL_KEYFILE",
}
SECRET_ENV = ("KAFKA_SASL_PASSWORD",)


@dataclass(frozen=True)
class KafkaSecurity:
    """How the worker authenticates to Kafka and encrypts the connection."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={'***' if name == 'password' and value else value!r}"
            for name, value in (
                ("security_protocol", self.security_protocol),
                ("sasl_mechanism", self.sasl_mechanism),
                ("username", self.username),
                ("password", self.password),
                ("ssl_cafile", self.ssl_cafile),
                ("ssl_certfile", self.ssl_certfile),
                ("ssl_keyfile", self.ssl_keyfile),
            )
        )
        return f"KafkaSecurity({shown})"

    def describe(self) -> str:
        """One line for the start-up log, without the password."""
        if not self.sasl:
            return self.security_protocol
        return f"{self.security_protocol} {self.sasl_mechanism} as {self.username}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL and SASL_SSL (brokers verified, host names checked)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile is not None:
            context.load_cert_chain(
                str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
            )
        return context


def _file(name: str, env: Mapping[str, str]) -> Path | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"{name}: no such file: {text!r}")
    return path


def from_env(environ: Mapping[str, str]) -> KafkaSecurity:
    """Read and validate the KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables.

    Raises ConfigError naming the variable that is wrong (never showing the password).
    """
    protocol = environ.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL: must be one of {', '.join(PROTOCOLS)}, got {protocol!r}"
        )
    sasl = protocol.startswith("SASL_")
    tls = protocol in ("SSL", "SASL_SSL")
    mechanism_text = environ.get("KAFKA_SASL_MECHANISM", "").strip().upper()
    username = environ.get("KAFKA_SASL_USERNAME", "") or None
    password = environ.get("KAFKA_SASL_PASSWORD", "") or None
    if not sasl:
        for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
            if environ.get(name):
                raise ConfigError(
                    f"{name}: set, but KAFKA_SECURITY_PROTOCOL is {protocol} (use SASL_SSL "
                    "or SASL_PLAINTEXT to authenticate with SASL)"
                )
        mechanism = None
    else:
        mechanism = mechanism_text or "SCRAM-SHA-512"
        if mechanism not in MECHANISMS:
            raise ConfigError(
                f"KAFKA_SASL_MECHANISM: must be one of {', '.join(MECHANISMS)}, "
                f"got {mechanism_text!r}"
            )
        if username is None:
            raise ConfigError(f"KAFKA_SASL_USERNAME: required with {protocol}")
        if password is None:
            raise ConfigError(f"KAFKA_SASL_PASSWORD: required with {protocol}")
    cafile = _file("KAFKA_SSL_CAFILE", environ)
    certfile = _file("KAFKA_SSL_CERTFILE", environ)
    keyfile = _file("KAFKA_SSL_KEYFILE", environ)
    if not tls:
        for name, given in (
            ("KAFKA_SSL_CAFILE", cafile),
            ("KAFKA_SSL_CERTFILE", certfile),
            ("KAFKA_SSL_KEYFILE", keyfile),
        ):
            if given is not None:
                raise ConfigError(
                    f"{name}: set, but KAFKA_SECURITY_PROTOCOL is {protocol} (use SSL or "
                    "SASL_SSL for TLS)"
                )
    if keyfile is not None and certfile is None:
        raise ConfigError("KAFKA_SSL_KEYFILE: needs KAFKA_SSL_CERTFILE (the client certificate)")
    security = KafkaSecurity(protocol, mechanism, username, password, cafile, certfile, keyfile)
    if tls:
        try:
            security.ssl_context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            culprit = "KAFKA_SSL_CERTFILE" if certfile is not None else "KAFKA_SSL_CAFILE"
            raise ConfigError(f"{culprit}: cannot be loaded for TLS ({exc})") from None
    return security


def faust_credentials(sec: KafkaSecurity) -> Any:
    """Faust's ``broker_credentials`` for the app: SASLCredentials (with the TLS context for
    SASL_SSL), SSLCredentials, or None for PLAINTEXT."""
    import faust

    if sec.sasl:
        return faust.SASLCredentials(
            username=sec.username,
            password=sec.password,
            mechanism=sec.sasl_mechanism,
            ssl_context=sec.ssl_context(),
        )
    context = sec.ssl_context()
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_kwargs(sec: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaAdminClient, AIOKafkaProducer and AIOKafkaConsumer."""
    kwargs: dict[str, Any] = {"security_protocol": sec.security_protocol}
    context = sec.ssl_context()
    if context is not None:
        kwargs["ssl_context"] = context
    if sec.sasl:
        kwargs.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=sec.username,
            sasl_plain_password=sec.password,
        )
    return kwargs
