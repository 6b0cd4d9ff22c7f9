"""The FastAPI app: ``uvicorn bench.apps.fastapi_app:app`` (variant from BENCH_VARIANT)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from kafka_asgi.integrations.fastapi import kafka_lifespan

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

lifespan: Any = None
if VARIANT in ("b", "d"):
    lifespan = kafka_lifespan(**lifespan_options())
elif VARIANT == "c":
    lifespan = naive_lifespan

app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/")
async def hello() -> dict[str, str]:
    return {"message": "Hello, world!"}


app.add_route(STATS_PATH, stats)

if VARIANT in ("b", "d"):
    app.add_middleware(CountedAccessLog, **access_log_options())
elif VARIANT == "c":
    app.middleware("http")(naive_access_log)
