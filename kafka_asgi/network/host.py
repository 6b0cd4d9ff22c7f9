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
import math
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

__all__ = ["TaskHost", "keep_running", "withdraw_stray_cancellation"]

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


# keep_running: the pause before a task that failed runs again, doubling up to the cap.
_RESTART_DELAY = 0.1
_RESTART_DELAY_CAP = 30.0


def _uncancel() -> None:
    """Withdraw an asyncio task's pending cancellation request after handling it (a
    later cancel scope in the task would otherwise take it as a new one)."""
    if _in_trio():
        return
    import asyncio

    try:
        task = asyncio.current_task()
    except RuntimeError:
        return
    # Task.cancelling()/uncancel(): Python 3.11+ (3.10 keeps no count to withdraw).
    if task is not None and getattr(task, "cancelling", lambda: 0)():
        task.uncancel()  # type: ignore[attr-defined,unused-ignore]


def withdraw_stray_cancellation(
    exc: BaseException,
    tg: anyio.abc.TaskGroup | None,
    what: str,
    owner: str,
    stopping: bool = False,
) -> bool:
    """``what``, a task of ``owner``'s task group ``tg``, caught the cancellation
    ``exc``: True if no one who may stop it asked for it, which is then logged and
    withdrawn so that the task goes on.

    On asyncio a cancellation can reach a task that no cancel scope of its own or of
    its owner ordered (``Task.cancel()`` from elsewhere, one leaking from a cancel
    scope, the event loop shutting down).  A task ended by it makes anyio cancel the
    whole task group, and with it every other background task, silently.  A
    cancellation ordered by the task group (``stopping``: its owner is closing) or by
    a cancel scope around the task is not stray: anyio goes on cancelling, so the
    task must end.
    """
    if (
        tg is None
        or stopping
        or tg.cancel_scope.cancel_called
        or anyio.current_effective_deadline() == -math.inf
    ):
        return False
    logger.error(
        "%s: %s was cancelled while it runs (not by its aclose()); it goes on",
        owner,
        what,
        exc_info=exc,
    )
    _uncancel()
    return True


async def keep_running(
    body: Callable[[], Awaitable[object]],
    tg: anyio.abc.TaskGroup | None,
    what: str,
    owner: str,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``body()`` (a background task of ``owner``'s task group ``tg``) until it
    returns.  Ended by an unexpected exception (a bug) or by a stray cancellation
    (see :func:`withdraw_stray_cancellation`), it is logged and run again, after a
    pause doubling from 0.1 s to 30 s: one task failing must not stop the others,
    as anyio's task group would by cancelling them all."""
    delay = 0.0
    while True:
        started = anyio.current_time()
        try:
            if delay:
                await anyio.sleep(delay)
            await body()
            return
        except anyio.get_cancelled_exc_class() as exc:
            if not withdraw_stray_cancellation(exc, tg, what, owner, stopping()):
                raise
        except Exception:
            logger.exception("%s: %s failed; it runs again", owner, what)
        if anyio.current_time() - started > _RESTART_DELAY_CAP + delay:
            delay = 0.0  # it had been running a while: a new failure starts the pauses over
        delay = min(max(delay * 2, _RESTART_DELAY), _RESTART_DELAY_CAP)


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
