"""Client options for each listener of the test broker (shared by network and cluster tests)."""

from __future__ import annotations

from typing import Any

from tests.support.brokers import KafkaCluster

# (listener, SASL mechanism): every listener, and every mechanism on both SASL listeners.
LISTENER_CASES = [
    ("plaintext", None),
    ("ssl", None),
    ("mtls", None),
    ("sasl_plaintext", "PLAIN"),
    ("sasl_plaintext", "SCRAM-SHA-256"),
    ("sasl_plaintext", "SCRAM-SHA-512"),
    ("sasl_ssl", "PLAIN"),
    ("sasl_ssl", "SCRAM-SHA-256"),
    ("sasl_ssl", "SCRAM-SHA-512"),
]


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def client_options(
    kafka: KafkaCluster,
    listener: str,
    mechanism: str | None = None,
    *,
    password: str | None = None,
) -> dict[str, Any]:
    """Keyword options for KafkaClient/BrokerConnection to use ``listener``."""
    kafka.require(listener)
    options: dict[str, Any] = {}
    if listener in ("ssl", "sasl_ssl", "mtls"):
        kafka.require("ca_file")
        options["ssl_cafile"] = kafka.ca_file
    if listener == "mtls":
        kafka.require("client_cert", "client_key")
        options["ssl_certfile"] = kafka.client_cert
        options["ssl_keyfile"] = kafka.client_key
    if listener.startswith("sasl"):
        assert mechanism is not None
        options["sasl_mechanism"] = mechanism
        options["sasl_username"] = kafka.username
        options["sasl_password"] = kafka.password if password is None else password
    return options
