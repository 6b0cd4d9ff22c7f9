"""The in-memory producer and capture_events: the helpers apps use in their own tests."""

from __future__ import annotations

import math
import threading

import anyio
import httpx
import pytest
from fastapi import FastAPI

from kafka_asgi.fastapi import AccessLogMiddleware, KafkaLogger, kafka_lifespan
from kafka_asgi.integrations.testing import (
    CapturedEvent,
    InMemoryProducer,
    capture_events,
    override_for,
)
from kafka_asgi.producer import (
    BufferFullError,
    ProducerAlreadyRegisteredError,
    ProducerClosedError,
    RecordTooLargeError,
    get_producer,
    register_producer,
    unregister_producer,
)

pytestmark = pytest.mark.anyio


async def test_captures_every_send_method(anyio_backend: str) -> None:
    async with InMemoryProducer() as p:
        p.send_nowait("a", b"1", key="k", headers={"h": "v"}, partition=2, timestamp=5)
        md = await p.send("a", "2")
        md2 = await p.send("a", "3")
        await p.send_buffered("b", None, headers=[("x", None), ("x", b"y")])
    assert p.closed and p.started
    assert p.events[0] == CapturedEvent("a", b"1", b"k", (("h", b"v"),), 2, 5)
    assert [e.value for e in p.events_for("a")] == [b"1", b"2", b"3"]
    assert (md.topic, md.partition, md.offset) == ("a", 0, 0)
    assert md2.offset == 1
    assert p.events[3].value is None
    assert p.events[3].header("x") == b"y"
    with pytest.raises(KeyError):
        p.events[3].header("nope")
    stats = p.stats()
    assert stats.enqueued == stats.delivered == 4
    assert p.flushes == 1


async def test_json_values_and_clear(anyio_backend: str) -> None:
    p = InMemoryProducer()
    p.send_nowait("t", b'{"a": 1}')
    p.send_nowait("t", '{"a": 2}')
    p.send_nowait("other", b"[]")
    assert p.json_values("t") == [{"a": 1}, {"a": 2}]
    p.clear()
    assert p.events == []
    with pytest.raises(ValueError, match="null value"):
        CapturedEvent("t", None).json()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"topic": ""}, ValueError, "topic"),
        ({"topic": 3}, TypeError, "topic"),  # as the real Producer (test_validation.py)
        ({"value": 12}, TypeError, "value must be bytes"),
        ({"key": 1.5}, TypeError, "key must be bytes"),
        ({"headers": "h"}, TypeError, "headers must be"),
        ({"headers": [("a",)]}, TypeError, "pair"),
        ({"headers": {1: b"x"}}, TypeError, "header name"),
        ({"headers": {"a": 1}}, TypeError, "header 'a' value"),
        ({"partition": -1}, ValueError, "partition"),
        ({"partition": True}, TypeError, "partition"),
        ({"timestamp": "now"}, TypeError, "timestamp"),
    ],
)
def test_bad_input_is_named(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    p = InMemoryProducer()
    args: dict[str, object] = {"topic": "t", "value": b"v", **kwargs}
    with pytest.raises(exc, match=match):
        p.send_nowait(**args)  # type: ignore[arg-type]
    assert p.events == []


def test_buffer_full_and_max_buffering() -> None:
    p = InMemoryProducer(max_buffering=2)
    p.send_nowait("t", b"1")
    p.send_nowait("t", b"2")
    with pytest.raises(BufferFullError, match="full"):
        p.send_nowait("t", b"3")
    q = InMemoryProducer()
    q.buffer_full = True
    with pytest.raises(BufferFullError):
        q.send_nowait("t", b"1")
    assert q.rejected == 1 and q.stats().failed == 0
    with pytest.raises(ValueError, match="max_buffering"):
        InMemoryProducer(max_buffering=0)


async def test_closed_producer_refuses(anyio_backend: str) -> None:
    # ProducerClosedError, as the Producer (a KafkaError: it was a RuntimeError, which
    # an app catching KafkaError handled in production and not in its tests).
    p = InMemoryProducer()
    with pytest.raises(ValueError, match="timeout"):
        await p.aclose(timeout=-1)
    await p.aclose(timeout=1.0)  # as the Producer takes it (a caller's own deadline)
    with pytest.raises(ProducerClosedError, match="closed"):
        p.send_nowait("t", b"x")
    with pytest.raises(ProducerClosedError, match="closed"):
        await p.start()
    with pytest.raises(ValueError, match="timeout"):
        await p.flush(timeout=-1)


async def test_check_reachable(anyio_backend: str) -> None:
    await InMemoryProducer().check_reachable()
    with pytest.raises(Exception, match="unreachable"):
        await InMemoryProducer(reachable=False).check_reachable()


def test_thread_safe_capture() -> None:
    p = InMemoryProducer()

    def worker(n: int) -> None:
        for i in range(500):
            p.send_nowait("t", f"{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.value for e in p.events) == sorted(
        f"{n}-{i}".encode() for n in range(4) for i in range(500)
    )


async def test_wait_for(anyio_backend: str) -> None:
    p = InMemoryProducer()

    def later() -> None:
        p.send_nowait("t", b"x")

    timer = threading.Timer(0.05, later)
    timer.start()
    await p.wait_for(1, topic="t", timeout=5)
    with pytest.raises(TimeoutError, match=r"1 of 2 events on any topic after 0\.05s"):
        await p.wait_for(2, timeout=0.05)
    with pytest.raises(TimeoutError, match="1 of 2"):
        p.wait_for_sync(2, topic="t", timeout=0.05)
    # NaN never times out: refused, as flush's (wait_for_sync waited forever before).
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds"):
        p.wait_for_sync(2, timeout=math.nan)
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds"):
        await p.wait_for(2, timeout=math.nan)
    await anyio.to_thread.run_sync(timer.join)


def test_a_record_larger_than_max_request_size_is_refused_as_the_producer_does() -> None:
    # The fake took any size: a handler logging a 2 MiB payload passed its tests and
    # failed in production (RecordTooLargeError, a ValueError the EventLogger raises).
    p = InMemoryProducer()
    with pytest.raises(RecordTooLargeError, match="max_request_size=1048576"):
        p.send_nowait("t", b"x" * (2 << 20))
    with pytest.raises(RecordTooLargeError):
        p.send_nowait("t", b"x", headers={"h": b"y" * (1 << 20)})
    p.send_nowait("t", b"x" * 1_000_000)
    with pytest.raises(RecordTooLargeError):  # "t" known now: the quick check too
        p.send_nowait("t", b"x" * (2 << 20))
    with pytest.raises(ValueError, match="topic"):
        p.send_nowait("a/b", b"x")
    roomy = InMemoryProducer(max_request_size=4 << 20)
    roomy.send_nowait("t", b"x" * (2 << 20))
    assert [len(e.value or b"") for e in p.events + roomy.events] == [1_000_000, 2 << 20]
    with pytest.raises(ValueError, match="max_request_size"):
        InMemoryProducer(max_request_size=10)


async def test_the_metrics_integrations_take_the_in_memory_producer(anyio_backend: str) -> None:
    # The README's setup calls prometheus.register(get_producer()) in the lifespan:
    # under capture_events the fake had no add_hooks and the app failed to start.
    from prometheus_client import CollectorRegistry

    from kafka_asgi.integrations import prometheus

    p = InMemoryProducer()
    metrics = prometheus.register(p, registry=CollectorRegistry())
    assert len(p.hooks) == 1
    metrics.sync()
    metrics.remove_producer(p)
    assert p.hooks == []
    with pytest.raises(TypeError, match="ProducerHooks"):
        p.add_hooks(object())  # type: ignore[arg-type]


def test_capture_events_clears_its_override_when_the_name_is_taken() -> None:
    # register_producer raised (another producer holds the name) after the override was
    # set, outside the try: every later capture_events said "already active", and
    # every lifespan started after used the stale fake.
    holder = InMemoryProducer()
    register_producer("cap-taken", holder)
    try:
        with pytest.raises(ProducerAlreadyRegisteredError):
            with capture_events("cap-taken"):
                pass
        assert override_for("cap-taken") is None
    finally:
        unregister_producer("cap-taken", holder)
    with capture_events("cap-taken") as p:
        assert get_producer("cap-taken") is p


def test_capture_events_registers_and_restores() -> None:
    with pytest.raises(LookupError):
        get_producer("cap-test")
    with capture_events("cap-test") as p:
        assert get_producer("cap-test") is p
        assert override_for("cap-test") is p
        with pytest.raises(RuntimeError, match="already active"):
            with capture_events("cap-test"):
                pass
    assert override_for("cap-test") is None
    with pytest.raises(LookupError):
        get_producer("cap-test")


def test_kafka_events_fixture(kafka_events: InMemoryProducer) -> None:
    """The pytest plugin's fixture (entry point pytest11) captures the default cluster."""
    assert get_producer("default") is kafka_events
    get_producer("default").send_nowait("t", b"x")
    assert kafka_events.events == [CapturedEvent("t", b"x")]


def test_kafka_events_for_fixture(kafka_events_for) -> None:  # type: ignore[no-untyped-def]
    p = kafka_events_for("analytics")
    assert get_producer("analytics") is p


async def test_capture_events_needs_no_lifespan(anyio_backend: str) -> None:
    """The README's promise: a test client that never runs the app's lifespan (httpx's
    ASGITransport) still captures the access log and the request logger's events."""
    app = FastAPI(lifespan=kafka_lifespan(bootstrap="127.0.0.1:1"))
    app.add_middleware(AccessLogMiddleware, topic="access")

    @app.post("/orders")
    def create(kafka: KafkaLogger) -> dict[str, str]:  # sync: runs in a worker thread
        kafka.log("orders", {"item_id": 1})
        return {"request_id": kafka.request_id}

    with capture_events() as kafka:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/orders")
        await kafka.wait_for(2)
    assert response.status_code == 200
    (order,) = kafka.json_values("orders")
    (access,) = kafka.json_values("access")
    assert order["item_id"] == 1 and order["route"] == "/orders"
    assert order["request_id"] == access["request_id"] == response.json()["request_id"]
    assert access["status"] == 200
