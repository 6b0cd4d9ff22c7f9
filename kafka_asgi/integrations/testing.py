"""Test helpers for the test suites of apps that use kafka_asgi.

:class:`InMemoryProducer` has the public methods of :class:`kafka_asgi.producer.Producer`
and keeps every event in a list instead of shipping it, so an app's tests can assert on
what it would have sent without a broker::

    from kafka_asgi.integrations.testing import capture_events

    def test_checkout(client):
        with capture_events() as kafka:        # or the ``kafka_events`` pytest fixture
            client.post("/checkout", json={...})
        assert kafka.json_values("orders") == [{...}]

:func:`capture_events` registers the in-memory producer under a cluster name and makes
the kafka_asgi lifespans (ASGI, Starlette/FastAPI, Django) use it instead of creating a
real producer, so the app under test needs no change.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio

from kafka_asgi.integrations.background import restart_for
from kafka_asgi.integrations.overrides import clear_override, override_for, set_override
from kafka_asgi.integrations.producer_api import Headers
from kafka_asgi.producer import (
    BufferFullError,
    ProducerClosedError,
    ProducerStats,
    RecordMetadata,
    register_producer,
    unregister_producer,
)
from kafka_asgi.producer.accumulator import CheckedRecord
from kafka_asgi.producer.hooks import ProducerHooks
from kafka_asgi.producer.options import check_max_request_size
from kafka_asgi.producer.validation import check_record, check_wait, resolve_serializer
from kafka_asgi.protocol.errors import KafkaError

__all__ = [
    "CapturedEvent",
    "InMemoryProducer",
    "capture_events",
    "override_for",
]


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """One event as the producer would have put it on the wire (str values are UTF-8)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    partition: int | None = None
    timestamp: int | None = None

    def json(self) -> Any:
        """The value decoded as JSON."""
        if self.value is None:
            raise ValueError(f"event on {self.topic!r} has a null value, not JSON")
        return json.loads(self.value)

    def header(self, name: str) -> bytes | None:
        """The last header called ``name`` (Kafka allows repeats); KeyError if absent."""
        for hname, hvalue in reversed(self.headers):
            if hname == name:
                return hvalue
        raise KeyError(name)


def _wait_limit(timeout: object) -> float:
    """A test's wait: a number of seconds >= 0 (NaN would never time out)."""
    limit = check_wait("timeout", timeout)
    if limit is None:
        raise TypeError("timeout must be a number of seconds, not None")
    return limit


class InMemoryProducer:
    """A producer that captures events in memory; same public methods as Producer.

    ``send_nowait`` validates and converts its arguments with the real producer's
    rules (kafka_asgi.producer.validation: the same TypeError / ValueError, naming
    the bad value; ``value_serializer`` / ``key_serializer`` as the Producer options
    of those names, e.g. ``'json'``) and records the event at once. ``send``
    returns a RecordMetadata with per-partition offsets counted from 0 (partition
    0 unless one is given).

    As the Producer, it refuses a record larger than ``max_request_size`` allows
    (RecordTooLargeError) and anything after ``aclose()`` (ProducerClosedError).
    ``add_hooks`` keeps the hooks (``hooks``) and calls none: no request is made.

    To exercise an app's failure paths, set ``buffer_full = True`` (``send_nowait``
    raises BufferFullError, as a producer at ``max_buffering`` does), or
    ``max_buffering`` to make that happen once that many events are held. As with the
    Producer, a refused event is neither enqueued nor failed in :meth:`stats`;
    ``rejected`` counts them.
    Setting ``reachable = False`` makes :meth:`check_reachable` fail, which the
    lifespans use to decide whether Kafka is up at startup.

    Thread-safe: events may be sent from any thread, as with the real producer
    behind the integrations' thread hand-off.
    """

    def __init__(
        self,
        *,
        max_buffering: int | None = None,
        reachable: bool = True,
        value_serializer: Any = None,
        key_serializer: Any = None,
        max_request_size: int = 1 << 20,
    ) -> None:
        self._value_serializer = resolve_serializer("value_serializer", value_serializer)
        self._key_serializer = resolve_serializer("key_serializer", key_serializer)
        if max_buffering is not None and (not isinstance(max_buffering, int) or max_buffering < 1):
            raise ValueError(f"max_buffering must be a positive int or None, not {max_buffering!r}")
        self.max_request_size = check_max_request_size(max_request_size)
        self.hooks: list[ProducerHooks] = []
        self._known: set[str] = set()
        self.max_buffering = max_buffering
        self.buffer_full = False
        self.reachable = reachable
        self.events: list[CapturedEvent] = []
        self.started = False
        self.closed = False
        self.flushes = 0
        self._offsets: dict[tuple[str, int], int] = {}
        self.rejected = 0  # BufferFullError refusals: not in stats(), as for the Producer
        self._lock = threading.Lock()

    # -- the Producer API --------------------------------------------------------------

    def send_nowait(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self._capture(topic, value, key, headers, partition, timestamp)

    async def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        event = self._capture(topic, value, key, headers, partition, timestamp)
        await anyio.lowlevel.checkpoint()
        part = event.partition or 0
        with self._lock:
            offset = self._offsets.get((topic, part), 0)
            self._offsets[(topic, part)] = offset + 1
        ts = event.timestamp if event.timestamp is not None else int(time.time() * 1000)
        return RecordMetadata(topic=topic, partition=part, offset=offset, timestamp=ts)

    async def send_buffered(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self._capture(topic, value, key, headers, partition, timestamp)
        await anyio.lowlevel.checkpoint()

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - Producer API
        check_wait("timeout", timeout)
        self.flushes += 1
        await anyio.lowlevel.checkpoint()

    def stats(self) -> ProducerStats:
        with self._lock:
            n = len(self.events)
            size = sum(len(e.value or b"") + len(e.key or b"") for e in self.events)
        return ProducerStats(
            enqueued=n,
            delivered=n,
            failed=0,
            retried=0,
            buffered=0,
            in_flight=0,
            bytes_sent=size,
            batches_sent=n,
            last_error=None,
        )

    async def start(self) -> None:
        if self.closed:
            raise ProducerClosedError("InMemoryProducer was closed; make a new one")
        self.started = True
        await anyio.lowlevel.checkpoint()

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - Producer API
        check_wait("timeout", timeout)
        self.closed = True
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> InMemoryProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.flush()
        await self.aclose()

    def add_hooks(self, hooks: ProducerHooks) -> None:
        """Keep ``hooks`` (as the Producer takes them: the metrics integrations do):
        none is called, as no Produce request is made."""
        if not isinstance(hooks, ProducerHooks):
            raise TypeError(f"hooks must be a ProducerHooks, not {hooks!r}")
        self.hooks.append(hooks)

    def remove_hooks(self, hooks: ProducerHooks) -> None:
        if hooks in self.hooks:
            self.hooks.remove(hooks)

    # -- test-side helpers ----------------------------------------------------------------

    async def check_reachable(self) -> None:
        """What the lifespans call at startup (within a deadline); fails when ``reachable``
        is False."""
        await anyio.lowlevel.checkpoint()
        if not self.reachable:
            raise KafkaError("InMemoryProducer: Kafka marked unreachable (reachable=False)")

    def events_for(self, topic: str) -> list[CapturedEvent]:
        with self._lock:
            return [e for e in self.events if e.topic == topic]

    def json_values(self, topic: str) -> list[Any]:
        """The values sent to ``topic``, decoded as JSON, in send order."""
        return [e.json() for e in self.events_for(topic)]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self._offsets.clear()

    async def wait_for(
        self,
        count: int,
        topic: str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for_sync
    ) -> None:
        """Wait until ``count`` events (on ``topic``, or any) were captured; TimeoutError."""
        limit = _wait_limit(timeout)
        with anyio.move_on_after(limit):
            # Polling, not an Event: events also arrive from other threads, which cannot
            # set an anyio.Event.
            while self._count(topic) < count:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            return
        raise self._timed_out(count, topic, limit)

    def wait_for_sync(self, count: int, topic: str | None = None, timeout: float = 5.0) -> None:
        """:meth:`wait_for` for synchronous tests (events sent from other threads)."""
        limit = _wait_limit(timeout)
        deadline = time.monotonic() + limit
        while self._count(topic) < count:
            if time.monotonic() > deadline:
                raise self._timed_out(count, topic, limit)
            time.sleep(0.005)

    def _timed_out(self, count: int, topic: str | None, limit: float) -> TimeoutError:
        return TimeoutError(
            f"{self._count(topic)} of {count} events on {topic or 'any topic'} after {limit}s"
        )

    def _count(self, topic: str | None) -> int:
        if topic is None:
            return len(self.events)
        return len(self.events_for(topic))

    def check_record(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> CheckedRecord:
        """As :meth:`kafka_asgi.producer.Producer.check_record`: the record checked and
        converted, captured nothing."""
        checked = check_record(
            topic,
            value,
            key,
            headers,
            partition,
            timestamp,
            self._value_serializer,
            self._key_serializer,
            self.max_request_size,
            self._known,
        )
        self._known.add(checked[0])  # as the Producer knows its topics' names
        return checked

    def _capture(
        self,
        topic: Any,
        value: Any,
        key: Any,
        headers: Headers,
        partition: Any,
        timestamp: Any,
    ) -> CapturedEvent:
        name, value_bytes, key_bytes, hdrs, part, ms = self.check_record(
            topic, value, key, headers, partition, timestamp
        )
        event = CapturedEvent(
            topic=name,
            value=value_bytes,
            key=key_bytes,
            headers=tuple(hdrs) if hdrs else (),
            partition=part,
            timestamp=ms,
        )
        if self.closed:
            raise ProducerClosedError("InMemoryProducer is closed")
        with self._lock:
            if self.buffer_full or (
                self.max_buffering is not None and len(self.events) >= self.max_buffering
            ):
                self.rejected += 1
                raise BufferFullError(
                    f"InMemoryProducer buffer is full ({len(self.events)} events held)"
                )
            self.events.append(event)
        return event


@contextmanager
def capture_events(
    cluster: str = "default", producer: InMemoryProducer | None = None
) -> Iterator[InMemoryProducer]:
    """Capture what the app would ship to ``cluster`` in an InMemoryProducer.

    The producer is registered under ``cluster`` (so ``get_producer(cluster)``, the
    access-log middleware and the request loggers find it even where no lifespan
    runs) and every kafka_asgi lifespan started meanwhile uses it instead of
    connecting to Kafka.

    The process's background producers of ``cluster`` (a module-level WSGI or Flask
    app, Django under WSGI) are restarted when the capture begins and when it ends,
    each time flushing what they hold to the producer they had: the capture gets what
    was sent while it was active, and neither an earlier test's producer nor a later
    test's events come into it.
    """
    producer = producer if producer is not None else InMemoryProducer()
    set_override(cluster, producer)
    try:
        # Inside the try: a name another producer holds (ProducerAlreadyRegisteredError)
        # must not leave the override behind for every later test. Restarted first: a
        # background lifespan started without a capture holds the name.
        restart_for(cluster)
        register_producer(cluster, producer)
        yield producer
    finally:
        clear_override(cluster, producer)
        # Unregistered before the restart: an event sent meanwhile starts the background
        # producer again, whose own producer takes the name.
        unregister_producer(cluster, producer)
        restart_for(cluster)
