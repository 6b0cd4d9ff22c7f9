"""A small shop API that ships an access-log event per request, and order events, to Kafka.

Run it (the broker first: ``python scripts/kafka_local.py start``)::

    cd examples/fastapi_app
    KAFKA_CREATE_TOPICS=1 uvicorn app:app --workers 2 --port 8000

Configuration comes from the environment (defaults in brackets): KAFKA_BOOTSTRAP_SERVERS
[127.0.0.1:9092], ACCESS_LOG_TOPIC [access-log], EVENTS_TOPIC [shop-events],
KAFKA_FLUSH_TIME [0.5 s], KAFKA_CREATE_TOPICS [unset: topics must exist; set: the
lifespan creates missing ones], KAFKA_ON_UNREACHABLE [buffer].

``GET /metrics`` serves the producer's and the access log's Prometheus metrics (with
the ``prometheus`` extra installed). With several workers, point
``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before starting the server so any
worker's answer covers them all.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from kafka_asgi import get_producer
from kafka_asgi.fastapi import AccessLogMiddleware, KafkaLogger, kafka_lifespan

try:
    from kafka_asgi.integrations import prometheus
except ImportError:  # pip install 'kafka-asgi[prometheus]' for /metrics
    prometheus = None  # type: ignore[assignment]

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
ACCESS_LOG_TOPIC = os.environ.get("ACCESS_LOG_TOPIC", "access-log")
EVENTS_TOPIC = os.environ.get("EVENTS_TOPIC", "shop-events")


async def metrics_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs in each worker once its producer is up: its metrics feed /metrics."""
    if prometheus is not None:
        prometheus.register(get_producer())
    yield


app = FastAPI(
    title="kafka-asgi example shop",
    lifespan=kafka_lifespan(
        metrics_lifespan,
        bootstrap=BOOTSTRAP,
        producer_options={"flush_time": float(os.environ.get("KAFKA_FLUSH_TIME", "0.5"))},
        create_topics=(
            [ACCESS_LOG_TOPIC, EVENTS_TOPIC] if os.environ.get("KAFKA_CREATE_TOPICS") else []
        ),
        on_unreachable=os.environ.get("KAFKA_ON_UNREACHABLE", "buffer"),  # type: ignore[arg-type]
    ),
)
app.add_middleware(
    AccessLogMiddleware,
    topic=ACCESS_LOG_TOPIC,
    exclude_paths=["/health", "/metrics"],
    extra={"service": "example-shop"},
)

ITEMS = {i: {"id": i, "name": f"item {i}", "price": 100 + i} for i in range(1, 101)}


class Order(BaseModel):
    item_id: int
    quantity: int = 1


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, object]:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return ITEMS[item_id]


@app.post("/orders", status_code=201)
async def create_order(order: Order, kafka: KafkaLogger) -> dict[str, object]:
    """The dependency's logger stamps the request id and route on the event."""
    if order.item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    total = ITEMS[order.item_id]["price"] * order.quantity  # type: ignore[operator]
    kafka.log(EVENTS_TOPIC, {"event": "order_created", **order.model_dump(), "total": total})
    return {"ok": True, "total": total, "request_id": kafka.request_id}


@app.get("/export")
async def export() -> StreamingResponse:
    """A streaming response: the access event comes after its last chunk."""

    async def rows() -> AsyncIterator[bytes]:
        yield b"id,name,price\n"
        for item in ITEMS.values():
            yield f"{item['id']},{item['name']},{item['price']}\n".encode()
            if item["id"] % 25 == 0:  # type: ignore[operator]
                await asyncio.sleep(0)

    return StreamingResponse(rows(), media_type="text/csv")


if prometheus is not None:
    app.add_route("/metrics", prometheus.metrics_app(), include_in_schema=False)
