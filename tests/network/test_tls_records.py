"""A TLS record that does not decrypt, from an in-process TLS server: a certificate
problem during the connection's handshake, a broken connection once it is open."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSListener, TLSStream

from kafka_asgi.errors import ConnectionClosedError, TLSError
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.protocol.messages import MetadataRequest
from tests.support.brokers import kafka_local
from tests.support.fake_peer import Peer

# An application-data record (TLS 1.2 and 1.3 alike) whose contents are noise: the
# record layer's integrity check fails (bad record MAC).
GARBAGE_RECORD = b"\x17\x03\x03\x00\x40" + os.urandom(64)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local harness's throw-away CA and server certificate (127.0.0.1, localhost)."""
    state = tmp_path_factory.mktemp("tls")
    try:
        kafka_local.make_certs(state)
    except kafka_local.HarnessError as exc:
        pytest.skip(str(exc))
    return state


@pytest.mark.parametrize("after", ["handshake", "request"])
async def test_garbage_tls_record(anyio_backend: str, certs: Path, after: str) -> None:
    """``after="request"``: the record arrives instead of a response on an open
    connection. Retriable: the next connection's records will decrypt (a corrupted
    segment, a middlebox), unlike a certificate the broker refuses. ``"handshake"``:
    instead of the ApiVersions answer, where (TLS 1.3) a refused client certificate
    surfaces as an alert: still a TLS failure of connect."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs / "server.pem", certs / "server.key")
    done = anyio.Event()

    async def handle(stream: TLSStream) -> None:
        async with stream:
            peer = Peer(stream)  # type: ignore[arg-type]
            if after == "request":
                await peer.answer_api_versions()
            await peer.read_request()
            await stream.transport_stream.send(GARBAGE_RECORD)
            await done.wait()

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(SocketAttribute.local_port)
    listener = TLSListener(tcp, server, standard_compatible=False)
    options = {"ssl_cafile": str(certs / "ca.pem"), "request_timeout": 5.0}
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        with anyio.fail_after(10):
            if after == "handshake":
                with pytest.raises(TLSError, match=r"(?i)decrypt|mac"):
                    async with BrokerConnection("127.0.0.1", port, **options):
                        pass
            else:
                async with BrokerConnection("127.0.0.1", port, **options) as conn:
                    version = conn.choose_api_version(MetadataRequest.API_KEY)
                    with pytest.raises(ConnectionClosedError, match=r"(?i)decrypt|mac") as info:
                        await conn.request(MetadataRequest(topics=[]), version)
                    assert info.value.retriable
                    assert conn.closed
        done.set()
        tg.cancel_scope.cancel()
