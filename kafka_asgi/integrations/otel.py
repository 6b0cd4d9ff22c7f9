"""OpenTelemetry spans and metrics for a producer (extra ``otel``: opentelemetry-api).

    from kafka_asgi.integrations.otel import instrument
    instrument(producer)              # global tracer and meter providers by default

Spans follow OpenTelemetry's messaging semantic conventions for Kafka: one PRODUCER
span per sync ``await send()`` (in the caller's trace, with the offset Kafka returned)
and one CLIENT span per Produce request of the background sender (a root span: it
carries records of many requests); none per ``send_nowait`` record.

Metrics (instrument names below, attributes ``messaging.system="kafka"`` and, per
topic, ``messaging.destination.name``; the observed gauges and counters also carry
``messaging.client.id``, the client's ``client_id``, which tells apart producers
instrumented on one meter provider when they have different ones): records
sent/failed/retried, bytes and batches sent, the buffer's fill and limit, records and
requests in flight, the Produce request duration
(``messaging.client.operation.duration``) and batch size histograms, the disk spill's
counters (``kafka_asgi.producer.spill.*``), the time brokers enforcing a quota asked
the client to wait (``kafka_asgi.producer.throttle.time``), and the access-log
middlewares' emitted/dropped/sampled-out events.

``messaging.destination.name`` on the metrics takes the first ``max_topics`` (default
100) topics the producer sent to; any further topic's points carry ``<other>`` (one
warning), so that an app naming topics from data cannot grow the series without end.
Spans carry the topic as it is (a span is not a series).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "kafka_asgi.integrations.otel needs opentelemetry-api: pip install 'kafka-asgi[otel]'"
    ) from exc

from kafka_asgi.integrations.metric_labels import DEFAULT_MAX_TOPICS, TopicLabels
from kafka_asgi.integrations.middleware_stats import middleware_totals
from kafka_asgi.integrations.producer_api import producer_closed
from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks
from kafka_asgi.protocol.errors import error_for_code

__all__ = ["ProducerInstrumentation", "instrument"]

logger = logging.getLogger("kafka_asgi.integrations")

_NAME = "kafka_asgi"
_SYSTEM = "kafka"
# Semantic conventions' recommended boundaries for messaging.client.operation.duration.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_SIZE_BUCKETS = tuple(float(64 * 4**i) for i in range(10))  # 64 B .. 16 MiB


def _version() -> str:
    from kafka_asgi._version import __version__

    return __version__


def error_type(error: BaseException | None, code: int = 0) -> str | None:
    """``error.type``: the exception's class name, or the Kafka error's for a code."""
    if error is not None:
        return type(error).__name__
    if code:
        return error_for_code(code).__name__
    return None


_SPILL_INSTRUMENTS = (
    ("spilled", "kafka_asgi.producer.spill.records", "{record}", "Records written to spill_dir"),
    ("spilled_bytes", "kafka_asgi.producer.spill.bytes", "By", "Bytes written to spill_dir"),
    ("replayed", "kafka_asgi.producer.spill.replayed", "{record}", "Records read back"),
    ("spill_dropped", "kafka_asgi.producer.spill.dropped", "{record}", "Records not kept"),
    ("spill_lost", "kafka_asgi.producer.spill.lost", "{record}", "Records in damaged frames"),
    ("spill_queued", "kafka_asgi.producer.spill.queued", "{record}", "Waiting to be written"),
    ("spill_backlog_bytes", "kafka_asgi.producer.spill.backlog", "By", "On disk, not read back"),
)
_SPILL_COUNTERS = frozenset({"spilled", "spilled_bytes", "replayed", "spill_dropped", "spill_lost"})


class ProducerInstrumentation(ProducerHooks):
    """The hooks :func:`instrument` installs; ``uninstrument()`` removes them, as does
    the first collection after the producer was closed or garbage-collected (it is held
    weakly)."""

    def __init__(
        self,
        producer: Any,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        access_logs: bool = True,
        traces: bool = True,
        max_topics: int = DEFAULT_MAX_TOPICS,
    ) -> None:
        self._topic = TopicLabels(max_topics, "OpenTelemetry metrics")
        # Weak: the meter's instruments hold this (their members) as long as the meter
        # lives, and must not keep every producer ever instrumented alive with it.
        self._producer: Callable[[], Any] = (
            weakref.ref(producer) if _weakrefable(producer) else lambda: producer
        )
        self.active = True
        # What the observable instruments report with: their values are the producer's
        # alone (a gauge is not summed), so each producer's points carry its client
        # id (the client's client_id option), or two producers on one meter provider
        # would overwrite each other's.
        self._attrs: dict[str, str] = {_SYS: _SYSTEM}
        client_id = _client_id(producer)
        if client_id is not None:
            self._attrs["messaging.client.id"] = client_id
        self._tracer: Any = (
            trace.get_tracer(_NAME, _version(), tracer_provider=tracer_provider) if traces else None
        )
        meter = metrics.get_meter(_NAME, _version(), meter_provider=meter_provider)
        self._meter = meter
        self._sent = meter.create_counter(
            "kafka_asgi.producer.records.sent", "{record}", "Records acknowledged by Kafka"
        )
        self._failed = meter.create_counter(
            "kafka_asgi.producer.records.failed", "{record}", "Records reported as not delivered"
        )
        self._retried = meter.create_counter(
            "kafka_asgi.producer.records.retried",
            "{record}",
            "Record sends repeated after a retriable error",
        )
        self._bytes = meter.create_counter(
            "kafka_asgi.producer.bytes.sent", "By", "Bytes of acknowledged record batches"
        )
        self._batches = meter.create_counter(
            "kafka_asgi.producer.batches.sent", "{batch}", "Acknowledged record batches"
        )
        self._duration = _histogram(
            meter,
            "messaging.client.operation.duration",
            "s",
            "Duration of Produce requests (write to answer)",
            _DURATION_BUCKETS,
        )
        self._batch_size = _histogram(
            meter,
            "kafka_asgi.producer.batch.size",
            "By",
            "Encoded size of the record batches sent",
            _SIZE_BUCKETS,
        )
        self._requests_in_flight = 0
        # The observable instruments are the meter's, made once: the SDK ignores a
        # second instrument of a name on a meter, with its callback, so a second
        # producer (or a new one after uninstrument()) would never be observed.
        self._observed = _observed_for(meter)
        self._observed.join(self, access_logs)

    @property
    def producer(self) -> Any:
        """The instrumented producer; None once it was garbage-collected."""
        return self._producer()

    # ------------------------------------------------------------------ hooks

    def request_started(self, info: ProduceRequestInfo) -> Any:
        self._requests_in_flight += 1
        span = None
        if self._tracer is not None:
            topics = {p.topic for p in info.partitions}
            attributes: dict[str, Any] = {
                _SYS: _SYSTEM,
                "messaging.operation.name": "send",
                "messaging.operation.type": "send",
                "messaging.batch.message_count": sum(p.records for p in info.partitions),
                "messaging.kafka.node_id": info.node,
            }
            if len(topics) == 1:
                (topic,) = topics
                attributes[_DEST] = topic
                if len(info.partitions) == 1:
                    attributes[_PART] = str(info.partitions[0].partition)
            name = f"send {next(iter(topics))}" if len(topics) == 1 else "send"
            # A root span: the background sender works for many requests at once.
            span = self._tracer.start_span(
                name,
                context=otel_context.Context(),
                kind=SpanKind.CLIENT,
                attributes=attributes,
            )
        return (time.perf_counter(), span)

    def request_finished(
        self, token: Any, info: ProduceRequestInfo, error: BaseException | None
    ) -> None:
        self._requests_in_flight -= 1
        started, span = token
        elapsed = time.perf_counter() - started
        kind = error_type(error)
        if kind is None:
            for p in info.partitions:
                if p.error_code:
                    kind = error_type(None, p.error_code)
                    break
        attrs: dict[str, Any] = {
            _SYS: _SYSTEM,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
        }
        topics = {p.topic for p in info.partitions}
        if len(topics) == 1:
            attrs[_DEST] = self._topic(next(iter(topics)))
        if kind is not None:
            attrs["error.type"] = kind
        self._duration.record(elapsed, attrs)
        for p in info.partitions:
            self._batch_size.record(p.size, {_SYS: _SYSTEM, _DEST: self._topic(p.topic)})
        if span is not None:
            if len(info.partitions) == 1 and info.partitions[0].base_offset >= 0:
                span.set_attribute("messaging.kafka.offset", info.partitions[0].base_offset)
            if kind is not None:
                span.set_attribute("error.type", kind)
                span.set_status(StatusCode.ERROR, str(error) if error is not None else kind)
            span.end()

    def batch_delivered(self, topic: str, partition: int, records: int, size: int) -> None:
        attrs = {_SYS: _SYSTEM, _DEST: self._topic(topic)}
        self._sent.add(records, attrs)
        self._bytes.add(size, attrs)
        self._batches.add(1, attrs)

    def records_failed(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self._failed.add(
            records, {_SYS: _SYSTEM, _DEST: self._topic(topic), "error.type": type(error).__name__}
        )

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self._retried.add(
            records, {_SYS: _SYSTEM, _DEST: self._topic(topic), "error.type": type(error).__name__}
        )

    def send_started(self, topic: str, partition: int | None) -> Any:
        if self._tracer is None:
            return None
        attributes: dict[str, Any] = {
            _SYS: _SYSTEM,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            _DEST: topic,
        }
        if partition is not None:
            attributes[_PART] = str(partition)
        # In the caller's context: the span is a child of the request's span.
        return self._tracer.start_span(
            f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes
        )

    def send_finished(self, token: Any, metadata: Any, error: BaseException | None) -> None:
        span = token
        if span is None:
            return
        if metadata is not None:
            span.set_attribute(_PART, str(metadata.partition))
            if metadata.offset >= 0:
                span.set_attribute("messaging.kafka.offset", metadata.offset)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, str(error))
        span.end()

    def uninstrument(self) -> None:
        """Remove the hooks from the producer; the observable instruments report
        nothing of it from now on (nor keep it alive)."""
        if self.active:
            self.active = False
            producer = self._producer()
            if producer is not None:
                producer.remove_hooks(self)
            self._observed.leave(self)


# What an observable instrument reports of one member, given its (live) producer.
_Value = Callable[[ProducerInstrumentation, Any], "float | None"]


def _stat(field: str) -> _Value:
    return lambda m, producer: getattr(producer.stats(), field)


def _limit(m: ProducerInstrumentation, producer: Any) -> float | None:
    limit = getattr(getattr(producer, "options", None), "max_buffering", None)
    return limit if isinstance(limit, int) else None


class _Observed:
    """A meter's observable instruments, reporting every producer instrumented on it
    (each point with that producer's attributes)."""

    def __init__(self, meter: Any) -> None:
        self.members: list[ProducerInstrumentation] = []
        self._meter = weakref.ref(meter) if _weakrefable(meter) else (lambda: meter)
        self._access_logs = False
        gauge, counter = meter.create_observable_gauge, meter.create_observable_counter
        gauge(
            "kafka_asgi.producer.buffer.records",
            [self._each(_stat("buffered"))],
            "{record}",
            "Records held and not in flight",
        )
        gauge(
            "kafka_asgi.producer.buffer.limit",
            [self._each(_limit)],
            "{record}",
            "max_buffering: records the producer holds at most",
        )
        gauge(
            "kafka_asgi.producer.in_flight.records",
            [self._each(_stat("in_flight"))],
            "{record}",
            "Records in Produce requests awaiting their answer",
        )
        gauge(
            "kafka_asgi.producer.in_flight.requests",
            [self._each(lambda m, producer: m._requests_in_flight)],
            "{request}",
            "Produce requests awaiting their answer",
        )
        # What brokers enforcing a client quota asked the producer's client to wait
        # (KIP-219), for any kind of request: stats().throttle_time_ms, in seconds.
        counter(
            "kafka_asgi.producer.throttle.time",
            [self._each(lambda m, producer: producer.stats().throttle_time_ms / 1000)],
            "s",
            "Time the brokers asked the producer's client to wait (client quotas)",
        )
        # Disk spill (spill_dir): cumulative counters and gauges from stats().
        for field, name, unit, doc in _SPILL_INSTRUMENTS:
            make = counter if field in _SPILL_COUNTERS else gauge
            make(name, [self._each(_stat(field))], unit, doc)

    def join(self, member: ProducerInstrumentation, access_logs: bool) -> None:
        with _observed_lock:
            self.members.append(member)
            if not access_logs or self._access_logs:
                return
            self._access_logs = True
        meter = self._meter()
        if meter is None:
            return
        for field in ("emitted", "dropped", "sampled_out"):
            meter.create_observable_counter(
                f"kafka_asgi.access_log.events.{field}",
                [_observe_middlewares(field)],
                "{event}",
                f"Access-log events {field.replace('_', ' ')} by the middlewares",
            )

    def leave(self, member: ProducerInstrumentation) -> None:
        with _observed_lock:
            if member in self.members:
                self.members.remove(member)

    def _each(self, value: _Value) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            with _observed_lock:
                members = list(self.members)
            points = []
            for member in members:
                producer = member._producer()
                if producer is None or producer_closed(producer):
                    # Closed (its lifespan ended) or collected: it leaves the instruments
                    # now. Kept, its last values would stand beside the gauges of the
                    # producer made after it, and add to its counters, under the same
                    # client id (the default one, unless told otherwise).
                    member.uninstrument()
                    continue
                try:
                    observed = value(member, producer)
                except Exception:  # one producer's failure loses only its own point
                    logger.exception("kafka_asgi: observing a producer failed")
                    continue
                if observed is not None:
                    points.append(Observation(observed, member._attrs))
            return points

        return callback


def _observe_middlewares(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(counts[field], {"kafka_asgi.middleware": kind})
            for kind, counts in middleware_totals().items()
        ]

    return callback


def _weakrefable(obj: object) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


_observed_lock = threading.Lock()
_making_lock = threading.Lock()
# Per meter (a MeterProvider hands out one meter per name and version).
_observed_by_meter: weakref.WeakKeyDictionary[Any, _Observed] = weakref.WeakKeyDictionary()
_observed_by_id: dict[int, _Observed] = {}  # meters that take no weak reference


def _observed_for(meter: Any) -> _Observed:
    # One lock around the look-up and the making: two threads instrumenting at once
    # must not make two (the SDK would keep the first's instruments and the second's
    # members would never be observed). Not _observed_lock: making registers callbacks
    # with the SDK, whose collection, holding its own lock, takes _observed_lock.
    with _making_lock:
        table: Any = _observed_by_meter if _weakrefable(meter) else _observed_by_id
        key = meter if table is _observed_by_meter else id(meter)
        found: _Observed | None = table.get(key)
        if found is None:
            found = table[key] = _Observed(meter)
        return found


def _client_id(producer: Any) -> str | None:
    """The ``client_id`` of the client ``producer`` sends through, if it has one."""
    options = getattr(getattr(producer, "client", None), "options", None)
    client_id = getattr(getattr(options, "connection", None), "client_id", None)
    return client_id if isinstance(client_id, str) else None


_SYS = "messaging.system"
_DEST = "messaging.destination.name"
_PART = "messaging.destination.partition.id"


def _histogram(
    meter: Any, name: str, unit: str, description: str, buckets: tuple[float, ...]
) -> Any:
    try:
        return meter.create_histogram(
            name, unit, description, explicit_bucket_boundaries_advisory=list(buckets)
        )
    except TypeError:  # opentelemetry-api < 1.23: no advisory boundaries
        return meter.create_histogram(name, unit, description)


def instrument(
    producer: Any,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    access_logs: bool = True,
    traces: bool = True,
    max_topics: int = DEFAULT_MAX_TOPICS,
) -> ProducerInstrumentation:
    """Spans and metrics for ``producer`` (a :class:`kafka_asgi.Producer`).

    ``tracer_provider``/``meter_provider`` default to the global ones;
    ``access_logs=False`` leaves out the middleware event counters (give them to one
    producer only when instrumenting several); ``traces=False`` records metrics only;
    ``max_topics`` bounds the distinct ``messaging.destination.name`` values of its
    metrics (further topics: ``<other>``).
    """
    if not callable(getattr(producer, "add_hooks", None)):
        raise TypeError(
            f"instrument() needs a kafka_asgi Producer (with add_hooks), not {producer!r}"
        )
    hooks = ProducerInstrumentation(
        producer,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        access_logs=access_logs,
        traces=traces,
        max_topics=max_topics,
    )
    producer.add_hooks(hooks)
    return hooks
