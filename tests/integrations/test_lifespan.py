"""KafkaLifespan (pure ASGI) and kafka_lifespan (Starlette/FastAPI), with in-memory producers."""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette

from kafka_asgi.integrations.asgi import (
    KafkaLifespan,
    KafkaUnreachableError,
    LifespanOptions,
    TopicCreationError,
    producer_lifespan,
)
from kafka_asgi.integrations.starlette import kafka_lifespan
from kafka_asgi.integrations.testing import InMemoryProducer, capture_events
from kafka_asgi.integrations.threads import get_sender
from kafka_asgi.producer import Producer, ProducerClosedError, ProducerStats, get_producer
from kafka_asgi.protocol.errors import (
    ClusterAuthorizationFailedError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)
from tests.support.asgi import LifespanFailed, run_lifespan
from tests.support.timing import scaled

pytestmark = pytest.mark.anyio


async def no_lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    # What Django's ASGIHandler does with a lifespan scope.
    raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")


async def test_wrapper_runs_producer_for_app_without_lifespan(anyio_backend: str) -> None:
    made: list[InMemoryProducer] = []

    def factory() -> InMemoryProducer:
        made.append(InMemoryProducer())
        return made[-1]

    app = KafkaLifespan(no_lifespan_app, cluster="c-nolife", producer_factory=factory)
    async with run_lifespan(app) as state:
        (producer,) = made
        assert producer.started and not producer.closed
        assert get_producer("c-nolife") is producer
        assert state["kafka_producers"] == {"c-nolife": producer}
        assert "kafka_producer" not in state  # only the "default" cluster gets the short key
        assert get_sender("c-nolife") is not None
    assert producer.closed and producer.flushes >= 1
    with pytest.raises(LookupError):
        get_producer("c-nolife")
    assert get_sender("c-nolife") is None


async def test_wrapper_composes_with_app_lifespan(anyio_backend: str) -> None:
    """The app's startup already has the producer; its shutdown still can send."""
    order: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        producer = get_producer("default")
        producer.send_nowait("app", b"started")
        order.append("app-start")
        yield {"db": "connected"}
        producer.send_nowait("app", b"stopping")
        order.append("app-stop")

    inner = Starlette(lifespan=app_lifespan)
    producer = InMemoryProducer()
    app = KafkaLifespan(inner, producer_factory=lambda: producer)
    async with run_lifespan(app) as state:
        assert state["kafka_producer"] is producer
        assert state["db"] == "connected"
        assert order == ["app-start"]
    assert order == ["app-start", "app-stop"]
    assert [e.value for e in producer.events] == [b"started", b"stopping"]
    assert producer.closed


async def test_wrapper_reports_app_startup_failure(anyio_backend: str) -> None:
    @asynccontextmanager
    async def broken(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("database down")
        yield  # pragma: no cover

    producer = InMemoryProducer()
    app = KafkaLifespan(Starlette(lifespan=broken), producer_factory=lambda: producer)
    with pytest.raises(LifespanFailed, match="database down"):
        async with run_lifespan(app):
            pass  # pragma: no cover
    assert producer.closed
    with pytest.raises(LookupError):
        get_producer("default")


async def test_unreachable_fail_mode(anyio_backend: str) -> None:
    producer = InMemoryProducer(reachable=False)
    app = KafkaLifespan(no_lifespan_app, producer_factory=lambda: producer, on_unreachable="fail")
    with pytest.raises(LifespanFailed, match="unreachable at startup"):
        async with run_lifespan(app):
            pass  # pragma: no cover
    assert producer.closed
    with pytest.raises(KafkaUnreachableError):
        async with producer_lifespan(
            producer_factory=lambda: InMemoryProducer(reachable=False), on_unreachable="fail"
        ):
            pass  # pragma: no cover


async def test_unreachable_buffer_mode_warns_once(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    producer = InMemoryProducer(reachable=False)
    app = KafkaLifespan(no_lifespan_app, producer_factory=lambda: producer)
    with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
        async with run_lifespan(app):
            producer.send_nowait("t", b"buffered")
    warnings = [r for r in caplog.records if "unreachable at startup" in r.getMessage()]
    assert len(warnings) == 1
    assert "buffering" in warnings[0].getMessage()
    assert [e.value for e in producer.events] == [b"buffered"]


class StuckProducer(InMemoryProducer):
    """Reports events still buffered after the final flush, as with Kafka down."""

    def stats(self) -> ProducerStats:
        return ProducerStats(
            enqueued=7,
            delivered=4,
            failed=0,
            retried=0,
            buffered=3,
            in_flight=0,
            bytes_sent=0,
            batches_sent=0,
            last_error=None,
        )


async def test_shutdown_reports_what_is_left(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    producer = StuckProducer()
    with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
        async with producer_lifespan(producer_factory=lambda: producer, shutdown_timeout=0.5):
            pass
    (warning,) = [r for r in caplog.records if "still unsent" in r.getMessage()]
    assert "3 event(s)" in warning.getMessage()
    assert producer.closed


class RefusingClient:
    """A client above the network: Kafka answers, but refuses CreateTopics for the
    topics in ``refusals`` (topic -> error), and knows ``existing`` already."""

    def __init__(self, refusals: dict[str, Exception], existing: tuple[str, ...] = ()) -> None:
        self.refusals = refusals
        self.existing = existing
        self.asked: list[tuple[str, int]] = []
        self.closed = False

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True

    async def refresh(self, topics: list[str] | None = None) -> None:
        pass

    # The timeout parameter is the client's signature.
    async def create_topics(self, specs: list[tuple[str, int]], timeout: float) -> None:  # noqa: ASYNC109
        ((name, partitions),) = specs
        self.asked.append((name, partitions))
        if name in self.existing:
            raise TopicAlreadyExistsError(f"Topic '{name}' already exists.")
        if name in self.refusals:
            raise self.refusals[name]


def with_client(
    monkeypatch: pytest.MonkeyPatch, client: RefusingClient, producer: InMemoryProducer
) -> None:
    from kafka_asgi.integrations import lifespan

    monkeypatch.setattr(lifespan, "_make_producer", lambda bootstrap, options: (client, producer))


async def test_create_topics_refused_under_buffer_warns_and_starts(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka answers but refuses CreateTopics (the app's principal may not create
    topics; a controller timeout): startup failed, in every worker, although records
    could go to the topics that exist. Now one warning per error, naming the topics."""
    denied = ClusterAuthorizationFailedError("Cluster authorization failed.")
    client = RefusingClient(
        {
            "orders": denied,
            "audit": denied,
            "slow": RequestTimedOutError("Timed out waiting for the controller."),
        },
        existing=("old",),
    )
    producer = InMemoryProducer()
    with_client(monkeypatch, client, producer)
    topics = ["orders", ("audit", 3), "old", "new", "slow"]
    app = KafkaLifespan(no_lifespan_app, bootstrap="k:9092", create_topics=topics)
    with caplog.at_level(logging.INFO, logger="kafka_asgi"):
        async with run_lifespan(app) as state:
            assert state["kafka_producer"] is producer
            producer.send_nowait("orders", b"sent anyway")
    assert client.asked == [("orders", 1), ("audit", 3), ("old", 1), ("new", 1), ("slow", 1)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "topic(s) 'orders', 'audit' not created" in warnings[0]
    assert "CLUSTER_AUTHORIZATION_FAILED" in warnings[0]
    assert "on_unreachable='buffer'" in warnings[0]
    assert "topic(s) 'slow' not created" in warnings[1]
    assert "Timed out waiting for the controller." in warnings[1]
    assert any("created topic 'new'" in r.getMessage() for r in caplog.records)
    assert [e.value for e in producer.events] == [b"sent anyway"]
    assert producer.closed and client.closed


async def test_create_topics_refused_under_fail_names_the_step_and_topic(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = TopicAuthorizationFailedError("Topic authorization failed.")
    client = RefusingClient({"audit": denied}, existing=("orders",))
    producer = InMemoryProducer()
    with_client(monkeypatch, client, producer)
    with pytest.raises(TopicCreationError) as info:
        async with producer_lifespan(
            bootstrap="k:9092", create_topics=["orders", "audit", "later"], on_unreachable="fail"
        ):
            pass  # pragma: no cover
    message = str(info.value)
    assert message.startswith("create_topics at startup for cluster 'default': topic 'audit'")
    assert "TOPIC_AUTHORIZATION_FAILED" in message and "on_unreachable='fail'" in message
    assert info.value.__cause__ is denied
    assert client.asked == [("orders", 1), ("audit", 1)]
    assert producer.closed and client.closed
    # Through the ASGI wrapper: the server is told why.
    app = KafkaLifespan(
        no_lifespan_app, bootstrap="k:9092", create_topics=["audit"], on_unreachable="fail"
    )
    with_client(monkeypatch, RefusingClient({"audit": denied}), InMemoryProducer())
    with pytest.raises(LifespanFailed, match=r"create_topics at startup .* topic 'audit'"):
        async with run_lifespan(app):
            pass  # pragma: no cover


class TimingOutClient(RefusingClient):
    """Every CreateTopics takes its whole timeout, then fails (a controller timing out)."""

    def __init__(self) -> None:
        super().__init__({})
        self.timeouts: list[float] = []

    async def create_topics(self, specs: list[tuple[str, int]], timeout: float) -> None:  # noqa: ASYNC109
        self.asked.append(specs[0])
        self.timeouts.append(timeout)
        await anyio.sleep(timeout)
        raise RequestTimedOutError("Timed out waiting for the controller.")


async def test_create_topics_at_startup_share_one_deadline(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A controller timing out on each topic: the startup spent the whole limit once
    per topic (three topics, three times); now once for all, the topics left when it
    has run out named in the warning."""
    from kafka_asgi.integrations.lifespan import _create_topics

    client = TimingOutClient()
    limit = 0.3
    with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
        with anyio.fail_after(scaled(5)):
            await _create_topics(client, ["a", "b", "c"], limit, "default", "buffer")
    assert sum(client.timeouts) <= limit + 0.05, client.timeouts
    assert client.asked[0] == ("a", 1)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "topic(s) 'a' not created" in text
    assert "'b', 'c' not created" in text and "ran out" in text
    with pytest.raises(TopicCreationError, match="topic 'a'"):
        await _create_topics(TimingOutClient(), ["a", "b"], limit, "default", "fail")


def dead_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


@pytest.mark.parametrize("made_by", ["producer_factory", "bootstrap"])
async def test_the_whole_shutdown_is_bounded_by_shutdown_timeout(
    anyio_backend: str, made_by: str
) -> None:
    """Kafka down at shutdown: the final flush took shutdown_timeout, then the
    producer's close its own close_timeout on top (10 s for a Producer from
    producer_factory, 2 s for one from bootstrap): a server killing the worker at a
    graceful timeout just above shutdown_timeout lost the records unreported."""
    errors: list[BaseException] = []
    options: dict[str, Any] = {"on_delivery": lambda error, *rest: errors.append(error)}
    bootstrap = dead_port()
    if made_by == "producer_factory":
        made: dict[str, Any] = {"producer_factory": lambda: Producer(bootstrap, **options)}
    else:
        made = {"bootstrap": bootstrap, "producer_options": options}
    with anyio.fail_after(30):
        async with producer_lifespan(**made, startup_timeout=0.5, shutdown_timeout=0.5) as p:
            for _ in range(5):
                p.send_nowait("t", b"x")
            started = time.monotonic()
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + scaled(0.5)
    # Reported, as the close reports what it cannot deliver.
    assert len(errors) == 5
    assert all(isinstance(e, ProducerClosedError) for e in errors)


async def test_starlette_lifespan_helper_composes(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}

    async def own(app: Any) -> AsyncIterator[dict[str, Any]]:  # an async generator, too
        seen["producer_at_startup"] = get_producer("default")
        yield {"cache": 1}
        seen["stopped"] = True

    producer = InMemoryProducer()
    app = Starlette(lifespan=kafka_lifespan(own, producer_factory=lambda: producer))
    async with run_lifespan(app) as state:
        assert state["kafka_producer"] is producer
        assert state["kafka_producers"] == {"default": producer}
        assert state["cache"] == 1
    assert seen == {"producer_at_startup": producer, "stopped": True}
    assert producer.closed


async def test_capture_events_overrides_the_lifespans(anyio_backend: str) -> None:
    with capture_events() as captured:
        app = Starlette(lifespan=kafka_lifespan(bootstrap="127.0.0.1:1"))
        async with run_lifespan(app) as state:
            assert state["kafka_producer"] is captured
            get_producer().send_nowait("t", b"x")
        # Not ours to close: the test still reads it.
        assert not captured.closed
    assert [e.value for e in captured.events] == [b"x"]


@pytest.mark.parametrize(
    ("options", "exc", "match"),
    [
        ({"on_unreachable": "retry"}, ValueError, "on_unreachable"),
        ({"startup_timeout": -1}, ValueError, "startup_timeout"),
        ({"shutdown_timeout": "10"}, ValueError, "shutdown_timeout"),
        # Both bound a wait: NaN and infinity are refused too.
        ({"startup_timeout": math.nan}, ValueError, "startup_timeout.*nan"),
        ({"shutdown_timeout": math.inf}, ValueError, "shutdown_timeout.*inf"),
        ({"cluster": ""}, ValueError, "cluster"),
        ({"create_topics": "logs"}, TypeError, "create_topics"),
        ({"create_topics": [("logs", 0)]}, ValueError, "create_topics"),
        ({"bootstrap_servers": "x"}, TypeError, "bootstrap_servers"),
        # The producer's own options and the addresses, before the server starts it.
        ({"bootstrap": "kafka:99999"}, ValueError, "port must be 1..65535"),
        ({"bootstrap": "k:9092", "producer_options": {"batch_num": 0}}, ValueError, "batch_num"),
        ({"bootstrap": "k:9092", "producer_options": {"bogus": 1}}, TypeError, "bogus"),
        ({"bootstrap": "k:9092", "producer_options": {"client": 1}}, TypeError, "client"),
        (
            {"bootstrap": "k:9092", "producer_options": {"request_timeout": 0}},
            ValueError,
            "request_timeout",
        ),
        # The client's options too: SASL, TLS files, timeouts, the client id.
        (
            {"bootstrap": "k:9092", "producer_options": {"sasl_mechanism": "PLAIN"}},
            ValueError,
            "sasl_username and sasl_password",
        ),
        (
            {
                "bootstrap": "k:9092",
                "producer_options": {
                    "sasl_mechanism": "GSSAPI",
                    "sasl_username": "u",
                    "sasl_password": "p",
                },
            },
            ValueError,
            "'GSSAPI' is not supported",
        ),
        # TLS options' types and combinations (the files are read at startup).
        ({"bootstrap": "k:9092", "producer_options": {"ssl_cafile": 5}}, TypeError, "ssl_cafile"),
        (
            {"bootstrap": "k:9092", "producer_options": {"ssl": False, "ssl_cafile": "ca.pem"}},
            ValueError,
            "ssl=False contradicts ssl_cafile",
        ),
        (
            {"bootstrap": "k:9092", "producer_options": {"ssl_keyfile": "key.pem"}},
            ValueError,
            "ssl_keyfile needs ssl_certfile",
        ),
        ({"bootstrap": "k:9092", "producer_options": {"ssl": "yes"}}, TypeError, "ssl must be"),
        (
            {"bootstrap": "k:9092", "producer_options": {"connect_timeout": math.nan}},
            ValueError,
            "connect_timeout.*nan",
        ),
        (
            {"bootstrap": "k:9092", "producer_options": {"metadata_max_age": -1}},
            ValueError,
            "metadata_max_age",
        ),
        ({"bootstrap": "k:9092", "producer_options": {"client_id": 5}}, TypeError, "client_id"),
        (
            {
                "bootstrap": "k:9092",
                "producer_options": {"sasl_oauth_token_provider": {"provider": "nope"}},
            },
            ValueError,
            "'provider' must be one of",
        ),
    ],
)
def test_bad_options_fail_at_construction(
    options: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        KafkaLifespan(no_lifespan_app, **options)
    with pytest.raises(exc, match=match):
        kafka_lifespan(**options)


def test_lifespan_options_repr_masks_credentials() -> None:
    # A repr ends up in logs and error messages: it printed the SASL password, and an
    # OAuth provider's settings with their client secret.
    oidc = {
        "provider": "oidc",
        "token_url": "https://idp.example/token",
        "client_id": "app",
        "client_secret": "0auth-S3cret",
    }
    options = [
        {"sasl_mechanism": "PLAIN", "sasl_username": "svc-user", "sasl_password": "S3cr3t"},
        {
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth_token_provider": oidc,
            "sasl_oauth_extensions": {"logicalCluster": "ext-value"},
        },
    ]
    for producer_options in options:
        lifespan = LifespanOptions(bootstrap="k:9092", producer_options=producer_options)
        for text in (repr(lifespan), str(lifespan)):
            assert text.startswith("LifespanOptions(cluster='default', bootstrap='k:9092',")
            for secret in ("svc-user", "S3cr3t", "0auth-S3cret", "ext-value"):
                assert secret not in text
        assert f"'sasl_mechanism': {producer_options['sasl_mechanism']!r}" in repr(lifespan)
    assert "'sasl_password': '***'" in repr(LifespanOptions(producer_options=options[0]))
    with pytest.raises(TypeError) as info:
        LifespanOptions(producer_options=[("sasl_password", "S3cr3t")])  # type: ignore[arg-type]
    assert "S3cr3t" not in str(info.value)


async def test_tls_files_are_read_at_startup_not_at_construction(
    anyio_backend: str, tmp_path: Path
) -> None:
    # An app module imported where the files are absent (a build step) still loads...
    options = {"ssl_cafile": str(tmp_path / "ca.pem")}
    KafkaLifespan(no_lifespan_app, bootstrap="k:9092", producer_options=options)
    kafka_lifespan(bootstrap="k:9092", producer_options=options)
    # ...and the server's startup says which file is missing.
    with pytest.raises(ValueError, match=r"ssl_cafile='.*ca\.pem': no such file"):
        async with producer_lifespan(bootstrap="k:9092", producer_options=options):
            pass  # pragma: no cover


async def test_lifespan_without_bootstrap_or_factory(anyio_backend: str) -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        async with producer_lifespan():
            pass  # pragma: no cover


async def test_other_scopes_pass_through(anyio_backend: str) -> None:
    calls: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    app = KafkaLifespan(inner, producer_factory=InMemoryProducer)
    await app({"type": "http"}, None, None)
    assert calls == ["http"]


async def test_nested_starlette_lifespans_keep_both_clusters(anyio_backend: str) -> None:
    """An app's own lifespan that is itself a kafka_lifespan for another cluster: the
    state's kafka_producers holds both clusters (the outer one merges, as KafkaLifespan
    does, instead of replacing the mapping)."""
    a, b = InMemoryProducer(), InMemoryProducer()
    inner = kafka_lifespan(cluster="b", producer_factory=lambda: b)
    app = Starlette(lifespan=kafka_lifespan(inner, cluster="a", producer_factory=lambda: a))
    async with run_lifespan(app) as state:
        assert state["kafka_producers"] == {"a": a, "b": b}
        assert "kafka_producer" not in state
    assert a.closed and b.closed
