"""What the producer tells observers: a small interface, called per batch and per
request (never per ``send_nowait`` record), and not at all when no hook is installed.

The OpenTelemetry and Prometheus integrations (``kafka_asgi.integrations.otel`` /
``.prometheus``) implement it; install one with ``producer.add_hooks(hooks)``.
A hook must be quick and must not raise (what it raises is logged and dropped: an
observer never breaks delivery).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .validation import coerce_headers

__all__ = [
    "CompositeHooks",
    "ProduceRequestInfo",
    "ProducedPartition",
    "ProducerHooks",
    "trace_injector",
]

logger = logging.getLogger("kafka_asgi.producer")


class ProducedPartition(NamedTuple):
    """One partition's record batch in a Produce request, and what Kafka answered."""

    topic: str
    partition: int
    records: int
    """Records in the batch."""
    size: int
    """Encoded record batch, bytes."""
    base_offset: int = -1
    """Offset of the batch's first record (-1: unknown, acks=0, or not stored)."""
    error_code: int = 0
    """Kafka's error code for the partition (0: stored)."""


class ProduceRequestInfo(NamedTuple):
    """A Produce request of the background sender, as handed to ``request_started``."""

    node: int
    partitions: Sequence[ProducedPartition]
    throttle_time_ms: int = 0
    """In ``request_finished``: how long the broker asked the client to wait before
    its next request (a client quota, KIP-219); 0 when not throttled."""


class ProducerHooks:
    """No-op base: subclass and override what you need."""

    def request_started(self, info: ProduceRequestInfo) -> Any:
        """A Produce request is about to be written; the value returned is passed back
        to :meth:`request_finished` (a start time, a span...)."""
        return None

    def request_finished(
        self,
        token: Any,
        info: ProduceRequestInfo,
        error: BaseException | None,
    ) -> None:
        """The request is over: ``info.partitions`` carry Kafka's per-partition answers,
        or ``error`` says why there was no answer (connection lost, timeout...)."""

    def batch_delivered(self, topic: str, partition: int, records: int, size: int) -> None:
        """Kafka acknowledged a batch of ``records`` (``size`` bytes encoded)."""

    def records_failed(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        """``records`` were reported as not delivered (to error_handle/on_delivery)."""

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        """A batch of ``records`` will be sent again after a retriable error."""

    def send_started(self, topic: str, partition: int | None) -> Any:
        """A sync ``await send()`` begins (in the caller's task and context); the value
        returned is passed back to :meth:`send_finished`."""
        return None

    def send_finished(self, token: Any, metadata: Any, error: BaseException | None) -> None:
        """The ``send()`` is over: ``metadata`` is its RecordMetadata, or ``error`` what
        it raised."""


class CompositeHooks(ProducerHooks):
    """Several hooks installed on one producer, called in order."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: Sequence[ProducerHooks]) -> None:
        self.hooks = tuple(hooks)

    def request_started(self, info: ProduceRequestInfo) -> Any:
        return tuple(call_hook(h.request_started, info) for h in self.hooks)

    def request_finished(
        self, token: Any, info: ProduceRequestInfo, error: BaseException | None
    ) -> None:
        for h, t in zip(self.hooks, token, strict=True):
            call_hook(h.request_finished, t, info, error)

    def batch_delivered(self, topic: str, partition: int, records: int, size: int) -> None:
        for h in self.hooks:
            call_hook(h.batch_delivered, topic, partition, records, size)

    def records_failed(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        for h in self.hooks:
            call_hook(h.records_failed, topic, partition, records, error)

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        for h in self.hooks:
            call_hook(h.records_retried, topic, partition, records, error)

    def send_started(self, topic: str, partition: int | None) -> Any:
        return tuple(call_hook(h.send_started, topic, partition) for h in self.hooks)

    def send_finished(self, token: Any, metadata: Any, error: BaseException | None) -> None:
        for h, t in zip(self.hooks, token, strict=True):
            call_hook(h.send_finished, t, metadata, error)


def call_hook(fn: Any, *args: Any) -> Any:
    """Call one hook method, logging (never raising) what it raises."""
    try:
        return fn(*args)
    except Exception:
        logger.exception("kafka_asgi producer: hook %r raised", fn)
        return None


class _Installed(CompositeHooks):
    """The hooks installed on one producer, in the order ``add_hooks`` got them.

    Its own class so that a :class:`CompositeHooks` a user installs stays one
    member, never flattened into the others: ``remove_hooks`` takes out what
    ``add_hooks`` was given, and leaves the user's composite as the user built it.
    """

    __slots__ = ()


def combine(current: ProducerHooks | None, added: ProducerHooks) -> ProducerHooks:
    """``current`` with ``added`` installed after it."""
    if current is None:
        return added
    if isinstance(current, _Installed):
        return _Installed((*current.hooks, added))
    return _Installed((current, added))


def without(current: ProducerHooks | None, removed: ProducerHooks) -> ProducerHooks | None:
    """``current`` with ``removed`` taken out (None when nothing is left)."""
    if current is removed:
        return None
    if isinstance(current, _Installed):
        left = [h for h in current.hooks if h is not removed]
        if not left:
            return None
        return left[0] if len(left) == 1 else _Installed(left)
    return current


def trace_injector() -> Callable[[Any], Any]:
    """``headers -> headers`` adding the current OpenTelemetry context through the
    configured propagator (``inject_trace_context=True``). Headers the caller set
    itself win. Needs opentelemetry-api (imported here, not before)."""
    try:
        from opentelemetry import propagate
    except ImportError as exc:
        raise ImportError(
            "inject_trace_context=True needs opentelemetry-api: pip install 'kafka-asgi[otel]'"
        ) from exc
    inject = propagate.inject

    def add(headers: Any) -> Any:
        # Checked first, so that bad headers raise what they raise without injection.
        items = coerce_headers(headers)
        carrier: dict[str, str] = {}
        inject(carrier)
        if not carrier:
            return items
        if items is None:
            return [(k, v.encode()) for k, v in carrier.items()]
        have = {k for k, _ in items}
        items.extend((k, v.encode()) for k, v in carrier.items() if k not in have)
        return items

    return add
