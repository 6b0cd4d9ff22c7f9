"""The Starlette app: ``uvicorn bench.apps.starlette_app:app`` (variant from BENCH_VARIANT)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from kafka_asgi.integrations.starlette import kafka_lifespan

from . import (
    STATS_PATH,
    VARIANT,
    CountedAccessLog,
    access_log_options,
    lifespan_options,
    naive_access_log,
    naive_lifespan,
    stats,
)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


routes = [Route("/", hello), Route(STATS_PATH, stats)]
middleware: list[Middleware] = []
lifespan: Any = None
if VARIANT in ("b", "d"):
    lifespan = kafka_lifespan(**lifespan_options())
    middleware.append(Middleware(CountedAccessLog, **access_log_options()))
elif VARIANT == "c":
    lifespan = naive_lifespan
    middleware.append(Middleware(BaseHTTPMiddleware, dispatch=naive_access_log))

app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
