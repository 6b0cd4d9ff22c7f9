"""The FastAPI app: ``uvicorn bench.apps.fastapi_app:app`` (variant from BENCH_VARIANT)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from kafka_asgi.integrations.fastapi import kafka_lifespan

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

lifespan: Any = None
if VARIANT in LIFESPAN_VARIANTS:
    lifespan = kafka_lifespan(**lifespan_options())
elif VARIANT == "c":
    lifespan = naive_lifespan

app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


if VARIANT == "p":

    @app.get("/")
    async def hello_handing_over() -> dict[str, str]:
        hand_over()
        return {"message": "Hello, world!"}

else:

    @app.get("/")
    async def hello() -> dict[str, str]:
        return {"message": "Hello, world!"}


app.add_route(STATS_PATH, stats)

if VARIANT in MIDDLEWARE_VARIANTS:
    app.add_middleware(CountedAccessLog, **access_log_options())
elif VARIANT == "c":
    app.middleware("http")(naive_access_log)
