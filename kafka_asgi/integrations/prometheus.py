"""Prometheus metrics for producers and access-log middlewares (extra ``prometheus``).

    from kafka_asgi.integrations.prometheus import metrics_app, register
    register(producer)                      # in the worker, e.g. in the lifespan
    app.add_route("/metrics", metrics_app())  # or any ASGI router

Several worker processes (uvicorn ``--workers``, gunicorn): set the environment
variable ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts
(prometheus-client's multiprocess mode); each worker writes its values there and
:func:`metrics_app` serves the sum over the workers, whichever worker answers. Gauges
count live workers only (mode ``livesum``); call
``prometheus_client.multiprocess.mark_process_dead(pid)`` from gunicorn's
``child_exit`` hook so a dead worker's gauges go.

Names (``_total`` counters, base units): ``kafka_asgi_producer_records_sent_total``,
``..._records_failed_total``, ``..._records_retried_total``,
``..._sent_bytes_total``, ``..._batches_sent_total`` (label ``topic``;
``error_type`` on failed/retried), ``..._throttle_seconds_total`` (what brokers
enforcing a quota asked the client to wait, from ``stats()``); gauges
``kafka_asgi_producer_buffered_records``, ``..._buffer_limit_records``,
``..._in_flight_records``, ``..._in_flight_requests``;
histograms ``kafka_asgi_producer_request_duration_seconds`` and
``kafka_asgi_producer_batch_size_bytes``; and
``kafka_asgi_access_log_events_{emitted,dropped,sampled_out}_total`` (label
``middleware``).  Disk spill (``spill_dir``): counters
``kafka_asgi_producer_spilled_records_total``, ``..._spilled_bytes_total``,
``..._replayed_records_total``, ``..._spill_dropped_records_total``,
``..._spill_lost_records_total``; gauges ``..._spill_queued_records`` and
``..._spill_backlog_bytes`` (copied from ``stats()``, zero without spill).

The ``topic`` label takes the first ``max_topics`` (default 100) topics seen in the
process; the metrics of any further topic are labelled ``<other>`` (one warning), so
that an app naming topics from data cannot grow the series without end.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )
    from prometheus_client.metrics_core import Metric
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "kafka_asgi.integrations.prometheus needs prometheus-client: "
        "pip install 'kafka-asgi[prometheus]'"
    ) from exc

from kafka_asgi.integrations.metric_labels import (
    DEFAULT_MAX_TOPICS,
    TopicLabels,
    check_max_topics,
)
from kafka_asgi.integrations.middleware_stats import middleware_totals
from kafka_asgi.integrations.producer_api import producer_closed
from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks

__all__ = ["MetricsApp", "PrometheusMetrics", "metrics_app", "multiprocess_mode", "register"]

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_SIZE_BUCKETS = tuple(float(64 * 4**i) for i in range(10))  # 64 B .. 16 MiB
_MIDDLEWARE_FIELDS = ("emitted", "dropped", "sampled_out")


def multiprocess_mode() -> bool:
    """True when prometheus-client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ


class _SyncCollector:
    """Collects nothing itself: brings the gauges up to date just before a scrape."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = weakref.ref(metrics)

    def describe(self) -> Iterable[Metric]:
        # Defined so that registering does not collect (the metrics are not made yet).
        return []

    def collect(self) -> Iterable[Metric]:
        metrics = self._metrics()
        if metrics is not None:
            metrics.sync()
        return []


_SPILL_COUNTERS = (
    ("spilled", "spilled_records", "Records written to spill_dir"),
    ("spilled_bytes", "spilled_bytes", "Bytes of the frames written to spill_dir"),
    ("replayed", "replayed_records", "Records read back from spill_dir"),
    ("spill_dropped", "spill_dropped_records", "Records the spill could not keep, reported"),
    ("spill_lost", "spill_lost_records", "Records in damaged spill frames, reported"),
)


class PrometheusMetrics(ProducerHooks):
    """The metric families of one registry and the producers feeding them.

    Counters and histograms are updated by the producers' hooks as batches and
    requests complete; gauges, the spill's and throttling counters and the
    middlewares' counters are copied from ``stats()`` by :meth:`sync`: before each
    scrape of this process's registry, and, in multiprocess mode, every
    ``sync_interval`` seconds by a daemon thread (another worker may answer the
    scrape). The ``topic`` label is one of the first ``max_topics`` topics seen, or
    ``<other>`` (see :mod:`kafka_asgi.integrations.metric_labels`).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        sync_interval: float = 1.0,
        max_topics: int = DEFAULT_MAX_TOPICS,
    ) -> None:
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        self.sync_interval = sync_interval
        self.topics = TopicLabels(max_topics, "Prometheus metrics")
        self._producers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, int]] = {}  # the middlewares' totals copied, by kind
        # The stats() totals copied so far, by producer (spill) and by client
        # (throttling: a client shared by producers has one sum): a producer removed
        # between two syncs takes only its own totals with it.
        self._copied: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
        self._thread_pid = 0
        ns = "kafka_asgi"
        if not multiprocess_mode():
            # Registered first, so a scrape collects the gauges after it updated them.
            reg.register(_SyncCollector(self))
        self.records_sent_total = Counter(
            "producer_records_sent",
            "Records acknowledged by Kafka",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.records_failed_total = Counter(
            "producer_records_failed",
            "Records reported as not delivered",
            ["topic", "error_type"],
            namespace=ns,
            registry=reg,
        )
        self.records_retried_total = Counter(
            "producer_records_retried",
            "Record sends repeated after a retriable error",
            ["topic", "error_type"],
            namespace=ns,
            registry=reg,
        )
        self.throttle_seconds_total = Counter(
            "producer_throttle_seconds",
            "Time the brokers asked the producer to wait (client quotas, KIP-219)",
            namespace=ns,
            registry=reg,
        )
        self.sent_bytes_total = Counter(
            "producer_sent_bytes",
            "Bytes of acknowledged record batches",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.batches_sent_total = Counter(
            "producer_batches_sent",
            "Acknowledged record batches",
            ["topic"],
            namespace=ns,
            registry=reg,
        )
        self.buffered_records = Gauge(
            "producer_buffered_records",
            "Records held and not in flight",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.buffer_limit_records = Gauge(
            "producer_buffer_limit_records",
            "max_buffering: records the producers hold at most",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.in_flight_records = Gauge(
            "producer_in_flight_records",
            "Records in Produce requests awaiting their answer",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.in_flight_requests = Gauge(
            "producer_in_flight_requests",
            "Produce requests awaiting their answer",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.request_duration_seconds = Histogram(
            "producer_request_duration_seconds",
            "Duration of Produce requests (write to answer)",
            namespace=ns,
            registry=reg,
            buckets=_DURATION_BUCKETS,
        )
        self.batch_size_bytes = Histogram(
            "producer_batch_size_bytes",
            "Encoded size of the record batches sent",
            namespace=ns,
            registry=reg,
            buckets=_SIZE_BUCKETS,
        )
        # Disk spill: stats() field -> counter (copied by sync(), as deltas).
        self.spill_totals = {
            field: Counter(
                f"producer_{name}",
                doc,
                namespace=ns,
                registry=reg,
            )
            for field, name, doc in _SPILL_COUNTERS
        }
        self.spill_queued_records = Gauge(
            "producer_spill_queued_records",
            "Records in memory waiting to be written to spill_dir",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.spill_backlog_bytes = Gauge(
            "producer_spill_backlog_bytes",
            "Bytes in spill_dir not read back yet",
            namespace=ns,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.access_log_events_total = {
            field: Counter(
                f"access_log_events_{field}",
                f"Access-log events {field.replace('_', ' ')} by the middlewares",
                ["middleware"],
                namespace=ns,
                registry=reg,
            )
            for field in _MIDDLEWARE_FIELDS
        }

    # ------------------------------------------------------------------ producers

    def add_producer(self, producer: Any) -> None:
        if not callable(getattr(producer, "add_hooks", None)):
            raise TypeError(
                f"register() needs a kafka_asgi Producer (with add_hooks), not {producer!r}"
            )
        with self._lock:
            if producer in self._producers:
                return
            self._producers.add(producer)
        producer.add_hooks(self)
        self._ensure_thread()

    def remove_producer(self, producer: Any) -> None:
        with self._lock:
            if producer not in self._producers:
                return
            self._producers.discard(producer)
        producer.remove_hooks(self)
        self.sync()

    def sync(self) -> None:
        """Copy the producers' gauges and the middlewares' counters into the metrics."""
        with self._lock:
            producers = list(self._producers)
            buffered = in_flight = limit = queued = backlog = 0
            for p in producers:
                s = p.stats()
                if producer_closed(p):
                    # Its last counts are copied below; then it leaves the gauges now,
                    # not when the collector frees it (a lifespan run again makes a
                    # new producer, and a closed one is often kept by cycles).
                    self._producers.discard(p)
                    p.remove_hooks(self)
                else:
                    buffered += s.buffered
                    in_flight += s.in_flight
                    limit += getattr(getattr(p, "options", None), "max_buffering", 0)
                    queued += getattr(s, "spill_queued", 0)
                    backlog += getattr(s, "spill_backlog_bytes", 0)
                # Kept for a closed one too (weakly): registered again, it adds nothing.
                copied = self._copied.setdefault(p, {})
                for field, counter in self.spill_totals.items():
                    self._copy(copied, field, getattr(s, field, 0), counter, 1)
                # What brokers asked this producer's client to wait, for every kind
                # of request (a request quota throttles Metadata and InitProducerId
                # too, not only Produce), as stats().throttle_time_ms sums it.
                client = getattr(p, "client", p)
                self._copy(
                    self._copied.setdefault(client, {}),
                    "throttle_time_ms",
                    getattr(s, "throttle_time_ms", 0),
                    self.throttle_seconds_total,
                    1000,
                )
            self.spill_queued_records.set(queued)
            self.spill_backlog_bytes.set(backlog)
            self.buffered_records.set(buffered)
            self.in_flight_records.set(in_flight)
            self.buffer_limit_records.set(limit)
            for kind, counts in middleware_totals().items():
                seen = self._seen.setdefault(kind, {})
                for field in _MIDDLEWARE_FIELDS:
                    counter = self.access_log_events_total[field].labels(kind)
                    self._copy(seen, field, counts[field], counter, 1)

    @staticmethod
    def _copy(copied: dict[str, int], field: str, now: int, counter: Any, unit: int) -> None:
        """Add to ``counter`` what total ``field`` grew by since it was last copied."""
        before = copied.get(field, 0)
        if now > before:
            counter.inc((now - before) / unit)
        copied[field] = now

    def _ensure_thread(self) -> None:
        if not multiprocess_mode() or self._thread_pid == os.getpid():
            return
        # A forked worker starts its own: threads do not survive a fork.
        self._thread_pid = os.getpid()
        self._seen.clear()
        self._copied.clear()
        ref = weakref.ref(self)
        interval = self.sync_interval
        threading.Thread(
            target=_sync_loop, args=(ref, interval), name="kafka-asgi-prometheus", daemon=True
        ).start()

    # ------------------------------------------------------------------ hooks

    def request_started(self, info: ProduceRequestInfo) -> Any:
        self.in_flight_requests.inc()
        return time.perf_counter()

    def request_finished(
        self, token: Any, info: ProduceRequestInfo, error: BaseException | None
    ) -> None:
        self.in_flight_requests.dec()
        self.request_duration_seconds.observe(time.perf_counter() - token)
        for p in info.partitions:
            self.batch_size_bytes.observe(p.size)

    def batch_delivered(self, topic: str, partition: int, records: int, size: int) -> None:
        label = self.topics(topic)
        self.records_sent_total.labels(label).inc(records)
        self.sent_bytes_total.labels(label).inc(size)
        self.batches_sent_total.labels(label).inc()

    def records_failed(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self.records_failed_total.labels(self.topics(topic), type(error).__name__).inc(records)

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self.records_retried_total.labels(self.topics(topic), type(error).__name__).inc(records)


def _sync_loop(ref: weakref.ReferenceType[PrometheusMetrics], interval: float) -> None:
    while True:
        time.sleep(interval)
        metrics = ref()
        if metrics is None or metrics._thread_pid != os.getpid():
            return
        try:
            metrics.sync()
        except Exception:  # pragma: no cover - keep syncing whatever one pass met
            pass
        del metrics


_by_registry: dict[int, PrometheusMetrics] = {}
_registry_lock = threading.Lock()


def register(
    producer: Any = None,
    *,
    registry: CollectorRegistry | None = None,
    sync_interval: float = 1.0,
    max_topics: int | None = None,
) -> PrometheusMetrics:
    """The kafka_asgi metrics in ``registry`` (default: prometheus-client's global
    one), made on the first call; ``producer`` (if given) feeds them from now on.

    Call it in each worker process (the lifespan runs there); calling it again with
    another producer adds that producer. The access-log middlewares are counted
    without being passed. ``max_topics`` (default 100) bounds the distinct values of
    the ``topic`` label (further topics are labelled ``<other>``); the metrics of a
    registry have one bound, set by the call that makes them.
    """
    if isinstance(sync_interval, bool) or not isinstance(sync_interval, (int, float)):
        raise ValueError(f"sync_interval must be a number of seconds > 0, not {sync_interval!r}")
    if sync_interval <= 0:
        raise ValueError(f"sync_interval must be a number of seconds > 0, not {sync_interval!r}")
    if max_topics is not None:
        check_max_topics(max_topics)
    reg = REGISTRY if registry is None else registry
    with _registry_lock:
        metrics = _by_registry.get(id(reg))
        if metrics is None or metrics.registry is not reg:
            metrics = _by_registry[id(reg)] = PrometheusMetrics(
                reg, sync_interval, DEFAULT_MAX_TOPICS if max_topics is None else max_topics
            )
        elif max_topics is not None and max_topics != metrics.topics.max_topics:
            raise ValueError(
                f"max_topics={max_topics!r}: the metrics of this registry were made with "
                f"max_topics={metrics.topics.max_topics}"
            )
    if producer is not None:
        metrics.add_producer(producer)
    return metrics


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class MetricsApp:
    """An ASGI app answering every HTTP request with the metrics in the text format
    (a class, not a function, so routers such as Starlette's ``Route`` and FastAPI's
    ``add_route`` serve it as an ASGI app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if multiprocess_mode():
            for metrics in list(_by_registry.values()):
                metrics.sync()
            reg = CollectorRegistry()
            MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
        else:
            reg = REGISTRY if self.registry is None else self.registry
        body = generate_latest(reg)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def metrics_app(registry: CollectorRegistry | None = None) -> MetricsApp:
    """The ASGI app serving ``registry`` (default: prometheus-client's global one):
    ``app.add_route("/metrics", metrics_app())`` (FastAPI/Starlette) or any router.

    In multiprocess mode it serves the sum over all workers' files (a fresh
    ``MultiProcessCollector`` per scrape, as prometheus-client advises), after bringing
    this worker's own values up to date.
    """
    return MetricsApp(registry)
