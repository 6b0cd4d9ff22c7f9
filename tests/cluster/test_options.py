"""Client options and bootstrap parsing, without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.cluster.options import (
    CLIENT_OPTION_NAMES,
    ClientOptions,
    parse_bootstrap,
    split_client_options,
)

SECRET = "top-Secret-pw-123"


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("broker:9092", (("broker", 9092),)),
        ("a:1,b:2", (("a", 1), ("b", 2))),
        (" a:1 , b:2 ,", (("a", 1), ("b", 2))),
        ("a", (("a", 9092),)),
        ("a:1,a:1", (("a", 1),)),
        ("[::1]:9093", (("::1", 9093),)),
        ("[::1]", (("::1", 9092),)),
        (["a:1", ("b", 2), {"host": "c", "port": 3}], (("a", 1), ("b", 2), ("c", 3))),
        (("a", 1), (("a", 1),)),
        (("a:1", "b:2"), (("a", 1), ("b", 2))),
        ({"host": "a", "port": 7}, (("a", 7),)),
        ({"host": "a", "port": "7"}, (("a", 7),)),
        ([{"host": "a"}], (("a", 9092),)),
        ([["a", 5]], (("a", 5),)),
        # Host forms the stricter host check must keep accepting.
        ("my_broker-1.example.com:9092", (("my_broker-1.example.com", 9092),)),
        ("10.0.0.1:9092", (("10.0.0.1", 9092),)),
        ("[fe80::1%eth0]:9092", (("fe80::1%eth0", 9092),)),
        ("[::ffff:10.0.0.1]:1", (("::ffff:10.0.0.1", 1),)),
        ([("::1", 9092)], (("::1", 9092),)),
        ("bücher.de:9092", (("bücher.de", 9092),)),
        ("kafka:09092", (("kafka", 9092),)),
    ],
)
def test_bootstrap_forms(bootstrap: Any, expected: tuple[tuple[str, int], ...]) -> None:
    assert parse_bootstrap(bootstrap) == expected


@pytest.mark.parametrize(
    ("bootstrap", "exc", "fragment"),
    [
        ("", ValueError, "no broker"),
        (" , ", ValueError, "no broker"),
        ([], ValueError, "no broker"),
        ("a:0", ValueError, "'a:0'"),
        ("a:65536", ValueError, "65536"),
        ("a:port", ValueError, "'a:port'"),
        (":9092", ValueError, "':9092'"),
        ("::1:9092", ValueError, "IPv6"),
        ("[::1:9092", ValueError, "unclosed"),
        ("a b:1", ValueError, "'a b:1'"),
        ("k\udcff:1", ValueError, "bad host 'k\\udcff'"),  # no UTF-8 (nor IDNA) form
        (["a:1", 5], TypeError, "5"),
        ([("a",)], ValueError, "(host, port)"),
        ([("a", "b")], ValueError, "'b'"),
        ([("a", True)], ValueError, "True"),
        ([{"host": "a", "prt": 1}], ValueError, "'prt'"),
        # A port alone is no broker: ("host", "9092") used to mean two, the second "9092".
        (("host", "9092"), ValueError, "write 'host:9092'"),
        (["host", "9092"], ValueError, "write 'host:9092'"),
        ("host,9092", ValueError, "'9092' is a port, not a host: write 'host:9092'"),
        ([("9092", 9092)], ValueError, "'9092' is a port"),
        # Ports are ASCII digits: int() refused '²' without naming the entry, read
        # '٩٠٩٢' as 9092, and refuses 5000 digits with a message of its own.
        ("host:\u00b2", ValueError, "bootstrap entry 'host:\u00b2'"),
        ("host:\u0669\u0660\u0669\u0662", ValueError, "'host:\u0669\u0660\u0669\u0662'"),
        ({"host": "a", "port": "\u0669"}, ValueError, "not '\u0669'"),
        pytest.param("host:" + "9" * 5000, ValueError, "port must be", id="5000-digits"),
        # Hosts are host names or IP literals: no control characters, no '/'.
        ("h\x00:9092", ValueError, "bad host 'h\\x00'"),
        ("a/b:9092", ValueError, "bad host 'a/b'"),
        ("\u2603.net:9092", ValueError, "bad host"),
        ([("a:b", 1)], ValueError, "'a:b': not an IPv6 address"),
        ("[fe80::1%]:9092", ValueError, "bad zone"),
        (9092, TypeError, "int"),
        (b"a:1", TypeError, "bytes"),
        (None, TypeError, "NoneType"),
    ],
)
def test_bad_bootstrap(bootstrap: Any, exc: type[Exception], fragment: str) -> None:
    with pytest.raises(exc) as info:
        parse_bootstrap(bootstrap)
    assert fragment in str(info.value)
    with pytest.raises(exc):
        KafkaClient(bootstrap)


@pytest.mark.parametrize(
    ("options", "exc", "name"),
    [
        ({"metadata_max_age": 0}, ValueError, "metadata_max_age"),
        ({"refresh_interval": -1}, ValueError, "refresh_interval"),
        ({"refresh_interval": "1"}, TypeError, "refresh_interval"),
        ({"retry_backoff": 0}, ValueError, "retry_backoff"),
        ({"idle_timeout": None}, TypeError, "idle_timeout"),
        ({"max_idle_connections": -1}, ValueError, "max_idle_connections"),
        ({"max_idle_connections": 1.5}, TypeError, "max_idle_connections"),
        ({"max_connections_per_broker": 0}, ValueError, "max_connections_per_broker"),
        ({"max_connections_per_broker": True}, TypeError, "max_connections_per_broker"),
        ({"request_timeout": 0}, ValueError, "request_timeout"),
        ({"connect_timeout": "fast"}, TypeError, "connect_timeout"),
        ({"sasl_mechanism": "PLAIN"}, ValueError, "sasl_username"),
        ({"ssl_certfile": "/no/such/cert.pem"}, ValueError, "ssl_certfile"),
        ({"requst_timeout": 1}, TypeError, "requst_timeout"),
        ({"acks": 1}, TypeError, "acks"),
        ({"client_id": 5}, TypeError, "client_id"),
        ({"client_id": "x" * 32768}, ValueError, "client_id"),
        # No UTF-8 form: every request's header would fail to encode.
        ({"client_id": "app-\udcff"}, ValueError, "client_id 'app-\\\\udcff'"),
    ],
)
def test_bad_client_options(options: dict[str, Any], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        KafkaClient("a:1", **options)


def test_defaults_and_values() -> None:
    options = ClientOptions.from_options()
    assert options.connection.client_id == "kafka-asgi"
    assert options.connection.connect_timeout == 5.0
    assert options.connection.request_timeout == 30.0
    assert options.connection.ssl_context is None and options.connection.sasl is None
    assert options.metadata_max_age == 300.0 and options.refresh_interval is None
    assert options.retry_backoff == 0.1
    assert options.max_idle_connections == 2 and options.idle_timeout == 60.0
    custom = ClientOptions.from_options(
        client_id="me", request_timeout=3, refresh_interval=2, max_idle_connections=0
    )
    assert custom.connection.client_id == "me"
    assert custom.connection.request_timeout == 3.0
    assert custom.refresh_interval == 2.0 and custom.max_idle_connections == 0


def test_split_client_options() -> None:
    client, rest = split_client_options({"client_id": "x", "acks": 1, "ssl": True})
    assert client == {"client_id": "x", "ssl": True}
    assert rest == {"acks": 1}
    assert "sasl_password" in CLIENT_OPTION_NAMES


def test_client_never_prints_credentials() -> None:
    client = KafkaClient(
        "a:1", sasl_mechanism="SCRAM-SHA-512", sasl_username="bob", sasl_password=SECRET
    )
    for text in (repr(client), str(client), repr(client.options), str(client.options)):
        assert SECRET not in text


@pytest.mark.anyio
async def test_client_must_be_started(anyio_backend: str) -> None:
    client = KafkaClient("127.0.0.1:1")
    assert client.cached_topic("t") is None
    client.request_refresh()  # no-op before start
    with pytest.raises(RuntimeError, match="not started"):
        await client.refresh()
    async with client:
        with pytest.raises(RuntimeError, match="twice"):
            await client.start()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.fetch_metadata("t")
