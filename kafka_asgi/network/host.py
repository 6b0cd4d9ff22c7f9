"""A task group that lives in a task of its own, for objects with start()/aclose().

A task group entered by ``start()`` and exited by ``aclose()`` in the caller's task
breaks as soon as either call is wrapped in a timeout: ``with
anyio.fail_after(5): await producer.start()`` leaves the task group's cancel scope
inside the timeout's, which then exits first ("Attempted to exit a cancel scope
that isn't the current task's current cancel scope" on asyncio, a corrupted cancel
scope stack and TrioInternalError on trio).  Wrapping a start or a close in a
timeout is the most ordinary thing a user does.

So the background tasks of a producer or a client live in a :class:`TaskHost`: a
host task (an asyncio task, or a trio system task) owns the task group from
beginning to end; ``start()`` and ``aclose()`` only signal it and wait, bounded,
and can be called from any task, inside any cancel scope.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

__all__ = ["TaskHost"]

logger = logging.getLogger("kafka_asgi.network")

# How long aclose() waits for the host to finish once its tasks are cancelled
# (they only have connections to close).
_CLOSE_WAIT = 5.0


def _in_trio() -> bool:
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one, else ``exc``."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not inner or len(inner) != 1:
            return exc
        exc = inner[0]


class TaskHost:
    """A task group owned by a host task of its own (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tg: anyio.abc.TaskGroup | None = None
        self._ready = anyio.Event()
        self._done = anyio.Event()
        self._stop = anyio.Event()
        self._error: BaseException | None = None
        self._task: Any = None  # asyncio: a reference, so the task is not collected
        self._started = False

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The hosted task group (``start_soon`` from any task of the event loop)."""
        if self._tg is None or self._done.is_set():
            raise RuntimeError(f"the task group of {self.name} is not running")
        return self._tg

    @property
    def running(self) -> bool:
        return self._tg is not None and not self._done.is_set()

    async def start(
        self, service: Callable[..., Coroutine[Any, Any, Any]] | None = None, *args: Any
    ) -> None:
        """Start the host task, and in its task group ``service(*args,
        task_status=...)`` (as ``TaskGroup.start``); return once it called
        ``task_status.started()``, or raise what it raised before.

        Cancelled meanwhile (the caller's timeout), the host is stopped and waited
        for (bounded) before the cancellation goes on.
        """
        if self._started:
            raise RuntimeError(f"{self.name} can be started once")
        self._started = True
        if _in_trio():
            import trio

            trio.lowlevel.spawn_system_task(self._host, service, args, name=self.name)
        else:
            import asyncio

            self._task = asyncio.get_running_loop().create_task(
                self._host(service, args), name=self.name
            )
        try:
            await self._ready.wait()
        except BaseException:
            self._stop.set()
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_WAIT):
                await self._done.wait()
            raise
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def _host(
        self, service: Callable[..., Coroutine[Any, Any, Any]] | None, args: Any
    ) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stopper, tg)
                if service is not None:
                    await tg.start(service, *args)
                self._tg = tg
                self._ready.set()
        except Exception as exc:
            if not self._ready.is_set():
                self._error = _single(exc)
            else:
                logger.error("%s: background task failed", self.name, exc_info=exc)
        finally:
            self._done.set()
            self._ready.set()

    async def _stopper(self, tg: anyio.abc.TaskGroup) -> None:
        """Cancel the task group when asked to stop (and end with the other tasks)."""
        await self._stop.wait()
        tg.cancel_scope.cancel()

    async def aclose(self, timeout: float = _CLOSE_WAIT) -> None:  # noqa: ASYNC109
        """Cancel the hosted tasks and wait (shielded, at most ``timeout``) for the
        host to finish.  Any task may call it, inside any cancel scope."""
        if not self._started:
            return
        self._stop.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            await self._done.wait()
        if not self._done.is_set():
            logger.warning(
                "%s: background tasks still running %.1fs after close", self.name, timeout
            )
