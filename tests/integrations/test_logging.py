"""KafkaLogHandler: records as JSON events, never blocking, bounded, counted."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from kafka_asgi.integrations.asgi import producer_lifespan
from kafka_asgi.integrations.logging import KafkaLogHandler
from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.integrations.threads import BackgroundProducer
from kafka_asgi.producer import Producer

pytestmark = pytest.mark.anyio


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"app.test.{threading.get_ident()}.{id(object())}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    for h in list(logger.handlers):
        logger.removeHandler(h)


async def test_records_from_loop_and_threads(anyio_backend: str, log: logging.Logger) -> None:
    handler = KafkaLogHandler("logs", cluster="log-a", extra={"service": "shop"})
    log.addHandler(handler)
    producer = InMemoryProducer()
    async with producer_lifespan(cluster="log-a", producer_factory=lambda: producer):
        log.info("hello %s", "loop", extra={"order_id": 7})

        def from_thread() -> None:
            try:
                raise ValueError("bad")
            except ValueError:
                log.exception("failed in thread")

        await anyio.to_thread.run_sync(from_thread)
        await producer.wait_for(2, topic="logs")
    first, second = producer.json_values("logs")
    assert first["message"] == "hello loop"
    assert first["level"] == "INFO"
    assert first["logger"] == log.name
    assert first["order_id"] == 7
    assert first["service"] == "shop"
    assert first["function"] == "test_records_from_loop_and_threads"
    assert isinstance(first["timestamp"], int) and isinstance(first["line"], int)
    assert second["level"] == "ERROR"
    assert second["thread"] != first["thread"]
    assert "ValueError: bad" in second["exception"]
    assert handler.sent == 2 and handler.dropped == 0


async def test_records_before_startup_wait_in_a_bounded_queue(
    anyio_backend: str, log: logging.Logger
) -> None:
    handler = KafkaLogHandler("logs", cluster="log-b", max_queue=3)
    log.addHandler(handler)
    for i in range(5):
        log.warning("early %d", i)
    assert handler.pending == 3 and handler.dropped == 2
    producer = InMemoryProducer()
    async with producer_lifespan(cluster="log-b", producer_factory=lambda: producer):
        log.warning("started")
    assert [e["message"] for e in producer.json_values("logs")] == [
        "early 0",
        "early 1",
        "early 2",
        "started",
    ]
    assert handler.pending == 0 and handler.sent == 4


async def test_full_producer_is_counted_not_raised(anyio_backend: str, log: logging.Logger) -> None:
    handler = KafkaLogHandler("logs", cluster="log-c")
    log.addHandler(handler)
    producer = InMemoryProducer(max_buffering=2)
    async with producer_lifespan(cluster="log-c", producer_factory=lambda: producer):
        for i in range(5):
            log.error("e%d", i)  # must not raise
    assert len(producer.events) == 2
    assert handler.dropped == 3 and handler.sent == 2


async def test_records_the_thread_hand_off_drops_are_counted_as_dropped(
    anyio_backend: str, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged from a thread, the records wait in the lifespan sender's queue; the drain
    on the loop finds the producer full. They were counted as sent (the sender alone
    counted them), and close() reported nothing lost."""
    handler = KafkaLogHandler("logs", cluster="log-c2")
    log.addHandler(handler)
    producer = InMemoryProducer(max_buffering=2)
    async with producer_lifespan(cluster="log-c2", producer_factory=lambda: producer):

        def from_thread() -> None:
            for i in range(5):
                log.error("e%d", i)  # taken by the sender's queue: no error here

        await anyio.to_thread.run_sync(from_thread)
    assert len(producer.events) == 2
    assert handler.sent == 2 and handler.dropped == 3
    assert handler.refused == 0 and handler.lost_in_handoff == 3
    with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
        handler.close()
    (warning,) = [r.getMessage() for r in caplog.records if "could not ship" in r.getMessage()]
    assert "could not ship 3 record(s)" in warning
    assert "3 dropped by the thread hand-off" in warning
    assert warning.endswith("; 2 shipped")


async def test_own_logs_and_formatter(anyio_backend: str) -> None:
    handler = KafkaLogHandler("logs", cluster="log-d")
    handler.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
    producer = InMemoryProducer()
    own = logging.getLogger("kafka_asgi.integrations.test-own")
    app = logging.getLogger("app.test-formatter")
    for lg in (own, app):
        lg.addHandler(handler)
    try:
        async with producer_lifespan(cluster="log-d", producer_factory=lambda: producer):
            own.warning("from the library")
            app.warning("from the app")
    finally:
        for lg in (own, app):
            lg.removeHandler(handler)
    assert [e["message"] for e in producer.json_values("logs")] == ["WARNING|from the app"]


def test_serializer_failure_goes_to_handle_error(log: logging.Logger) -> None:
    def broken(event: object) -> bytes:
        raise RuntimeError("cannot serialize")

    handler = KafkaLogHandler("logs", cluster="log-e", serializer=broken)
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    log.addHandler(handler)
    log.info("x")
    assert handler.dropped == 1 and len(errors) == 1


async def test_a_record_with_nan_is_shipped_with_the_number_as_a_string(
    anyio_backend: str, log: logging.Logger
) -> None:
    # JSON has no NaN; the default serializer refuses it (an EventLogger.log caller
    # gets a ValueError), but a log call has no caller to refuse it to: the record is
    # shipped, with the non-finite numbers as strings, not dropped.
    producer = InMemoryProducer()
    handler = KafkaLogHandler("logs", cluster="log-nan")
    log.addHandler(handler)
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    async with producer_lifespan(cluster="log-nan", producer_factory=lambda: producer):
        log.warning("ratio", extra={"ratio": math.nan, "limits": [math.inf, -math.inf, 1.5]})
        log.warning("cycle", extra={"state": cyclic})
        await producer.wait_for(1, topic="logs")
    (event,) = producer.json_values("logs")
    assert (event["ratio"], event["limits"]) == ("NaN", ["Infinity", "-Infinity", 1.5])
    assert handler.sent == 1 and handler.dropped == 1 and len(errors) == 1


def test_with_a_background_producer(log: logging.Logger) -> None:
    """A WSGI process: the producer runs in its own thread with its own loop."""
    producer = InMemoryProducer()
    bg = BackgroundProducer(cluster="log-f", producer_factory=lambda: producer)
    bg.ensure_started()
    handler = KafkaLogHandler("logs", cluster="log-f")
    log.addHandler(handler)
    try:
        for i in range(20):
            log.info("line %d", i)
        producer.wait_for_sync(20, topic="logs")
    finally:
        bg.stop()
    assert [e["message"] for e in producer.json_values("logs")] == [f"line {i}" for i in range(20)]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"topic": ""}, ValueError, "topic"),
        ({"topic": "app logs"}, ValueError, "invalid topic name 'app logs'"),
        ({"topic": "t", "max_queue": 0}, ValueError, "max_queue"),
        ({"topic": "t", "cluster": ""}, ValueError, "cluster"),
        ({"topic": "t", "key": "k"}, TypeError, "key"),
        # Named as the handler takes it (its producer's option is shutdown_timeout).
        (
            {"topic": "t", "bootstrap": "127.0.0.1:1", "close_timeout": -1},
            ValueError,
            "close_timeout must be a finite number of seconds >= 0, not -1",
        ),
    ],
)
def test_bad_options(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        KafkaLogHandler(**kwargs)  # type: ignore[arg-type]


async def test_records_before_startup_go_out_when_the_lifespan_starts(
    anyio_backend: str, log: logging.Logger
) -> None:
    """No later record needed: the lifespan's sender takes the waiting ones at once."""
    handler = KafkaLogHandler("logs", cluster="log-g")
    log.addHandler(handler)
    log.warning("before")
    producer = InMemoryProducer()
    async with producer_lifespan(cluster="log-g", producer_factory=lambda: producer):
        await producer.wait_for(1, topic="logs")
    assert [e["message"] for e in producer.json_values("logs")] == ["before"]
    assert handler.pending == 0 and handler.sent == 1


async def test_records_logged_on_another_threads_event_loop_wait_for_the_producers_thread(
    anyio_backend: str, log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Producer registered by cluster_name, no lifespan: a record logged on a thread
    running an event loop of its own waits, as one logged on a thread with no loop, and
    goes to the producer from its own thread."""
    calls: list[int] = []
    monkeypatch.setattr(
        Producer, "send_nowait", lambda self, *a, **k: calls.append(threading.get_ident())
    )
    handler = KafkaLogHandler("logs", cluster="log-other-loop")
    log.addHandler(handler)

    async def foreign_loop() -> None:
        log.warning("on another loop")

    async with Producer("127.0.0.1:1", cluster_name="log-other-loop"):
        await anyio.to_thread.run_sync(lambda: anyio.run(foreign_loop, backend=anyio_backend))
        assert calls == [] and handler.pending == 1
        log.warning("on its loop")  # hands the waiting one over first
    handler.close()
    assert calls == [threading.get_ident()] * 2
    assert handler.sent == 2 and handler.dropped == 0


async def test_records_logged_before_startup_carry_their_own_trace(
    anyio_backend: str, log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inject_trace_context=True: records that waited in the handler's queue for a
    lifespan go out with the trace context they were logged in (not the loop's, which
    handed them over, with none); one logged outside any span carries none."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("app")
    seen: dict[str, str | None] = {}
    send_nowait = Producer.send_nowait

    def spy(self: Producer, topic: str, value: Any, key: Any, headers: Any, *rest: Any) -> None:
        traceparent = dict(headers or ()).get("traceparent")
        message = json.loads(value)["message"]
        seen[message] = None if traceparent is None else traceparent.decode().split("-")[1]
        send_nowait(self, topic, value, key, headers, *rest)

    monkeypatch.setattr(Producer, "send_nowait", spy)
    handler = KafkaLogHandler("logs", cluster="log-trace")
    log.addHandler(handler)
    expected: dict[str, str | None] = {"outside": None}
    for name in ("first", "second"):
        with tracer.start_as_current_span(name) as span:
            expected[name] = format(span.get_span_context().trace_id, "032x")
            log.warning(name)
    log.warning("outside")
    assert handler.pending == 3
    async with producer_lifespan(
        cluster="log-trace",
        bootstrap="127.0.0.1:1",
        startup_timeout=0.1,
        shutdown_timeout=0.1,
        producer_options={"inject_trace_context": True, "close_timeout": 0.1},
    ):
        assert handler.pending == 0
    assert seen == expected


def test_handler_with_its_own_producer_counts_what_it_could_not_deliver(
    log: logging.Logger,
) -> None:
    """bootstrap= gives the handler a producer of its own; close() stops it within
    close_timeout and counts (and reports) what was not delivered."""
    handler = KafkaLogHandler("logs", bootstrap="127.0.0.1:1", close_timeout=0.2)
    log.addHandler(handler)
    for i in range(5):
        log.info("to nowhere %d", i)
    handler.close()
    assert handler.sent == 5
    assert handler.undelivered + handler.dropped == 5


def test_own_producer_counts_each_record_once(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """The own producer refuses 3 of 5 records (its buffer holds 2) when its hand-off
    gives them over. They were counted as sent and dropped at once (the background
    producer's count added to the handler's; those its sender dropped not at all):
    8 records accounted for 5, "3 shipped" with none delivered."""
    handler = KafkaLogHandler(
        "logs",
        bootstrap="127.0.0.1:1",
        close_timeout=0.2,
        producer_options={"max_buffering": 2},
    )
    log.addHandler(handler)
    for i in range(5):
        log.info("to nowhere %d", i)
    with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
        handler.close()
    assert (handler.sent, handler.dropped, handler.undelivered) == (2, 3, 2)
    assert handler.lost_in_handoff == 3
    (warning,) = [r.getMessage() for r in caplog.records if "could not ship" in r.getMessage()]
    assert "could not ship 5 record(s)" in warning
    assert warning.endswith("; 0 shipped")


def test_records_left_with_a_thread_the_join_gave_up_on_are_counted(
    log: logging.Logger, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() gives up waiting for the own producer's thread (still in its final
    flush): its records were neither delivered nor counted (no final stats), and
    close() reported nothing. They are counted as left behind, and named."""
    monkeypatch.setattr(BackgroundProducer, "_join_limit", lambda self, timeout: 0.05)
    handler = KafkaLogHandler("logs", bootstrap="127.0.0.1:1", close_timeout=1.0)
    log.addHandler(handler)
    for i in range(3):
        log.info("to nowhere %d", i)
    own = handler._own
    assert own is not None
    own.ensure_started()
    thread = own._thread
    assert thread is not None
    try:
        with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
            handler.close()
    finally:
        thread.join(15)  # its flush gives up after close_timeout
    assert handler.sent == 3 and handler.dropped == 0
    assert handler.undelivered == 3  # all of them, counted as shipped before
    assert handler.left_behind == 3
    (warning,) = [r.getMessage() for r in caplog.records if "could not ship" in r.getMessage()]
    assert "could not ship 3 record(s)" in warning
    assert "3 of them left with the producer's thread" in warning


def test_handler_on_the_root_logger_closes_at_exit_without_stalling() -> None:
    # logging.shutdown() holds the handler's lock around close(); the own producer's
    # thread logs its final flush (kafka_asgi loggers propagate to the root). The code
    # before took the lock for those records before skipping them: the thread stalled,
    # close() gave up joining it after close_timeout + 10 s, and counted nothing.
    handler = KafkaLogHandler("logs", bootstrap="127.0.0.1:1", close_timeout=0.2)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logging.getLogger("app.root-handler").warning("to nowhere")
        # What logging.shutdown() does for each handler.
        handler.acquire()
        try:
            handler.flush()
            handler.close()
        finally:
            handler.release()
    finally:
        root.removeHandler(handler)
    assert handler.sent == 1
    assert handler.undelivered == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_does_not_ship_the_parents_queued_records(log: logging.Logger) -> None:
    # gunicorn --preload: a record logged while the master imports the app waits in
    # the handler's queue; each worker inherited a copy and shipped it (stored once
    # per worker) while the master counted it as never shipped.
    handler = KafkaLogHandler("logs", cluster="log-fork")
    log.addHandler(handler)
    log.warning("app imported")
    assert handler.pending == 1
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            code = 0 if (handler.pending, handler.sent, handler.dropped) == (0, 0, 0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert handler.pending == 1  # the parent's, still
    handler.close()
    assert handler.dropped == 1
