"""OpenTelemetry spans and metrics for a producer (extra ``otel``: opentelemetry-api).

    from kafka_asgi.integrations.otel import instrument
    instrument(producer)              # global tracer and meter providers by default

Spans follow OpenTelemetry's messaging semantic conventions for Kafka: one PRODUCER
span per sync ``await send()`` (in the caller's trace, with the offset Kafka returned)
and one CLIENT span per Produce request of the background sender (a root span: it
carries records of many requests); none per ``send_nowait`` record.

Metrics (instrument names below, attributes ``messaging.system="kafka"`` and, per
topic, ``messaging.destination.name``): records sent/failed/retried, bytes and batches
sent, the buffer's fill and limit, records and requests in flight, the Produce request
duration (``messaging.client.operation.duration``) and batch size histograms, the
disk spill's counters (``kafka_asgi.producer.spill.*``), the time brokers
enforcing a quota asked the client to wait (``kafka_asgi.producer.throttle.time``),
and the access-log middlewares' emitted/dropped/sampled-out events.
"""

from __future__ import annotations

import time
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

from kafka_asgi.integrations.middleware_stats import middleware_totals
from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks
from kafka_asgi.protocol.errors import error_for_code

__all__ = ["ProducerInstrumentation", "instrument"]

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
    """The hooks :func:`instrument` installs; ``uninstrument()`` removes them."""

    def __init__(
        self,
        producer: Any,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        access_logs: bool = True,
        traces: bool = True,
    ) -> None:
        self.producer = producer
        self.active = True
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
        self._instruments: list[Any] = [
            meter.create_observable_gauge(
                "kafka_asgi.producer.buffer.records",
                [self._observe("buffered")],
                "{record}",
                "Records held and not in flight",
            ),
            meter.create_observable_gauge(
                "kafka_asgi.producer.buffer.limit",
                [self._observe_limit],
                "{record}",
                "max_buffering: records the producer holds at most",
            ),
            meter.create_observable_gauge(
                "kafka_asgi.producer.in_flight.records",
                [self._observe("in_flight")],
                "{record}",
                "Records in Produce requests awaiting their answer",
            ),
            meter.create_observable_gauge(
                "kafka_asgi.producer.in_flight.requests",
                [self._observe_requests],
                "{request}",
                "Produce requests awaiting their answer",
            ),
        ]
        # What brokers enforcing a client quota asked the producer's client to wait
        # (KIP-219), for any kind of request: stats().throttle_time_ms, in seconds.
        self._instruments.append(
            meter.create_observable_counter(
                "kafka_asgi.producer.throttle.time",
                [self._observe_throttle],
                "s",
                "Time the brokers asked the producer's client to wait (client quotas)",
            )
        )
        # Disk spill (spill_dir): cumulative counters and gauges from stats().
        for field, name, unit, doc in _SPILL_INSTRUMENTS:
            make = (
                meter.create_observable_counter
                if field in _SPILL_COUNTERS
                else (meter.create_observable_gauge)
            )
            self._instruments.append(make(name, [self._observe(field)], unit, doc))
        if access_logs:
            for field in ("emitted", "dropped", "sampled_out"):
                self._instruments.append(
                    meter.create_observable_counter(
                        f"kafka_asgi.access_log.events.{field}",
                        [self._observe_middlewares(field)],
                        "{event}",
                        f"Access-log events {field.replace('_', ' ')} by the middlewares",
                    )
                )

    # ------------------------------------------------------------------ observable

    def _observe(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return []
            return [Observation(getattr(self.producer.stats(), field), {_SYS: _SYSTEM})]

        return callback

    def _observe_throttle(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return []
        return [Observation(self.producer.stats().throttle_time_ms / 1000, {_SYS: _SYSTEM})]

    def _observe_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        limit = getattr(getattr(self.producer, "options", None), "max_buffering", None)
        if not self.active or limit is None:
            return []
        return [Observation(limit, {_SYS: _SYSTEM})]

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return []
        return [Observation(self._requests_in_flight, {_SYS: _SYSTEM})]

    @staticmethod
    def _observe_middlewares(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(counts[field], {"kafka_asgi.middleware": kind})
                for kind, counts in middleware_totals().items()
            ]

        return callback

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
            attrs[_DEST] = next(iter(topics))
        if kind is not None:
            attrs["error.type"] = kind
        self._duration.record(elapsed, attrs)
        for p in info.partitions:
            self._batch_size.record(p.size, {_SYS: _SYSTEM, _DEST: p.topic})
        if span is not None:
            if len(info.partitions) == 1 and info.partitions[0].base_offset >= 0:
                span.set_attribute("messaging.kafka.offset", info.partitions[0].base_offset)
            if kind is not None:
                span.set_attribute("error.type", kind)
                span.set_status(StatusCode.ERROR, str(error) if error is not None else kind)
            span.end()

    def batch_delivered(self, topic: str, partition: int, records: int, size: int) -> None:
        attrs = {_SYS: _SYSTEM, _DEST: topic}
        self._sent.add(records, attrs)
        self._bytes.add(size, attrs)
        self._batches.add(1, attrs)

    def records_failed(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self._failed.add(records, {_SYS: _SYSTEM, _DEST: topic, "error.type": type(error).__name__})

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self._retried.add(
            records, {_SYS: _SYSTEM, _DEST: topic, "error.type": type(error).__name__}
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
        nothing from now on."""
        if self.active:
            self.active = False
            self.producer.remove_hooks(self)


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
) -> ProducerInstrumentation:
    """Spans and metrics for ``producer`` (a :class:`kafka_asgi.Producer`).

    ``tracer_provider``/``meter_provider`` default to the global ones;
    ``access_logs=False`` leaves out the middleware event counters (give them to one
    producer only when instrumenting several); ``traces=False`` records metrics only.
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
    )
    producer.add_hooks(hooks)
    return hooks
