"""Small TCP peers for connection tests: a listener serving a handler, a relay that
delays the real broker's bytes, a peer that never answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import anyio.abc

from tests.support.listeners import host_port


@asynccontextmanager
async def serving(
    handler: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> AsyncIterator[tuple[str, list[int]]]:
    """A listener on 127.0.0.1 running ``handler`` for each connection: its address
    and a one-item list counting the connections it accepted."""
    accepted = [0]

    async def counted(stream: anyio.abc.SocketStream) -> None:
        accepted[0] += 1
        await handler(stream)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, counted)
        yield f"127.0.0.1:{port}", accepted
        tg.cancel_scope.cancel()


Peer = AbstractAsyncContextManager[tuple[str, list[int]]]


def silent_peer() -> Peer:
    """Accepts and never answers (a frozen broker's kernel)."""

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    return serving(hold)


def slow_relay(target: str, delay: float) -> Peer:
    """A relay to ``target`` holding every chunk ``delay`` seconds, each way: a round
    trip costs 2 x ``delay``."""
    host, port = host_port(target)

    async def pipe(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in src:
                await anyio.sleep(delay)
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await dst.aclose()

    async def relay(client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_tcp(host, port) as server:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe, client, server)
                tg.start_soon(pipe, server, client)

    return serving(relay)
