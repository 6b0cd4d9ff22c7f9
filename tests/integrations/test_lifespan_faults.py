"""Lifespan faults found in review: Litestar's on_shutdown hooks and a generator
function lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from litestar import Litestar
from starlette.applications import Starlette

from kafka_asgi.integrations.starlette import kafka_lifespan
from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.litestar import KafkaPlugin
from kafka_asgi.producer import ProducerNotRegisteredError, get_producer
from tests.support.asgi import LifespanFailed, run_lifespan

pytestmark = pytest.mark.anyio


def send(value: bytes) -> None:
    get_producer("default").send_nowait("t", value)


async def test_litestar_on_shutdown_hooks_still_send(anyio_backend: str) -> None:
    """Litestar runs on_shutdown hooks after leaving its lifespan context managers: the
    producer is flushed and closed after the last hook, not before the first."""
    producer = InMemoryProducer()
    closed_at_hooks: list[bool] = []

    @asynccontextmanager
    async def own(app: Litestar) -> AsyncIterator[None]:
        send(b"own-enter")
        yield
        send(b"own-exit")

    def on_startup() -> None:
        send(b"on_startup")

    def on_shutdown(n: int) -> Any:
        async def hook(app: Litestar) -> None:
            closed_at_hooks.append(producer.closed)
            send(f"on_shutdown-{n}".encode())

        return hook

    app = Litestar(
        [],
        lifespan=[own],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown(1), on_shutdown(2)],
        plugins=[KafkaPlugin(producer_factory=lambda: producer, access_log=None)],
    )
    async with run_lifespan(app):
        assert get_producer("default") is producer
    assert [e.value for e in producer.events] == [
        b"own-enter",
        b"on_startup",
        b"own-exit",
        b"on_shutdown-1",
        b"on_shutdown-2",
    ]
    assert closed_at_hooks == [False, False]
    assert producer.closed and producer.flushes >= 1
    with pytest.raises(ProducerNotRegisteredError):
        get_producer("default")


async def test_litestar_failed_startup_still_closes_the_producer(anyio_backend: str) -> None:
    """The on_shutdown hooks (the plugin's among them) run when startup fails too."""
    producer = InMemoryProducer()

    def on_startup() -> None:
        send(b"before the failure")
        raise RuntimeError("database down")

    app = Litestar(
        [],
        on_startup=[on_startup],
        on_shutdown=[lambda: send(b"on_shutdown")],
        plugins=[KafkaPlugin(producer_factory=lambda: producer, access_log=None)],
    )
    with pytest.raises(LifespanFailed, match="database down"):
        async with run_lifespan(app):
            pass  # pragma: no cover
    assert [e.value for e in producer.events] == [b"before the failure", b"on_shutdown"]
    assert producer.closed
    with pytest.raises(ProducerNotRegisteredError):
        get_producer("default")


@pytest.mark.parametrize("framework", [Starlette, FastAPI])
async def test_generator_function_lifespan(anyio_backend: str, framework: type[Any]) -> None:
    """A generator function lifespan, as Starlette and FastAPI accept one, runs inside
    the producer's: its state is merged, its startup and shutdown code can send."""
    producer = InMemoryProducer()
    stopped: list[bool] = []

    def own(app: Any) -> Iterator[dict[str, Any]]:
        send(b"own-start")
        yield {"db": "connected"}
        send(b"own-stop")
        stopped.append(True)

    app = framework(lifespan=kafka_lifespan(own, producer_factory=lambda: producer))
    async with run_lifespan(app) as state:
        assert state["db"] == "connected"
        assert state["kafka_producer"] is producer
    assert stopped == [True]
    assert [e.value for e in producer.events] == [b"own-start", b"own-stop"]
    assert producer.closed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Task.cancel() is asyncio's
async def test_a_server_cancelling_the_final_flush_still_gets_the_producer_closed(
    anyio_backend: str,
) -> None:
    """A server that gives up waiting for the lifespan cancels its task with
    Task.cancel(), which anyio's shield cannot hold off: the flush ends there. The
    producer is still closed (reporting what it holds), and unregistered with its
    sender; the close was skipped, leaving it open with its records unreported."""
    import asyncio

    from kafka_asgi.integrations import lifespan
    from kafka_asgi.integrations.sender import ThreadSafeSender, get_sender, register_sender
    from kafka_asgi.producer import register_producer

    class Slow(InMemoryProducer):
        closed = False

        async def flush(self, timeout: float | None = None) -> None:
            await asyncio.sleep(30)

        async def __aexit__(self, *exc: object) -> None:
            self.closed = True

    producer = Slow()
    sender = ThreadSafeSender(producer)
    sender.bind()
    register_producer("cancelled", producer)  # type: ignore[arg-type]
    register_sender("cancelled", sender)
    task = asyncio.ensure_future(lifespan._shutdown(producer, "cancelled", 30.0, True, sender))
    await asyncio.sleep(0.05)  # in the flush
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert producer.closed
    assert get_sender("cancelled") is None
    with pytest.raises(ProducerNotRegisteredError):
        get_producer("cancelled")
