"""Kafka security settings: every protocol and mechanism, every refusal naming its variable,
and the password never shown."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism

from streams.core.errors import ConfigError
from streams.kafka.security import (
    KafkaSecurity,
    aiokafka_kwargs,
    faust_credentials,
    from_env,
)

SECRET = "kafka-s3cret-Pw"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a client certificate signed by it, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("kafka-certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)  # noqa: S603,S607

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out",
            "client.csr", "-subj", "/CN=worker")  # fmt: skip
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.pem", "-days", "2")  # fmt: skip
    return {name: str(d / f"{name}") for name in ("ca.pem", "client.pem", "client.key")}


def test_default_is_plaintext_without_credentials() -> None:
    sec = from_env({})
    assert sec == KafkaSecurity()
    assert faust_credentials(sec) is None
    assert aiokafka_kwargs(sec) == {"security_protocol": "PLAINTEXT"}
    assert sec.describe() == "PLAINTEXT"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_each_mechanism(mechanism: str) -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "KAFKA_SASL_MECHANISM": mechanism.lower(),
        "KAFKA_SASL_USERNAME": "worker",
        "KAFKA_SASL_PASSWORD": SECRET,
    }
    sec = from_env(env)
    assert (sec.security_protocol, sec.sasl_mechanism) == ("SASL_PLAINTEXT", mechanism)
    creds = faust_credentials(sec)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol == AuthProtocol.SASL_PLAINTEXT
    assert creds.mechanism == SASLMechanism(mechanism)
    assert (creds.username, creds.password, creds.ssl_context) == ("worker", SECRET, None)
    assert aiokafka_kwargs(sec) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "worker",
        "sasl_plain_password": SECRET,
    }
    assert SECRET not in repr(sec) and SECRET not in sec.describe() and "***" in repr(sec)
    assert SECRET not in repr(creds)


def test_sasl_defaults_to_scram_sha_512() -> None:
    sec = from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": SECRET,
        }
    )
    assert sec.sasl_mechanism == "SCRAM-SHA-512"


def test_sasl_ssl_with_ca_and_client_certificate(certs: dict[str, str]) -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "worker",
        "KAFKA_SASL_PASSWORD": SECRET,
        "KAFKA_SSL_CAFILE": certs["ca.pem"],
        "KAFKA_SSL_CERTFILE": certs["client.pem"],
        "KAFKA_SSL_KEYFILE": certs["client.key"],
    }
    sec = from_env(env)
    creds = faust_credentials(sec)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol == AuthProtocol.SASL_SSL
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert creds.ssl_context.check_hostname
    kwargs = aiokafka_kwargs(sec)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


def test_ssl_only(certs: dict[str, str]) -> None:
    sec = from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": certs["ca.pem"]})
    creds = faust_credentials(sec)
    assert isinstance(creds, faust.SSLCredentials)
    kwargs = aiokafka_kwargs(sec)
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL"}, "KAFKA_SECURITY_PROTOCOL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SASL_PASSWORD": SECRET}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SSL_CAFILE": "/etc/hostname"}, "KAFKA_SSL_CAFILE"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
            "KAFKA_SSL_CAFILE",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/no/such/cert.pem"},
            "KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_refusals_name_the_variable_and_hide_the_password(
    env: dict[str, str], variable: str
) -> None:
    env = {**env}
    if "KAFKA_SASL_USERNAME" in env and env.get("KAFKA_SECURITY_PROTOCOL", "").startswith("SASL"):
        env.setdefault("KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(ConfigError) as err:
        from_env(env)
    assert str(err.value).startswith(f"{variable}:"), str(err.value)
    assert SECRET not in str(err.value)


def test_keyfile_without_certfile_and_unloadable_files(
    certs: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="^KAFKA_SSL_KEYFILE:"):
        from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": certs["client.key"]})
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="^KAFKA_SSL_CAFILE: cannot be loaded"):
        from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(junk)})
    with pytest.raises(ConfigError, match="^KAFKA_SSL_CERTFILE: cannot be loaded"):
        from_env(
            {
                "KAFKA_SECURITY_PROTOCOL": "SSL",
                "KAFKA_SSL_CERTFILE": certs["client.pem"],
                "KAFKA_SSL_KEYFILE": str(junk),
            }
        )


def test_frozen() -> None:
    sec = from_env({})
    with pytest.raises(AttributeError):
        sec.password = "x"  # type: ignore[misc]
