"""The Flask (and Django) examples under real gunicorn processes (2 workers, sync and
gthread) against a real Kafka broker: every request one event, g.kafka events with their
request's id, SIGTERM flushes, a Kafka outage changes no response."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import KafkaCluster, kafka_local, unique_name
from tests.support.ports import free_base_port
from tests.support.servers import APPS, AppSpec, create_topics, gunicorn, read_topic, stop
from tests.support.traffic import env_for, hammer, timed

pytestmark = pytest.mark.broker

SPEC = APPS["flask"]


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_every_request_is_one_access_event(
    worker_class: str, kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    access, events = new_topic(partitions=3), new_topic(partitions=2)
    env = env_for(kafka.plaintext, access, events)
    with gunicorn(SPEC, env, tmp_path, worker_class=worker_class) as server:
        answers = hammer(server.url, 1000)
        got = read_topic(kafka.plaintext, access, expect=1000)
        orders = read_topic(kafka.plaintext, events, expect=100)
        log = server.log_text()
    assert all(a.status in (200, 201) for a in answers)
    assert len(got) == 1000, f"{len(got)} access events for 1000 requests"
    by_id = {a.request_id: a for a in answers}
    assert len(by_id) == 1000, "request ids are unique"
    assert {e["request_id"] for e in got} == set(by_id)
    pids = set()
    for e in got:
        a = by_id[e["request_id"]]
        assert (e["method"], e["path"], e["status"]) == (a.method, a.path, a.status)
        assert e["response_bytes"] == a.size
        assert e["request_bytes"] == a.sent
        if a.path.startswith("/items/"):
            assert e["route"] == SPEC.item_route
        else:
            assert e["route"] == ("/orders" if a.method == "POST" else "/export")
        assert e["type"] == "http" and e["query"] == "" and e["close_code"] is None
        assert e["client"] == "127.0.0.1" and e["user_agent"] == a.user_agent
        assert e["http_version"] == "1.1" and e["duration_ms"] > 0
        assert e["service"] == "example-shop-flask" and e["scheme"] == "http"
        pids.add(e["request_id"][:16])  # the per-process prefix of the request id
    assert len(pids) == 2, "both workers served (and each made its own request ids)"
    # g.kafka events carry their request's id and the URL rule.
    assert len(orders) == 100
    posts = {a.request_id for a in answers if a.method == "POST"}
    assert {o["request_id"] for o in orders} == posts
    for o in orders:
        assert o["route"] == "/orders" and o["event"] == "order_created"
        assert o["__headers__"]["request_id"] == o["request_id"].encode()
    assert "Traceback" not in log, log


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_sigterm_to_the_master_flushes(
    worker_class: str, kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """A 60 s flush_time: nothing goes out before the signal, only the exit flush
    (atexit in each worker, no gunicorn hook) can deliver these events."""
    access, events = new_topic(), new_topic()
    env = env_for(kafka.plaintext, access, events, KAFKA_FLUSH_TIME="60")
    with gunicorn(SPEC, env, tmp_path, worker_class=worker_class) as server:
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
    """Our own broker (never the shared one), stopped and started under the app."""
    port = free_base_port()
    broker = kafka_local.LocalKafka(state_dir=tmp_path / "s", base_port=port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        broker.start(timeout=120)
        access, events = unique_name("acc"), unique_name("ev")
        create_topics(bootstrap, access, events)
        servers: dict[str, Any] = {}
        up: dict[str, Any] = {}
        down: dict[str, Any] = {}
        after: dict[str, Any] = {}
        with (
            gunicorn(SPEC, env_for(bootstrap, access, events), tmp_path) as sync_server,
            gunicorn(
                SPEC, env_for(bootstrap, access, events), tmp_path, worker_class="gthread"
            ) as gthread_server,
        ):
            servers = {"sync": sync_server, "gthread": gthread_server}
            for name, server in servers.items():
                timed(server.url, 50)  # warm up (and start each worker's producer)
                up[name] = timed(server.url, 300)
            broker.stop()
            for name, server in servers.items():
                timed(server.url, 50)
                down[name] = timed(server.url, 300)
            broker.start(timeout=120, fresh=False)
            for name, server in servers.items():
                after[name] = hammer(server.url, 40, clients=2)
            wanted = {a.request_id for answers in after.values() for a in answers}
            got = read_topic(
                bootstrap,
                access,
                expect=10**9,
                timeout=90,
                settle=0,
                until=lambda events: wanted <= {e["request_id"] for e in events},
            )
            ids = {e["request_id"] for e in got}
            missing = [r for r in wanted if r not in ids]
            assert not missing, f"{len(missing)} events after recovery not shipped"
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


def test_django_example_under_gunicorn(
    kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """The Django example's WSGI steps (its README): 2 gunicorn workers, every request
    one event, and the streaming view served without Django's sync/async warning."""
    spec = AppSpec("django-wsgi", APPS["django"].app_dir, "shopsite.wsgi:application", "", "orders")
    access, events = new_topic(partitions=2), new_topic()
    with gunicorn(spec, env_for(kafka.plaintext, access, events), tmp_path) as server:
        answers = hammer(server.url, 200, clients=4)
        got = read_topic(kafka.plaintext, access, expect=200)
        log = server.log_text()
    assert all(a.status in (200, 201) for a in answers)
    assert sorted(e["request_id"] for e in got) == sorted(a.request_id for a in answers)
    exports = [e for e in got if e["path"] == "/export"]
    assert exports and all(e["response_bytes"] > 1000 for e in exports)
    assert "StreamingHttpResponse" not in log and "Warning" not in log, log
