"""The example apps under real uvicorn processes (2 workers) against a real Kafka broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import KafkaCluster, kafka_local, unique_name
from tests.support.ports import free_base_port
from tests.support.servers import APPS, AppSpec, create_topics, read_topic, stop, uvicorn
from tests.support.traffic import env_for, hammer, timed

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("app", ["fastapi", "starlette", "django", "litestar"])
def test_every_request_is_one_access_event(
    app: str, kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    spec = APPS[app]
    access, events = new_topic(partitions=3), new_topic(partitions=2)
    with uvicorn(spec, env_for(kafka.plaintext, access, events), tmp_path) as server:
        answers = hammer(server.url, 1000)
        got = read_topic(kafka.plaintext, access, expect=1000)
        orders = read_topic(kafka.plaintext, events, expect=100)
    assert all(a.status in (200, 201) for a in answers)
    assert len(got) == 1000, f"{len(got)} access events for 1000 requests"
    by_id = {a.request_id: a for a in answers}
    assert len(by_id) == 1000, "request ids are unique"
    assert {e["request_id"] for e in got} == set(by_id)
    export_route = "export" if app == "django" else "/export"
    for e in got:
        a = by_id[e["request_id"]]
        assert (e["method"], e["path"], e["status"]) == (a.method, a.path, a.status)
        assert e["response_bytes"] == a.size
        assert e["request_bytes"] == a.sent
        if a.path.startswith("/items/"):
            assert e["route"] == spec.item_route
        else:
            assert e["route"] == (spec.orders_route if a.method == "POST" else export_route)
        assert e["type"] == "http" and e["query"] == "" and e["close_code"] is None
        assert e["client"] == "127.0.0.1" and e["user_agent"] == a.user_agent
        assert e["http_version"] == "1.1" and e["duration_ms"] > 0
        assert e["service"].startswith("example-shop")
    # The dependency / request.kafka events carry their request's id and route.
    assert len(orders) == 100
    posts = {a.request_id for a in answers if a.method == "POST"}
    assert {o["request_id"] for o in orders} == posts
    for o in orders:
        assert o["route"] == spec.orders_route and o["event"] == "order_created"
        assert o["__headers__"]["request_id"] == o["request_id"].encode()


@pytest.mark.parametrize("app", ["fastapi", "django"])
def test_sigterm_flushes_buffered_events(
    app: str, kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """With a 60 s flush_time (and fewer events per worker than a batch holds) nothing
    is sent before the signal: only the shutdown flush can deliver these events."""
    spec = APPS[app]
    access, events = new_topic(), new_topic()
    env = env_for(kafka.plaintext, access, events, KAFKA_FLUSH_TIME="60")
    with uvicorn(spec, env, tmp_path) as server:
        answers = hammer(server.url, 150, clients=4)
        assert read_topic(kafka.plaintext, access, expect=1, timeout=1, settle=0) == []
        assert stop(server) == 0, server.log_text()
    got = read_topic(kafka.plaintext, access, expect=150, timeout=30)
    assert sorted(e["request_id"] for e in got) == sorted(a.request_id for a in answers)
    orders = read_topic(kafka.plaintext, events, expect=15, timeout=10)
    assert sorted(o["request_id"] for o in orders) == sorted(
        a.request_id for a in answers if a.method == "POST"
    )


def test_kafka_outage_changes_no_response_and_shipping_resumes(tmp_path: Path) -> None:
    """Our own broker (never the shared one), stopped and started under the apps."""
    port = free_base_port()
    broker = kafka_local.LocalKafka(state_dir=tmp_path / "s", base_port=port)
    bootstrap = f"127.0.0.1:{port}"
    specs: list[AppSpec] = [APPS["fastapi"], APPS["django"]]
    try:
        broker.start(timeout=120)
        topics = {s.name: (unique_name("acc"), unique_name("ev")) for s in specs}
        create_topics(bootstrap, *[t for pair in topics.values() for t in pair])
        with (
            uvicorn(specs[0], env_for(bootstrap, *topics["fastapi"]), tmp_path) as fast,
            uvicorn(specs[1], env_for(bootstrap, *topics["django"]), tmp_path) as dj,
        ):
            servers = {"fastapi": fast, "django": dj}
            up: dict[str, Any] = {}
            for name, server in servers.items():
                timed(server.url, 50)  # warm up
                up[name] = timed(server.url, 300)
            broker.stop()
            down: dict[str, Any] = {}
            for name, server in servers.items():
                timed(server.url, 50)
                down[name] = timed(server.url, 300)
            broker.start(timeout=120, fresh=False)
            after = {name: hammer(server.url, 40, clients=2) for name, server in servers.items()}
            for name in servers:
                access = topics[name][0]
                wanted = {a.request_id for a in after[name]}
                got = read_topic(
                    bootstrap,
                    access,
                    expect=10**9,
                    timeout=60,
                    settle=0,
                    until=lambda events, w=wanted: w <= {e["request_id"] for e in events},  # type: ignore[misc]
                )
                ids = {e["request_id"] for e in got}
                missing = [a.request_id for a in after[name] if a.request_id not in ids]
                assert not missing, f"{name}: {len(missing)} events after recovery not shipped"
        for name in servers:
            up_statuses, up_median = up[name]
            down_statuses, down_median = down[name]
            assert down_statuses == up_statuses == [200] * 300
            # Within 10% of the latency with Kafka up, plus 2 ms for scheduling noise
            # on a shared machine; and never slow in absolute terms.
            assert down_median <= up_median * 1.10 + 0.002, (name, up_median, down_median)
            assert down_median < 0.1
    finally:
        broker.stop(remove_data=True)
