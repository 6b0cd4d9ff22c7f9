"""A ``logging.Handler`` that ships log records to Kafka as JSON events.

``emit`` never waits on the network, the event loop or the producer: a record
logged on the producer's event loop thread goes to ``send_nowait`` directly; one
logged on any other thread is handed to the loop through the lifespan's
thread-safe sender (a bounded queue). Records logged before a kafka_asgi lifespan
runs in the process (module import time, say) wait in the handler's own bounded
queue and go out with the first record after it started. Whatever does not fit is
counted in ``dropped``, never raised into the logging call.

::

    import logging
    from kafka_asgi.integrations.logging import KafkaLogHandler

    logging.getLogger("myapp").addHandler(KafkaLogHandler("app-logs"))
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from kafka_asgi.integrations.event_logger import default_serializer
from kafka_asgi.integrations.sender import get_sender

__all__ = ["KafkaLogHandler"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)).keys()
) | {"message", "asctime", "taskName"}


class KafkaLogHandler(logging.Handler):
    """Ship each record as one JSON event to ``topic`` on the producer of ``cluster``.

    Event fields: ``timestamp`` (ms since the epoch), ``level``, ``logger``,
    ``message`` (the handler's formatter output if one is set, else the record's
    message), ``module``, ``function``, ``line``, ``thread``, ``process``,
    ``exception`` (formatted traceback, if any), ``stack`` (if ``stack_info``), every
    ``extra=`` attribute of the record, then the handler's static ``extra`` fields.

    ``max_queue`` bounds the records kept while no producer runs in the process;
    ``dropped`` counts every record that could not be handed over (queue full,
    producer buffer full, serializer failure). Records of kafka_asgi's own loggers
    are skipped unless ``include_own_logs`` (shipping the producer's own
    "Kafka unreachable" warnings through the producer would feed back into it).
    """

    def __init__(
        self,
        topic: str,
        *,
        cluster: str = "default",
        level: int | str = logging.NOTSET,
        max_queue: int = 10_000,
        key: Callable[[logging.LogRecord], bytes | str | None] | None = None,
        extra: Mapping[str, Any] | None = None,
        serializer: Callable[[dict[str, Any]], bytes | str] = default_serializer,
        include_own_logs: bool = False,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty str, not {topic!r}")
        if not isinstance(cluster, str) or not cluster:
            raise ValueError(f"cluster must be a non-empty str, not {cluster!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive int, not {max_queue!r}")
        for name, fn in (("key", key), ("serializer", serializer)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, not {fn!r}")
        super().__init__(level)
        self.topic = topic
        self.cluster = cluster
        self.max_queue = max_queue
        self.key = key
        self.extra = dict(extra) if extra else None
        self.serializer = serializer
        self.include_own_logs = include_own_logs
        self.sent = 0
        self.dropped = 0
        self._pending: deque[tuple[bytes | str, bytes | str | None]] = deque()
        self._local = threading.local()

    def event(self, record: logging.LogRecord) -> dict[str, Any]:
        """The event for ``record`` (override to change its shape)."""
        event: dict[str, Any] = {
            "timestamp": int(record.created * 1000),
            "level": record.levelname,
            "logger": record.name,
            "message": self.format(record) if self.formatter else record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.threadName,
            "process": record.process,
        }
        if record.exc_info and record.exc_info[0] is not None:
            event["exception"] = "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            event["exception"] = record.exc_text
        if record.stack_info:
            event["stack"] = record.stack_info
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRS and name not in event:
                event[name] = value
        if self.extra:
            event.update(self.extra)
        return event

    def emit(self, record: logging.LogRecord) -> None:
        if not self.include_own_logs and record.name.startswith("kafka_asgi"):
            return
        # A record logged while this thread is inside emit (a serializer or the
        # producer logging) would recurse; it is skipped, not counted.
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            try:
                value = self.serializer(self.event(record))
                key = self.key(record) if self.key is not None else None
            except Exception:
                self.dropped += 1
                self.handleError(record)
                return
            self._ship(value, key)
        finally:
            self._local.busy = False

    def _ship(self, value: bytes | str, key: bytes | str | None) -> None:
        # logging.Handler.handle holds self.lock around emit: the pending queue and
        # the counters are only touched under it.
        sender = get_sender(self.cluster)
        if sender is None:
            if len(self._pending) >= self.max_queue:
                self.dropped += 1
            else:
                self._pending.append((value, key))
            return
        while self._pending:
            pending_value, pending_key = self._pending.popleft()
            self._send(sender.send_nowait, pending_value, pending_key)
        self._send(sender.send_nowait, value, key)

    def _send(self, send: Callable[..., None], value: bytes | str, key: bytes | str | None) -> None:
        try:
            send(self.topic, value, key)
        except Exception:
            self.dropped += 1
        else:
            self.sent += 1

    @property
    def pending(self) -> int:
        """Records waiting for a producer to start in this process."""
        return len(self._pending)
