"""Network layer without a broker: option validation, TLS context, SASL state machines,
version choice, credential redaction, error translation."""

from __future__ import annotations

import pickle
import ssl
from pathlib import Path

import anyio
import pytest
from scramp import ScramMechanism as ServerMechanism  # type: ignore[import-untyped]

from kafka_asgi.errors import (
    AuthenticationError,
    ConnectError,
    ConnectionClosedError,
    KafkaError,
    NetworkError,
    RequestTimeout,
    TLSError,
    UnsupportedVersionError,
)
from kafka_asgi.network.connection import BrokerConnection, ConnectionConfig
from kafka_asgi.network.errors import (
    CONNECT_ERRORS,
    HANDSHAKE_IO_ERRORS,
    IO_ERRORS,
    map_exceptions,
)
from kafka_asgi.network.sasl import PlainMechanism, SaslCredentials, ScramMechanism
from kafka_asgi.network.tls import build_ssl_context
from kafka_asgi.protocol.messages import FetchRequest, MetadataRequest, ProduceRequest

SECRET = "s3cr3t-Passw0rd"
USER = "alice-the-user"


# ---------------------------------------------------------------- error tree


def test_error_tree() -> None:
    for cls in (ConnectError, ConnectionClosedError, RequestTimeout, TLSError):
        assert issubclass(cls, NetworkError)
        assert issubclass(cls, KafkaError)
    assert issubclass(TLSError, ConnectError)
    assert NetworkError.retriable and ConnectError.retriable and RequestTimeout.retriable
    assert not TLSError.retriable
    assert issubclass(AuthenticationError, KafkaError)
    assert not issubclass(AuthenticationError, NetworkError)
    assert not AuthenticationError.retriable


@pytest.mark.parametrize(
    ("raised", "mapping", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), CONNECT_ERRORS, ConnectError),
        (ssl.SSLCertVerificationError("bad cert"), CONNECT_ERRORS, TLSError),
        # Once open, a broken TLS record is a broken connection, retried elsewhere;
        # in the Kafka handshake right after TLS's, a TLS 1.3 certificate alert.
        (ssl.SSLError("bad record mac"), IO_ERRORS, ConnectionClosedError),
        (ssl.SSLError("alert"), HANDSHAKE_IO_ERRORS, TLSError),
        (anyio.EndOfStream(), HANDSHAKE_IO_ERRORS, ConnectionClosedError),
        (anyio.EndOfStream(), IO_ERRORS, ConnectionClosedError),
        (anyio.BrokenResourceError(), IO_ERRORS, ConnectionClosedError),
        (OSError(104, "reset"), IO_ERRORS, ConnectionClosedError),
    ],
)
def test_map_exceptions(
    raised: Exception, mapping: dict[type[BaseException], type[KafkaError]], expected: type
) -> None:
    with pytest.raises(expected, match=r"^ctx: ") as info:
        with map_exceptions(mapping, "ctx"):
            raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised


def test_map_exceptions_leaves_other_errors() -> None:
    with pytest.raises(KeyError):
        with map_exceptions(IO_ERRORS, "ctx"):
            raise KeyError("x")
    own = RequestTimeout("mine")
    with pytest.raises(RequestTimeout) as info:
        with map_exceptions(IO_ERRORS, "ctx"):
            raise own
    assert info.value is own


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "exc", "name"),
    [
        ({"connect_timeout": 0}, ValueError, "connect_timeout"),
        ({"connect_timeout": -1.0}, ValueError, "connect_timeout"),
        ({"connect_timeout": float("inf")}, ValueError, "connect_timeout"),
        ({"connect_timeout": "5"}, TypeError, "connect_timeout"),
        ({"request_timeout": True}, TypeError, "request_timeout"),
        ({"request_timeout": float("nan")}, ValueError, "request_timeout"),
        ({"client_id": 5}, TypeError, "client_id"),
        ({"client_id": "x" * 40000}, ValueError, "client_id"),
        ({"ssl": "yes"}, TypeError, "ssl"),
        ({"ssl_check_hostname": "no"}, TypeError, "ssl_check_hostname"),
        ({"ssl_cafile": "/nonexistent/ca.pem"}, ValueError, "ssl_cafile"),
        ({"ssl_cafile": 42}, TypeError, "ssl_cafile"),
        ({"ssl_keyfile": "/nonexistent/k.pem"}, ValueError, "ssl_keyfile"),
        ({"ssl": False, "ssl_cafile": "/x"}, ValueError, "ssl_cafile"),
        (
            {"sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
            ValueError,
            "sasl_mechanism",
        ),
        ({"sasl_mechanism": "PLAIN"}, ValueError, "sasl_username"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u"}, ValueError, "sasl_password"),
        ({"sasl_username": "u", "sasl_password": "p"}, ValueError, "sasl_mechanism"),
        (
            {"sasl_mechanism": "PLAIN", "sasl_username": "", "sasl_password": "p"},
            ValueError,
            "sasl_username",
        ),
        (
            {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": 5},
            TypeError,
            "sasl_password",
        ),
        ({"resolver": "dns"}, TypeError, "resolver"),
    ],
)
def test_bad_connection_options(options: dict[str, object], exc: type, name: str) -> None:
    with pytest.raises(exc, match=name):
        ConnectionConfig.from_options(**options)  # type: ignore[arg-type]


def test_unknown_connection_option() -> None:
    with pytest.raises(TypeError, match="bogus"):
        ConnectionConfig.from_options(bogus=1)  # type: ignore[call-arg]


def test_ssl_options_build_a_verifying_context(tmp_path: Path) -> None:
    assert build_ssl_context(None) is None
    assert build_ssl_context(False) is None
    context = build_ssl_context(True)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    loose = build_ssl_context(True, check_hostname=False)
    assert loose is not None and not loose.check_hostname
    assert loose.verify_mode == ssl.CERT_REQUIRED
    own = ssl.create_default_context()
    assert build_ssl_context(own) is own
    with pytest.raises(ValueError, match="ssl_cafile"):
        build_ssl_context(own, cafile=__file__)
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="ssl_cafile"):
        build_ssl_context(None, cafile=str(garbage))
    with pytest.raises(ValueError, match="ssl_certfile"):
        build_ssl_context(None, certfile=str(garbage))


def test_ssl_file_option_implies_tls(kafka_files: dict[str, str]) -> None:
    context = build_ssl_context(None, cafile=kafka_files["ca_file"])
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    config = ConnectionConfig.from_options(ssl_cafile=kafka_files["ca_file"])
    assert config.ssl_context is not None


@pytest.fixture
def kafka_files() -> dict[str, str]:
    """The local harness's CA file, if it exists (made by scripts/kafka_local.py)."""
    ca = Path(__file__).resolve().parents[2] / ".kafka" / "ca.pem"
    if not ca.is_file():
        pytest.skip("no .kafka/ca.pem (the local broker harness makes it)")
    return {"ca_file": str(ca)}


# ---------------------------------------------------------------- credentials never print


def _sasl_config() -> ConnectionConfig:
    return ConnectionConfig.from_options(
        sasl_mechanism="SCRAM-SHA-256", sasl_username=USER, sasl_password=SECRET
    )


def test_credentials_are_redacted() -> None:
    creds = SaslCredentials("scram-sha-512", USER, SECRET)
    assert creds.mechanism == "SCRAM-SHA-512"
    assert creds.username == USER and creds.password == SECRET
    config = _sasl_config()
    conn = BrokerConnection("127.0.0.1", 9092, config)
    texts = [
        repr(creds),
        str(creds),
        repr(config),
        str(config),
        repr(conn),
        repr(creds.new_mechanism()),
        repr(PlainMechanism(USER, SECRET)),
        repr(
            ConnectionConfig.from_options(
                sasl_mechanism="PLAIN", sasl_username=USER, sasl_password=SECRET
            )
        ),
    ]
    for text in texts:
        assert SECRET not in text, text
        assert USER not in text, text
    # Still usable across processes, still equal.
    assert pickle.loads(pickle.dumps(creds)) == creds


def test_bad_sasl_values_are_not_echoed() -> None:
    # A password passed where a mechanism goes must not land in the message.
    with pytest.raises(ValueError) as info:
        ConnectionConfig.from_options(sasl_mechanism=SECRET, sasl_username=USER, sasl_password="x")
    assert "sasl_mechanism" in str(info.value)
    with pytest.raises(TypeError) as info2:
        SaslCredentials("PLAIN", USER, SECRET.encode())  # type: ignore[arg-type]
    assert SECRET not in str(info2.value)


def test_a_password_scram_cannot_send_does_not_leak() -> None:
    # A lone surrogate has no UTF-8 form (Kafka salts the UTF-8 bytes, not SASLprep's).
    bad = "pass\ud800" + SECRET
    with pytest.raises(AuthenticationError) as info:
        ScramMechanism("SCRAM-SHA-256", USER, bad)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ---------------------------------------------------------------- SASL state machines


def test_plain_token() -> None:
    mech = PlainMechanism(USER, SECRET)
    assert not mech.complete
    assert mech.start() == b"\x00" + USER.encode() + b"\x00" + SECRET.encode()
    assert mech.complete
    assert mech.respond(b"") is None


def _scram_server(name: str, password: str) -> object:
    server_mech = ServerMechanism(name)
    salt, stored_key, server_key, iterations = server_mech.make_auth_info(password)
    return server_mech.make_server(lambda _user: (salt, stored_key, server_key, iterations))


@pytest.mark.parametrize("name", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_exchange_against_scramp_server(name: str) -> None:
    server = _scram_server(name, SECRET)
    mech = ScramMechanism(name, USER, SECRET)
    server.set_client_first(mech.start().decode())  # type: ignore[attr-defined]
    final = mech.respond(server.get_server_first().encode())  # type: ignore[attr-defined]
    assert final is not None and not mech.complete
    server.set_client_final(final.decode())  # type: ignore[attr-defined]
    assert mech.respond(server.get_server_final().encode()) is None  # type: ignore[attr-defined]
    assert mech.complete


def test_scram_rejects_a_forged_server_signature() -> None:
    # A server that does not know the password cannot produce the right signature.
    server = _scram_server("SCRAM-SHA-256", "another password")
    mech = ScramMechanism("SCRAM-SHA-256", USER, SECRET)
    server.set_client_first(mech.start().decode())  # type: ignore[attr-defined]
    final = mech.respond(server.get_server_first().encode())  # type: ignore[attr-defined]
    assert final is not None
    forged = "v=" + "A" * 44
    with pytest.raises(AuthenticationError) as info:
        mech.respond(forged.encode())
    assert SECRET not in str(info.value)
    assert not mech.complete


def test_scram_rejects_garbage() -> None:
    mech = ScramMechanism("SCRAM-SHA-512", USER, SECRET)
    mech.start()
    with pytest.raises(AuthenticationError):
        mech.respond(b"\xff\xfe")
    mech2 = ScramMechanism("SCRAM-SHA-512", USER, SECRET)
    mech2.start()
    with pytest.raises(AuthenticationError):
        mech2.respond(b"r=wrong-nonce,s=c2FsdA==,i=4096")


def test_scramp_is_imported_only_when_scram_is_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import kafka_asgi, kafka_asgi.integrations\n"
        "kafka_asgi.Producer(\n"
        "    '127.0.0.1:1', sasl_mechanism='PLAIN', sasl_username='u', sasl_password='p'\n"
        ")\n"
        "print('scramp' in sys.modules)\n"
        "from kafka_asgi.network.sasl import ScramMechanism\n"
        "ScramMechanism('SCRAM-SHA-256', 'u', 'p')\n"
        "print('scramp' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr


# ---------------------------------------------------------------- versions


def _conn_with_versions(versions: dict[int, tuple[int, int]]) -> BrokerConnection:
    conn = BrokerConnection("127.0.0.1", 9092)
    conn.api_versions = versions
    return conn


def test_choose_api_version() -> None:
    conn = _conn_with_versions({3: (0, 99), 1: (4, 11), 0: (3, 5)})
    assert conn.choose_api_version(3) == MetadataRequest.MAX_VERSION
    assert conn.choose_api_version(1) == 11
    assert conn.choose_api_version(1, max=7) == 7
    assert conn.choose_api_version(1, min=11) == 11
    assert conn.choose_api_version(0) == 5


def test_choose_api_version_errors_name_api_and_ranges() -> None:
    conn = _conn_with_versions({1: (4, 11), 0: (7, 9)})
    with pytest.raises(UnsupportedVersionError, match=r"Fetch .*12-12.*4-11"):
        conn.choose_api_version(FetchRequest.API_KEY, min=12, max=12)
    with pytest.raises(UnsupportedVersionError, match=r"Metadata .*does not offer"):
        conn.choose_api_version(MetadataRequest.API_KEY)
    with pytest.raises(UnsupportedVersionError, match=r"Produce .*0-5.*7-9"):
        conn.choose_api_version(ProduceRequest.API_KEY, max=5)
    with pytest.raises(ValueError, match="9999"):
        conn.choose_api_version(9999)


def test_connection_argument_validation() -> None:
    with pytest.raises(ValueError, match="port"):
        BrokerConnection("h", 0)
    with pytest.raises(ValueError, match="port"):
        BrokerConnection("h", "9092")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="host"):
        BrokerConnection("", 9092)
    with pytest.raises(TypeError, match="config"):
        BrokerConnection("h", 1, ConnectionConfig(), client_id="x")


@pytest.mark.anyio
async def test_request_on_unopened_connection_fails_cleanly(anyio_backend: str) -> None:
    conn = BrokerConnection("127.0.0.1", 9092)
    with pytest.raises(ConnectionClosedError, match="not open"):
        await conn.request(MetadataRequest(topics=[]), 1)
    assert conn.in_flight == 0
