"""The example shop as a Litestar app with KafkaPlugin, for the uvicorn tests (same routes
and environment variables as examples/fastapi_app)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from kafka_asgi.litestar import KafkaLogger, KafkaPlugin

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
ACCESS_LOG_TOPIC = os.environ.get("ACCESS_LOG_TOPIC", "access-log")
EVENTS_TOPIC = os.environ.get("EVENTS_TOPIC", "shop-events")
ITEMS = {i: {"id": i, "name": f"item {i}", "price": 100 + i} for i in range(1, 101)}


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/items/{item_id:int}")
async def get_item(item_id: FromPath[int]) -> dict[str, Any]:
    if item_id not in ITEMS:
        raise NotFoundException("no such item")
    return ITEMS[item_id]


@post("/orders")
async def create_order(data: dict[str, Any], kafka: KafkaLogger) -> dict[str, Any]:
    item = ITEMS.get(data["item_id"])
    if item is None:
        raise NotFoundException("no such item")
    total = item["price"] * data.get("quantity", 1)
    kafka.log(EVENTS_TOPIC, {"event": "order_created", **data, "total": total})
    return {"ok": True, "total": total, "request_id": kafka.request_id}


@get("/export")
async def export() -> Stream:
    async def rows() -> AsyncIterator[bytes]:
        yield b"id,name,price\n"
        for item in ITEMS.values():
            yield f"{item['id']},{item['name']},{item['price']}\n".encode()

    return Stream(rows(), media_type="text/csv")


app = Litestar(
    [health, get_item, create_order, export],
    plugins=[
        KafkaPlugin(
            bootstrap=BOOTSTRAP,
            producer_options={"flush_time": float(os.environ.get("KAFKA_FLUSH_TIME", "0.5"))},
            access_log={
                "topic": ACCESS_LOG_TOPIC,
                "exclude_paths": ["/health"],
                "extra": {"service": "example-shop-litestar"},
            },
        )
    ],
)
