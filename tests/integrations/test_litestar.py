"""KafkaPlugin for Litestar in process: lifespan, access log, the ``kafka`` dependency."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, post
from litestar.params import FromPath
from litestar.testing import TestClient

from kafka_asgi.integrations.asgi import AccessLogMiddleware
from kafka_asgi.integrations.sender import get_sender
from kafka_asgi.integrations.testing import capture_events
from kafka_asgi.litestar import KafkaLogger, KafkaPlugin


@post("/orders/{order_id:int}")
async def create_order(order_id: FromPath[int], kafka: KafkaLogger) -> dict[str, Any]:
    kafka.log("orders", {"order_id": order_id})
    return {"request_id": kafka.request_id}


def test_plugin_lifespan_access_log_and_dependency() -> None:
    app = Litestar(
        [create_order],
        plugins=[KafkaPlugin(bootstrap="127.0.0.1:1", access_log={"topic": "acc"})],
    )
    with capture_events() as kafka, TestClient(app) as client:
        assert get_sender() is not None  # the plugin's lifespan runs
        r = client.post("/orders/5", headers={"x-request-id": "lit-5"})
    assert get_sender() is None
    assert r.status_code == 201 and r.json() == {"request_id": "lit-5"}
    assert r.headers["x-request-id"] == "lit-5"
    (order,) = kafka.json_values("orders")
    (access,) = kafka.json_values("acc")
    assert order["order_id"] == 5 and order["request_id"] == access["request_id"] == "lit-5"
    assert order["route"] == access["route"] == "/orders/{order_id}"
    assert access["status"] == 201 and access["method"] == "POST"


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"bootstrap": "x", "on_unreachable": "never"}, ValueError, "on_unreachable"),
        ({"bootstrap": "x", "bootstrap_servers": "x"}, TypeError, "bootstrap_servers"),
        ({"bootstrap": "x", "access_log": {"colour": 1}}, TypeError, "colour"),
        ({"bootstrap": "x", "access_log": "yes"}, TypeError, "access_log"),
        ({"bootstrap": "x", "dependency": "not a name"}, ValueError, "dependency"),
    ],
)
def test_bad_options_fail_at_construction(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        KafkaPlugin(**kwargs)


def test_plugin_access_log_misses_404_and_405_and_the_wrapped_app_does_not() -> None:
    # Litestar runs app-level middleware per route, after routing: requests no route
    # takes (404) or takes with another method (405) never reach it. Wrapping the app
    # logs every response (README, Litestar).
    with capture_events() as kafka:
        inner = Litestar(
            [create_order],
            plugins=[KafkaPlugin(bootstrap="127.0.0.1:1", access_log={"topic": "acc"})],
        )
        with TestClient(inner) as client:
            statuses = [client.get("/nope").status_code, client.get("/orders/5").status_code]
        assert statuses == [404, 405]
        assert kafka.json_values("acc") == []

        plain = Litestar(
            [create_order], plugins=[KafkaPlugin(bootstrap="127.0.0.1:1", access_log=None)]
        )
        wrapped = AccessLogMiddleware(plain, topic="acc")
        with TestClient(wrapped) as client:  # type: ignore[arg-type]
            r = client.post("/orders/5")
            statuses = [r.status_code, client.get("/nope").status_code]
            statuses.append(client.get("/orders/5").status_code)
        events = kafka.json_values("acc")
    assert statuses == [201, 404, 405]
    assert [(e["status"], e["path"]) for e in events] == [
        (201, "/orders/5"),
        (404, "/nope"),
        (405, "/orders/5"),
    ]
    assert events[0]["route"] == "/orders/{order_id}"
    assert r.headers["x-request-id"] == events[0]["request_id"]
