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
    LIFESPAN_VARIANTS,
    MIDDLEWARE_VARIANTS,
    STATS_PATH,
    VARIANT,
    CountedAccessLog,
    access_log_options,
    hand_over,
    lifespan_options,
    naive_access_log,
    naive_lifespan,
    stats,
)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


async def hello_handing_over(request: Request) -> PlainTextResponse:
    hand_over()
    return PlainTextResponse("Hello, world!")


routes = [Route("/", hello_handing_over if VARIANT == "p" else hello), Route(STATS_PATH, stats)]
middleware: list[Middleware] = []
lifespan: Any = None
if VARIANT in LIFESPAN_VARIANTS:
    lifespan = kafka_lifespan(**lifespan_options())
if VARIANT in MIDDLEWARE_VARIANTS:
    middleware.append(Middleware(CountedAccessLog, **access_log_options()))
elif VARIANT == "c":
    lifespan = naive_lifespan
    middleware.append(Middleware(BaseHTTPMiddleware, dispatch=naive_access_log))

app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
