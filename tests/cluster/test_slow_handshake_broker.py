"""Connections whose handshake takes longer than the callers' own deadlines, against
the real broker through a relay that delays every chunk: a caller's deadline cuts the
caller short, not the connection it started opening."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest

from kafka_asgi.cluster.client import KafkaClient
from tests.support.brokers import KafkaCluster
from tests.support.listeners import client_options, host_port
from tests.support.timing import scaled

pytestmark = pytest.mark.broker


@asynccontextmanager
async def slow_relay(target: str, delay: float) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP relay to ``target`` holding every chunk ``delay`` seconds, each way: a
    round trip costs 2 x ``delay``. Yields its address and a one-item list counting
    the connections it accepted."""
    host, port = host_port(target)
    accepted = [0]

    async def pipe(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in src:
                await anyio.sleep(delay)
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await dst.aclose()

    async def handle(client: anyio.abc.SocketStream) -> None:
        accepted[0] += 1
        async with client, await anyio.connect_tcp(host, port) as server:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe, client, server)
                tg.start_soon(pipe, server, client)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    relay_port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"127.0.0.1:{relay_port}", accepted
        tg.cancel_scope.cancel()


async def test_callers_with_deadlines_shorter_than_the_handshake_still_connect(
    kafka: KafkaCluster, anyio_backend: str
) -> None:
    """SASL PLAIN through a 0.2 s round trip: ApiVersions, SaslHandshake and
    SaslAuthenticate take 0.6 s; each call has 0.45 s (the user's anyio.move_on_after).
    The first call's deadline leaves the handshake running; a later call finds the
    connection it made. Each call used to cancel the handshake it started, and the next
    one started over: no call ever got through."""
    options = client_options(kafka, "sasl_plaintext", "PLAIN")
    assert kafka.sasl_plaintext is not None
    async with slow_relay(kafka.sasl_plaintext, 0.1) as (address, accepted):
        async with KafkaClient(address, **options) as client:
            attempts = 0
            done = False
            with anyio.fail_after(scaled(15)):
                while not done:
                    attempts += 1
                    with anyio.move_on_after(0.45):
                        await client.refresh([])
                        done = True
            assert attempts <= 4
            assert accepted[0] == 1, "one connection, not one a call"
            assert client.stats().connections_opened == 1
