"""kafka-asgi argument parsing and output formatting (no broker needed)."""

from __future__ import annotations

import io
import json
import os
import queue
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from kafka_asgi.cli import (
    CommandError,
    Line,
    _read_lines,
    build_parser,
    client_options,
    format_record,
    main,
)
from kafka_asgi.consumer.results import ConsumerRecord


def parse(*argv: str) -> object:
    return build_parser().parse_args(list(argv))


def test_connection_options_before_or_after_the_command() -> None:
    before = parse("--bootstrap", "h1:1", "--sasl-mechanism", "plain", "topics")
    after = parse("topics", "--bootstrap", "h1:1", "--sasl-mechanism", "PLAIN")
    for args in (before, after):
        assert args.bootstrap == "h1:1"  # type: ignore[attr-defined]
        assert args.sasl_mechanism == "PLAIN"  # type: ignore[attr-defined]
    # An option left out after the command keeps the value given before it.
    mixed = parse("--bootstrap", "h2:2", "tail", "t", "--ssl")
    assert mixed.bootstrap == "h2:2"  # type: ignore[attr-defined]
    assert mixed.ssl is True  # type: ignore[attr-defined]


def test_tail_arguments() -> None:
    args = parse(
        "tail", "orders", "--from-beginning", "-p", "3", "--json", "-n", "5", "--exit-at-end"
    )
    assert (args.topic, args.from_beginning, args.partition, args.json) == (  # type: ignore[attr-defined]
        "orders",
        True,
        3,
        True,
    )
    assert (args.max_records, args.exit_at_end) == (5, True)  # type: ignore[attr-defined]
    defaults = parse("tail", "orders")
    assert defaults.from_beginning is False  # type: ignore[attr-defined]
    assert defaults.partition is None  # type: ignore[attr-defined]
    assert defaults.max_records is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "argv",
    [
        ["tail", "t", "--max-records", "0"],
        ["tail", "t", "--partition", "-1"],
        ["tail", "t", "--from-beginning", "--offset", "3"],
        ["create-topic", "x", "--partitions", "zero"],
        ["create-topic", "x", "--config", "novalue"],
        ["--sasl-mechanism", "GSSAPI", "topics"],
        ["--connect-timeout", "0", "topics"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bootstrap_default_and_environment() -> None:
    args = parse("topics")
    assert client_options(args, {})[0] == "127.0.0.1:9092"
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"}
    assert client_options(args, env)[0] == "k1:9092,k2:9092"
    assert client_options(parse("topics", "-b", "x:1"), env)[0] == "x:1"


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["topics", "-b", ""], {}, "--bootstrap is empty"),
        (["-b", " ", "topics"], {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092"}, "--bootstrap is empty"),
        (["topics"], {"KAFKA_BOOTSTRAP_SERVERS": ""}, "$KAFKA_BOOTSTRAP_SERVERS is set but empty"),
    ],
)
def test_an_empty_bootstrap_is_an_error_naming_it(
    argv: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `-b "$BROKERS"` with the variable unset went to 127.0.0.1:9092 (the default).
    with pytest.raises(CommandError, match=re.escape(named)):
        client_options(parse(*argv), env)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = io.StringIO()
    assert main(argv, stderr=err) == 1
    assert err.getvalue().startswith(f"kafka-asgi: {named}")
    assert err.getvalue().count("\n") == 1


def test_tls_and_sasl_options() -> None:
    args = parse(
        "topics",
        "--ssl-cafile",
        "ca.pem",
        "--no-ssl-check-hostname",
        "--sasl-mechanism",
        "scram-sha-512",
        "--sasl-username",
        "admin",
    )
    _, options = client_options(args, {"KAFKA_SASL_PASSWORD": "from-env"})
    assert options["ssl"] is True
    assert options["ssl_cafile"] == "ca.pem"
    assert options["ssl_check_hostname"] is False
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_username"], options["sasl_password"]) == ("admin", "from-env")
    explicit = parse(
        "topics", "--sasl-mechanism", "PLAIN", "--sasl-username", "u", "--sasl-password", "p"
    )
    assert client_options(explicit, {"KAFKA_SASL_PASSWORD": "env"})[1]["sasl_password"] == "p"
    plain = client_options(parse("topics"), {})[1]
    assert "ssl" not in plain and "sasl_mechanism" not in plain


def test_sasl_without_credentials_fails_with_exit_1() -> None:
    with pytest.raises(CommandError, match="--sasl-username"):
        client_options(parse("topics", "--sasl-mechanism", "PLAIN"), {})
    with pytest.raises(CommandError, match="--sasl-mechanism"):
        client_options(parse("topics", "--sasl-username", "u"), {})
    err = io.StringIO()
    # One line and exit 1, as the README says of every failure (issue 16: it was 2).
    assert main(["topics", "--sasl-mechanism", "PLAIN"], stderr=err) == 1
    assert err.getvalue().count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["topics", "-b", "host:notaport"], "notaport"),
        (["topics", "--ssl-cafile", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
    ],
)
def test_bad_option_values_are_one_line_and_exit_1(argv: list[str], message: str) -> None:
    # They went through as a traceback (a ValueError from the client's checks).
    err = io.StringIO()
    assert main(argv, stderr=err) == 1
    assert err.getvalue().startswith("kafka-asgi: ") and message in err.getvalue()
    assert err.getvalue().count("\n") == 1


class _Unreadable(io.StringIO):
    """Two lines, then a read that fails (an I/O error)."""

    def __iter__(self) -> Iterator[str]:
        yield "one\n"
        yield "caf\u00e9\n"
        raise OSError(5, "Input/output error")


def test_a_failed_read_of_the_input_is_not_its_end() -> None:
    # The reader put the end-of-input marker after a failure too: `produce` sent what it
    # had read, said "produced N records" and exited 0.
    lines: queue.Queue[Line] = queue.Queue()
    _read_lines(_Unreadable(), lines)
    got = [lines.get_nowait() for _ in range(lines.qsize())]
    assert got[:2] == [b"one\n", "caf\u00e9\n".encode()]
    assert len(got) == 3 and isinstance(got[2], OSError)


def test_the_input_is_read_as_the_bytes_it_holds() -> None:
    # From the binary buffer stdin has: no locale decodes it, or fails to.
    raw = b"first\r\n\xff\xfe not utf-8\nlast"
    lines: queue.Queue[Line] = queue.Queue()
    _read_lines(io.TextIOWrapper(io.BytesIO(raw), encoding="ascii"), lines)
    got = [lines.get_nowait() for _ in range(lines.qsize())]
    assert got == [b"first\r\n", b"\xff\xfe not utf-8\n", b"last", None]


class _Metadata:
    partitions = (0,)
    partition_count = 1


class _Client:
    """The client's part `produce` uses before the producer: the topic's metadata."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        pass

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def fetch_metadata(self, topic: str) -> _Metadata:
        return _Metadata()


class _Producer:
    """Keeps what `produce` sends, as Kafka would get it."""

    sent: ClassVar[list[tuple[str, bytes, bytes | None]]] = []

    def __init__(self, client: object) -> None:
        pass

    async def __aenter__(self) -> _Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def send_buffered(
        self, topic: str, value: bytes, key: bytes | None, partition: int | None
    ) -> None:
        self.sent.append((topic, value, key))

    async def flush(self) -> None:
        pass

    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(failed=0, last_error=None)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_produce_sends_a_key_that_is_not_utf8_as_its_bytes(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--key $'caf\xe9'` (Latin-1, from a shell script) reaches argv as "caf\udce9"
    # (PEP 383): its encoding to UTF-8 raised UnicodeEncodeError, a traceback.
    import kafka_asgi.cluster.client
    import kafka_asgi.producer

    monkeypatch.setattr(kafka_asgi.cluster.client, "KafkaClient", _Client)
    monkeypatch.setattr(kafka_asgi.producer, "Producer", _Producer)
    monkeypatch.setattr(_Producer, "sent", [])
    key = os.fsdecode(b"caf\xe9")
    err = io.StringIO()
    argv = ["-b", "k:9092", "--backend", backend, "produce", "t", "--key", key]
    assert main(argv, stdin=io.StringIO("x\n"), stderr=err) == 0, err.getvalue()
    assert _Producer.sent == [("t", b"x", b"caf\xe9")]
    assert err.getvalue() == "produced 1 record to t\n"


RECORD = ConsumerRecord(
    topic="t",
    partition=2,
    offset=41,
    timestamp=1_700_000_000_000,
    key=b"user-1",
    value=b'{"a": [1, 2], "b": "\xc3\xa9"}',
    headers=(("trace", b"abc"), ("empty", None)),
)


def test_plain_format() -> None:
    assert format_record(RECORD) == '[2:41] user-1: {"a": [1, 2], "b": "\xe9"}'
    no_key = RECORD._replace(key=None, value=b"hello")
    assert format_record(no_key) == "[2:41] hello"
    assert format_record(no_key._replace(value=None)) == "[2:41] (null)"
    assert format_record(no_key._replace(value=b"\xff\x00ok")) == "[2:41] \\xff\x00ok"


def test_json_format_pretty_prints_json_values() -> None:
    text = format_record(RECORD, as_json=True)
    assert "\n" in text and '  "value": {' in text
    assert json.loads(text) == {
        "topic": "t",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_000,
        "key": "user-1",
        "headers": [["trace", "abc"], ["empty", None]],
        "value": {"a": [1, 2], "b": "\xe9"},
    }
    not_json = json.loads(format_record(RECORD._replace(value=b"plain text"), as_json=True))
    assert not_json["value"] == "plain text"
    null = json.loads(format_record(RECORD._replace(key=None, value=None), as_json=True))
    assert (null["key"], null["value"]) == (None, None)
