"""The example shop as a Flask app under gunicorn: an access-log event per request, and
order events through ``g.kafka``, shipped to Kafka by a background producer per worker.

Run it (the broker first: ``python scripts/kafka_local.py start``)::

    cd examples/flask_app
    KAFKA_CREATE_TOPICS=1 gunicorn app:app -c gunicorn.conf.py

Configuration comes from the environment (defaults in brackets): KAFKA_BOOTSTRAP_SERVERS
[127.0.0.1:9092], ACCESS_LOG_TOPIC [access-log], EVENTS_TOPIC [shop-events],
KAFKA_FLUSH_TIME [0.5 s], KAFKA_CREATE_TOPICS [unset: topics must exist; set: each
worker's producer creates missing ones].
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from flask import Flask, Response, abort, g, request

from kafka_asgi.flask import KafkaExtension

ACCESS_LOG_TOPIC = os.environ.get("ACCESS_LOG_TOPIC", "access-log")
EVENTS_TOPIC = os.environ.get("EVENTS_TOPIC", "shop-events")

app = Flask(__name__)
app.config.update(
    KAFKA_ASGI_BOOTSTRAP=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    KAFKA_ASGI_PRODUCER_OPTIONS={"flush_time": float(os.environ.get("KAFKA_FLUSH_TIME", "0.5"))},
    KAFKA_ASGI_CREATE_TOPICS=(
        [ACCESS_LOG_TOPIC, EVENTS_TOPIC] if os.environ.get("KAFKA_CREATE_TOPICS") else []
    ),
    KAFKA_ASGI_ACCESS_LOG={
        "topic": ACCESS_LOG_TOPIC,
        "exclude_paths": ["/health"],
        "extra": {"service": "example-shop-flask"},
    },
)
kafka = KafkaExtension(app)

ITEMS = {i: {"id": i, "name": f"item {i}", "price": 100 + i} for i in range(1, 101)}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/<int:item_id>")
def get_item(item_id: int) -> dict[str, object]:
    if item_id not in ITEMS:
        abort(404)
    return ITEMS[item_id]


@app.post("/orders")
def create_order() -> tuple[dict[str, object], int]:
    """g.kafka stamps the request id and the URL rule on the event."""
    order = request.get_json(force=True)
    item = ITEMS.get(order.get("item_id"))
    if item is None:
        abort(404)
    total = item["price"] * order.get("quantity", 1)  # type: ignore[operator]
    g.kafka.log(EVENTS_TOPIC, {"event": "order_created", **order, "total": total})
    return {"ok": True, "total": total, "request_id": g.kafka.request_id}, 201


@app.get("/export")
def export() -> Response:
    """A streaming response: the access event comes when gunicorn closes it."""

    def rows() -> Iterator[bytes]:
        yield b"id,name,price\n"
        for item in ITEMS.values():
            yield f"{item['id']},{item['name']},{item['price']}\n".encode()

    return Response(rows(), mimetype="text/csv")
