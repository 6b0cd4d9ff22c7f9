"""The Flask app: ``gunicorn bench.apps.flask_app:app`` (variant from BENCH_VARIANT).

(a) bare Flask; (b) kafka_asgi's KafkaExtension (the WSGI access-log middleware and its
background producer); (c) what a Flask app does today: an ``after_request`` hook
calling kafka-python's blocking ``send(...).get()`` once per request; (d) (b) with
Kafka stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flask import Flask, Response, jsonify, request

from kafka_asgi.flask import KafkaExtension

from . import BOOTSTRAP, STATS_PATH, TOPIC, VARIANT

app = Flask(__name__)
ext: KafkaExtension | None = None
naive: dict[str, Any] = {"producer": None, "pid": None, "sent": 0, "failed": 0}


@app.get("/")
def hello() -> str:
    return "Hello, world!"


if VARIANT in ("b", "d"):
    app.config.update(
        KAFKA_ASGI_BOOTSTRAP=BOOTSTRAP,
        KAFKA_ASGI_STARTUP_TIMEOUT=2.0,
        KAFKA_ASGI_ACCESS_LOG={"topic": TOPIC, "exclude_paths": [STATS_PATH]},
    )
    ext = KafkaExtension(app)
elif VARIANT == "c":

    @app.after_request
    def naive_access_log(response: Response) -> Response:
        if request.path == STATS_PATH:
            return response
        if naive["pid"] != os.getpid():  # made in the worker, after the fork
            from kafka import KafkaProducer  # type: ignore[import-untyped]

            naive["producer"] = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks=1)
            naive["pid"] = os.getpid()
        event = {
            "timestamp": int(time.time() * 1000),
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "client": request.remote_addr,
            "user_agent": request.headers.get("user-agent"),
        }
        try:
            naive["producer"].send(TOPIC, json.dumps(event).encode()).get(timeout=10)
            naive["sent"] += 1
        except Exception:
            naive["failed"] += 1
        return response


@app.get(STATS_PATH)
def stats() -> Response:
    out: dict[str, Any] = {"variant": VARIANT, "pid": os.getpid()}
    if ext is not None and ext.middleware is not None:
        out["middleware"] = ext.middleware.stats()
        sender = ext.background.sender
        s = sender.producer.stats() if sender is not None else None
        out["producer"] = {
            k: getattr(s, k, 0)
            for k in ("enqueued", "delivered", "failed", "buffered", "in_flight")
        }
    elif VARIANT == "c":
        out["naive"] = {"sent": naive["sent"], "failed": naive["failed"]}
    return jsonify(out)
