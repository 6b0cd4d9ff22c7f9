"""The request's logger asked for a cluster (Starlette's ``event_logger``, FastAPI's
``event_logger_for``, ``get_event_logger``): that cluster's producer, with the
request's id, route and trace, whichever cluster the access log runs on."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from litestar import Litestar, post
from litestar.params import FromPath
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from kafka_asgi.fastapi import EventLogger, KafkaLogger, event_logger_for
from kafka_asgi.integrations.asgi import AccessLogMiddleware
from kafka_asgi.integrations.event_logger import get_event_logger
from kafka_asgi.integrations.testing import capture_events
from kafka_asgi.litestar import KafkaLogger as LitestarLogger
from kafka_asgi.litestar import KafkaPlugin, event_logger_provider
from kafka_asgi.starlette import event_logger

pytestmark = pytest.mark.anyio

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _clusters_app(middleware_cluster: str | None, asked: str) -> tuple[Any, dict[str, Any]]:
    """A Starlette app whose endpoint logs through ``event_logger(request, asked)``,
    behind an access log on ``middleware_cluster`` (None: none)."""
    seen: dict[str, Any] = {}

    async def audit(request: Request) -> PlainTextResponse:
        seen["own"] = event_logger(request)
        seen["asked"] = event_logger(request, cluster=asked)
        seen["again"] = event_logger(request, asked)
        seen["asked"].log("audit-events", {"who": request.path_params["who"]})
        return PlainTextResponse("ok")

    middleware = (
        []
        if middleware_cluster is None
        else [Middleware(AccessLogMiddleware, topic="access-log", cluster=middleware_cluster)]
    )
    return Starlette(routes=[Route("/audit/{who}", audit)], middleware=middleware), seen


@pytest.mark.parametrize(
    ("middleware_cluster", "asked"),
    [("default", "audit"), ("audit", "default"), (None, "audit")],
)
async def test_a_logger_asked_for_a_cluster_sends_to_that_clusters_producer(
    anyio_backend: str, middleware_cluster: str | None, asked: str
) -> None:
    app, seen = _clusters_app(middleware_cluster, asked)
    with capture_events("default") as default, capture_events("audit") as audit:
        captured = {"default": default, "audit": audit}
        async with client(app) as c:
            r = await c.get("/audit/alice", headers={"traceparent": TRACEPARENT})
    own_cluster = middleware_cluster or "default"
    assert seen["own"].cluster == own_cluster
    assert seen["asked"].cluster == asked and seen["again"] is seen["asked"]
    # Before, the request's own logger was given whatever cluster was asked for: the
    # audit event went to the other cluster's Kafka.
    (event,) = captured[asked].events_for("audit-events")
    others = [e.topic for name, p in captured.items() if name != asked for e in p.events]
    assert others == ([] if middleware_cluster is None else ["access-log"])
    # The same request id, route and trace as the request's own logger's events.
    request_id = seen["own"].request_id
    if middleware_cluster is not None:
        assert request_id == r.headers["x-request-id"]
    assert event.json() == {"request_id": request_id, "route": "/audit/{who}", "who": "alice"}
    assert event.header("route") == b"/audit/{who}"
    assert event.header("traceparent") == TRACEPARENT


async def test_asking_for_the_other_cluster_first_keeps_the_requests_own_logger(
    anyio_backend: str,
) -> None:
    """No access log: the first call makes the request's own logger, for the cluster it
    asks for; a later call for another cluster does not get that one."""
    scope: dict[str, Any] = {"type": "http", "headers": [], "state": {}}
    audit = get_event_logger(scope, "audit")
    assert scope["state"]["kafka"] is audit and get_event_logger(scope) is audit
    default = get_event_logger(scope, "default")
    assert default.cluster == "default" and default.request_id == audit.request_id
    assert get_event_logger(scope, "default") is default


async def test_fastapi_event_logger_for_a_cluster(anyio_backend: str) -> None:
    app = FastAPI()
    app.add_middleware(AccessLogMiddleware, topic="access-log")

    @app.get("/pay")
    async def pay(
        kafka: KafkaLogger,
        audit: Annotated[EventLogger, Depends(event_logger_for("audit"))],
    ) -> str:
        kafka.log("payments", {"n": 1})
        audit.log("audit-events", {"n": 1})
        return "ok"

    with capture_events("default") as default, capture_events("audit") as audit:
        async with client(app) as c:
            r = await c.get("/pay")
    assert r.status_code == 200, r.text
    assert sorted(e.topic for e in default.events) == ["access-log", "payments"]
    (event,) = audit.json_values("audit-events")
    assert event == {"request_id": r.headers["x-request-id"], "route": "/pay", "n": 1}


@post("/refunds/{n:int}", dependencies={"audit": event_logger_provider("audit")})
async def refund(n: FromPath[int], kafka: LitestarLogger, audit: LitestarLogger) -> str:
    kafka.log("refunds", {"n": n})
    audit.log("audit-events", {"n": n})
    return "ok"


async def test_litestar_event_logger_provider_for_a_cluster(anyio_backend: str) -> None:
    app = Litestar(
        [refund], plugins=[KafkaPlugin(bootstrap="127.0.0.1:1", access_log={"topic": "acc"})]
    )
    with capture_events("default") as default, capture_events("audit") as audit:
        async with client(app) as c:  # no lifespan: the captures take the events
            r = await c.post("/refunds/3")
    assert r.status_code == 201, r.text
    assert sorted(e.topic for e in default.events) == ["acc", "refunds"]
    (event,) = audit.json_values("audit-events")
    assert event == {"request_id": r.headers["x-request-id"], "route": "/refunds/{n}", "n": 3}


class _Scope(dict[str, Any]):
    """A dict that a weak reference can point at."""


async def test_a_logger_for_another_cluster_lets_the_scope_go_and_keeps_the_route(
    anyio_backend: str,
) -> None:
    """The access log's logger lets go of the scope at the end; the other cluster's
    logger, kept in the scope's state, must not hold it either (a cycle left to the
    cyclic collector), and still knows the route for late events."""
    import gc
    import weakref

    loggers: list[EventLogger] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = "/things/{id}"
        loggers.append(get_event_logger(scope, "audit"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        pass

    scope = _Scope(type="http", method="GET", path="/things/1", query_string=b"", headers=[])
    ref = weakref.ref(scope)
    with capture_events("default"), capture_events("audit") as audit:
        gc.disable()
        try:
            await AccessLogMiddleware(app)(scope, None, send)
            del scope
            assert ref() is None
        finally:
            gc.enable()
        (logger,) = loggers
        assert logger.log("late", {"n": 1}) is True
    assert audit.json_values("late") == [
        {"request_id": logger.request_id, "route": "/things/{id}", "n": 1}
    ]
