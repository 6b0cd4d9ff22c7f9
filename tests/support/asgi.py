"""Drive an ASGI app's lifespan from a test, as a server would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio


class LifespanFailed(Exception):
    pass


@asynccontextmanager
async def run_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Startup on entry (yields the lifespan state), shutdown on exit.

    Yields the state; the messages the app sent are in ``state["__messages__"]``.
    """
    state: dict[str, Any] = {}
    sent: list[dict[str, Any]] = []
    to_app_w, to_app_r = anyio.create_memory_object_stream[dict[str, Any]](4)
    from_app_w, from_app_r = anyio.create_memory_object_stream[dict[str, Any]](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def run_app() -> None:
        # A server logs what a lifespan raises after it reported failure; so do we.
        try:
            await app(scope, to_app_r.receive, send)
        except Exception as exc:
            sent.append({"type": "raised", "exc": exc})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        await from_app_w.send(message)

    async with (
        to_app_w,
        to_app_r,
        from_app_w,
        from_app_r,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(run_app)
        await to_app_w.send({"type": "lifespan.startup"})
        with anyio.fail_after(10):
            reply = await from_app_r.receive()
        if reply["type"] != "lifespan.startup.complete":
            failure = reply.get("message", reply["type"])
        else:
            failure = None
            yield state
            await to_app_w.send({"type": "lifespan.shutdown"})
            with anyio.fail_after(20):
                reply = await from_app_r.receive()
            if reply["type"] != "lifespan.shutdown.complete":
                failure = reply.get("message", reply["type"])
    if failure is not None:
        raise LifespanFailed(failure)


async def websocket_session(
    app: Any,
    path: str,
    incoming: list[dict[str, Any]],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> list[dict[str, Any]]:
    """Run one WebSocket session: the client's messages in order, then a disconnect.

    Returns what the app sent.
    """
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("10.0.0.9", 4321),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    script = [{"type": "websocket.connect"}, *incoming]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        if script:
            return script.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(10):
        await app(scope, receive, send)
    return sent
