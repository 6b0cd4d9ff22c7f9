"""Freezing a broker process for fault tests: SIGSTOP that has taken effect.

``kill(SIGSTOP)`` returns before the process stops: each of the JVM's threads stops
the next time the kernel schedules it, and on a loaded machine a broker thread that
is running can still read and answer a request for some milliseconds. A test that
freezes a broker and then sends it a request must know the broker is stopped;
:func:`freeze_group` returns only once every thread is.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_STOPPED = {"T", "t"}  # stopped (job control), traced-stopped
_GONE = {"Z", "X"}  # a thread that has exited does not answer either


def _thread_states(pid: int) -> dict[str, str]:
    """Each live thread of ``pid``: its state letter from /proc (``{}``: no process)."""
    states: dict[str, str] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return states
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited meanwhile
        # "tid (comm) S ...": comm may hold spaces and parentheses.
        states[task.name] = stat[stat.rindex(")") + 2]
    return states


def freeze_group(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP the process group ``pid`` leads; return once every thread of ``pid``
    is stopped (AssertionError naming the threads still running after ``timeout``)."""
    os.killpg(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        states = _thread_states(pid)
        assert states, f"process {pid} is gone"
        running = {t: s for t, s in states.items() if s not in _STOPPED | _GONE}
        if not running:
            return
        assert time.monotonic() < deadline, (
            f"process {pid} not stopped {timeout}s after SIGSTOP; threads still running: {running}"
        )
        time.sleep(0.001)


def thaw_group(pid: int) -> None:
    """SIGCONT the process group ``pid`` leads."""
    os.killpg(pid, signal.SIGCONT)
