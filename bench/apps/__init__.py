"""Minimal apps for the middleware benchmark, one variant per server process.

The variant comes from the environment (set by bench/middleware.py):

``BENCH_VARIANT``
    ``a`` no access log; ``b`` kafka_asgi's AccessLogMiddleware; ``c`` the
    middleware most people write today: ``@app.middleware("http")`` awaiting
    ``aiokafka``'s ``send_and_wait()`` once per request; ``d`` kafka_asgi's
    middleware with Kafka stopped (``BENCH_BOOTSTRAP`` names a port where nothing
    listens).
Three more split (b)'s cost apart (bench/server_instructions.py): ``e`` (b) without
echoing the request id (``echo_request_id=False``); ``n`` the middleware with a no-op
producer and no lifespan (the middleware alone); ``p`` no middleware, the route handing
one prebuilt event of the default event's size to the lifespan's producer (the
producer alone: hand-off, batches, requests).
``BENCH_BOOTSTRAP``, ``BENCH_TOPIC``
    Where the events go.

``GET /`` is the measured route.  ``GET /_bench/stats`` (never logged) reports
what the logging side did, so the benchmark can check that every request was
really logged (and acknowledged) rather than trust it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kafka_asgi.integrations.asgi import AccessLogMiddleware

VARIANT = os.environ.get("BENCH_VARIANT", "a")
BOOTSTRAP = os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ.get("BENCH_TOPIC", "bench-access-log")
STATS_PATH = "/_bench/stats"

if VARIANT not in ("a", "b", "c", "d", "e", "n", "p"):
    raise SystemExit(f"BENCH_VARIANT must be one of a, b, c, d, e, n, p, not {VARIANT!r}")
#: Variants whose app has kafka_asgi's lifespan (its producer), and its middleware.
LIFESPAN_VARIANTS = ("b", "d", "e", "p")
MIDDLEWARE_VARIANTS = ("b", "d", "e", "n")


class CountedAccessLog(AccessLogMiddleware):
    """kafka_asgi's middleware, remembered so the stats route can read its counters."""

    instances: list[CountedAccessLog] = []

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        CountedAccessLog.instances.append(self)


class NullProducer:
    """Variant (n)'s producer: counts the events and sends nothing."""

    count = 0

    def send_nowait(self, topic: str, value: Any, *args: Any, **kwargs: Any) -> None:
        self.count += 1


NULL_PRODUCER = NullProducer()


def access_log_options() -> dict[str, Any]:
    options: dict[str, Any] = {"topic": TOPIC, "exclude_paths": [STATS_PATH]}
    if VARIANT == "e":
        options["echo_request_id"] = False
    elif VARIANT == "n":
        options["producer"] = NULL_PRODUCER
    return options


# Variant (p): the default event of ``GET /`` from the load of bench/server_instructions.py,
# as the middleware writes it (the same length), handed over by the route itself.
EVENT = (
    b'{"timestamp":1764820000000,"type":"http","method":"GET","scheme":"http","path":"/",'
    b'"route":"/","query":"","status":200,"response_bytes":13,"request_bytes":0,'
    b'"duration_ms":0.071,"client":"127.0.0.1","user_agent":"bench/1",'
    b'"request_id":"6c1f0b9a7d2e4f5a000000000000002a","http_version":"1.1",'
    b'"trace_id":null,"span_id":null}'
)
_handed: list[Any] = []


def hand_over() -> None:
    """Variant (p): one event to the lifespan's producer, as the middleware would."""
    if not _handed:
        import kafka_asgi

        _handed.append(kafka_asgi.get_producer())
    _handed[0].send_nowait(TOPIC, EVENT)


def lifespan_options() -> dict[str, Any]:
    # (d): "buffer" is the default; a short startup check keeps server start quick.
    return {"bootstrap": BOOTSTRAP, "on_unreachable": "buffer", "startup_timeout": 2.0}


# ------------------------------------------------------------------ variant (c)

naive_state: dict[str, Any] = {"producer": None, "sent": 0, "failed": 0}


@asynccontextmanager
async def naive_lifespan(app: Any) -> AsyncIterator[None]:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks=1)
    await producer.start()
    naive_state["producer"] = producer
    try:
        yield
    finally:
        await producer.stop()


async def naive_access_log(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """What a web search for "FastAPI Kafka access log middleware" turns up."""
    if request.url.path == STATS_PATH:
        return await call_next(request)
    start = time.perf_counter()
    response = await call_next(request)
    event = {
        "timestamp": int(time.time() * 1000),
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
        "client": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
    }
    try:
        await naive_state["producer"].send_and_wait(TOPIC, json.dumps(event).encode())
        naive_state["sent"] += 1
    except Exception:
        naive_state["failed"] += 1
    return response


# ------------------------------------------------------------------ stats


async def stats(request: Request) -> JSONResponse:
    out: dict[str, Any] = {"variant": VARIANT, "pid": os.getpid()}
    if VARIANT == "n":
        mw = CountedAccessLog.instances[-1] if CountedAccessLog.instances else None
        out["middleware"] = mw.stats() if mw is not None else None
        out["null_producer"] = {"count": NULL_PRODUCER.count}
    elif VARIANT in LIFESPAN_VARIANTS:
        import kafka_asgi

        mw = CountedAccessLog.instances[-1] if CountedAccessLog.instances else None
        out["middleware"] = mw.stats() if mw is not None else None
        s = kafka_asgi.get_producer().stats()
        out["producer"] = {
            k: getattr(s, k)
            for k in ("enqueued", "delivered", "failed", "buffered", "in_flight")
            if hasattr(s, k)
        }
    elif VARIANT == "c":
        out["naive"] = {"sent": naive_state["sent"], "failed": naive_state["failed"]}
    return JSONResponse(out)
