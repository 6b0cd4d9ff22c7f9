"""The example shop as a plain Starlette app, for the uvicorn tests (same routes and
environment variables as examples/fastapi_app)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from kafka_asgi.starlette import AccessLogMiddleware, event_logger, kafka_lifespan

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
ACCESS_LOG_TOPIC = os.environ.get("ACCESS_LOG_TOPIC", "access-log")
EVENTS_TOPIC = os.environ.get("EVENTS_TOPIC", "shop-events")
ITEMS = {i: {"id": i, "name": f"item {i}", "price": 100 + i} for i in range(1, 101)}


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def get_item(request: Request) -> JSONResponse:
    item = ITEMS.get(request.path_params["item_id"])
    if item is None:
        return JSONResponse({"detail": "no such item"}, status_code=404)
    return JSONResponse(item)


async def create_order(request: Request) -> JSONResponse:
    order = json.loads(await request.body())
    item = ITEMS.get(order["item_id"])
    if item is None:
        return JSONResponse({"detail": "no such item"}, status_code=404)
    total = item["price"] * order.get("quantity", 1)  # type: ignore[operator]
    kafka = event_logger(request)
    kafka.log(EVENTS_TOPIC, {"event": "order_created", **order, "total": total})
    return JSONResponse({"ok": True, "total": total, "request_id": kafka.request_id}, 201)


async def export(request: Request) -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        yield b"id,name,price\n"
        for item in ITEMS.values():
            yield f"{item['id']},{item['name']},{item['price']}\n".encode()

    return StreamingResponse(rows(), media_type="text/csv")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/items/{item_id:int}", get_item),
        Route("/orders", create_order, methods=["POST"]),
        Route("/export", export),
    ],
    middleware=[
        Middleware(
            AccessLogMiddleware,
            topic=ACCESS_LOG_TOPIC,
            exclude_paths=["/health"],
            extra={"service": "example-shop-starlette"},
        )
    ],
    lifespan=kafka_lifespan(
        bootstrap=BOOTSTRAP,
        producer_options={"flush_time": float(os.environ.get("KAFKA_FLUSH_TIME", "0.5"))},
    ),
)
