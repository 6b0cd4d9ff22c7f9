"""A producer on its own event loop in a daemon thread, for code with no event loop.

WSGI servers (and plain scripts) run no event loop; :class:`BackgroundProducer` runs
one in a daemon thread, created lazily in the process that uses it (so a pre-fork
server's workers each start their own after the fork, never inheriting the
parent's), with :func:`~kafka_asgi.integrations.lifespan.producer_lifespan` and a
:class:`~kafka_asgi.integrations.sender.ThreadSafeSender` on it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import anyio

from kafka_asgi.integrations.lifespan import LifespanOptions, producer_lifespan
from kafka_asgi.integrations.sender import ThreadSafeSender, call_soon_threadsafe, get_sender

__all__ = ["BackgroundProducer"]

logger = logging.getLogger("kafka_asgi.integrations")


class BackgroundProducer:
    """A producer running on its own event loop in a daemon thread (WSGI deployments).

    ``producer_lifespan_kwargs`` are the options of
    :class:`~kafka_asgi.integrations.lifespan.LifespanOptions` (bootstrap, producer
    options, cluster, startup/shutdown behaviour). :meth:`ensure_started` is cheap
    after the first call and restarts the thread in a forked child, where the
    parent's thread does not exist.
    """

    def __init__(self, **producer_lifespan_kwargs: Any) -> None:
        # Validated here, in the caller's thread, not in the background thread.
        self.options = LifespanOptions.from_kwargs("BackgroundProducer", producer_lifespan_kwargs)
        self._kwargs = self.options.as_kwargs()
        self.cluster: str = self.options.cluster
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: Callable[[], None] | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.sender: ThreadSafeSender | None = None

    def ensure_started(self, timeout: float = 10.0) -> ThreadSafeSender:
        if self._pid == os.getpid() and self.sender is not None:
            return self.sender
        with self._lock:
            if self._pid != os.getpid():
                self._thread = None
                self.sender = None
                self._ready = threading.Event()
                self._error = None
            if self._thread is None:
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name=f"kafka-asgi-producer-{self.cluster}", daemon=True
                )
                self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"background producer for {self.cluster!r} not up after {timeout}s")
        if self._error is not None:
            raise RuntimeError(
                f"background producer for {self.cluster!r} failed to start: {self._error}"
            ) from self._error
        assert self.sender is not None
        return self.sender

    def stop(self, timeout: float = 15.0) -> None:
        """Flush (within the lifespan's shutdown_timeout) and stop the thread."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        if self._stop is not None:
            self._stop()
        thread.join(timeout)
        self._thread = None
        self.sender = None

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException as exc:
            self._error = exc
            logger.error("kafka_asgi: background producer thread ended: %r", exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        stop = anyio.Event()
        schedule = call_soon_threadsafe()
        self._stop = lambda: schedule(stop.set)
        async with producer_lifespan(**self._kwargs):
            self.sender = get_sender(self.cluster)
            self._ready.set()
            await stop.wait()
