"""The WSGI middleware's and the Flask extension's test helpers: a buffered test client,
a fresh cluster name per app, a plain WSGI app, and a Flask app that logs through
``g.kafka``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from flask import Flask, g
from werkzeug.test import Client as WerkzeugClient

_clusters = itertools.count()


class Client(WerkzeugClient):
    """Buffered responses: the response iterable is read and closed, as a server does."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def cluster_name() -> str:
    return f"wsgi-test-{next(_clusters)}"


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read() if environ.get("REQUEST_METHOD") == "POST" else b""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", body]


def make_flask(cluster: str, **config: Any) -> Flask:
    app = Flask("t")
    app.config.update(KAFKA_ASGI_CLUSTER=cluster, **config)

    @app.post("/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, Any]:
        g.kafka.log("orders", {"order_id": order_id})
        return {"request_id": g.kafka.request_id}

    return app
