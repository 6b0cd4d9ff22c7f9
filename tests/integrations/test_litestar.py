"""KafkaPlugin for Litestar in process: lifespan, access log, the ``kafka`` dependency."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, post
from litestar.params import FromPath
from litestar.testing import TestClient

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
