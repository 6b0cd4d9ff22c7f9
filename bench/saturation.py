"""Pinned saturation and uvloop middleware rows (issue 17, items 2 and 4).

    python -m bench --only pinned [--quick]    # (a)/(b)/(d), 1 and 4 workers, pinned
    python -m bench --only uvloop [--quick]    # (a)/(b) on asyncio and uvloop (with
                                               # bench/peers.py's producer rows)

The apps and variants are bench/middleware.py's (bench/apps/): (a) no access log,
(b) kafka_asgi's AccessLogMiddleware, (d) (b) with Kafka stopped.  What differs:

- Pinned: the uvicorn server (every worker) runs on one core (``taskset -c``,
  BENCH_SERVER_CPU, default the last core), the benchmark driver and so wrk on
  another (``sched_setaffinity``, BENCH_LOAD_CPU, default core 0), and the broker too
  when it is this worktree's scripts/kafka_local.py broker (its pid from
  ``.kafka/broker.pid``, or BENCH_BROKER_PID; restored to every core afterwards).
  Other processes on the machine are not moved: on a shared machine they still run
  on both cores, and the report says what the load average was.
- One server at a time: each measurement starts the variant's server, loads it for a
  warm-up second, measures, and stops it, so no idle server (nor (d)'s reconnect
  attempts) shares the server core with the one measured.
- Variants alternated: each repetition measures every variant once, in an order
  rotated from one repetition to the next; cells are medians with the min-max
  spread, and "vs (a)" is the median of the paired per-repetition ratios.
- wrk, 1 thread, 16 keep-alive connections, at saturation (wrk must be installed:
  ``apt-get install wrk``; the httpx fallback cannot saturate these servers).
- Besides req/s and latency, the server's CPU time per request (every process of the
  server, from /proc, over the measured window): on a shared machine the req/s of a
  pinned server still moves with whatever else runs on its core; CPU per request
  hardly does.
- uvicorn with ``--http h11`` and ``--loop asyncio`` (or ``uvloop``, the uvloop rows).
- The 4-worker rows: ``--workers 4``, all four pinned to the server core; each
  worker has its own counters, so the check that every request of (b) was logged
  counts the events in Kafka instead (the topic's end offset before and after).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    ROOT,
    BenchError,
    Context,
    Result,
    end_offset,
    free_port,
    human,
    markdown_table,
)
from bench.middleware import APPS, STATS_PATH, VARIANTS, Load, check_logged, wrk

PINNED_SECTION = "pinned"
UVLOOP_SECTION = "uvloop"


# ---------------------------------------------------------------------- cores


def cores() -> tuple[int, int] | None:
    """(server core, load core), or None where affinity cannot be set."""
    if not hasattr(os, "sched_setaffinity") or not shutil.which("taskset"):
        return None
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return None
    server = int(os.environ.get("BENCH_SERVER_CPU", mine[-1]))
    load = int(os.environ.get("BENCH_LOAD_CPU", mine[0]))
    if server == load:
        raise BenchError(f"BENCH_SERVER_CPU and BENCH_LOAD_CPU are both {server}")
    return server, load


def _broker_pid() -> int | None:
    """This worktree's local broker (scripts/kafka_local.py), or BENCH_BROKER_PID."""
    text = os.environ.get("BENCH_BROKER_PID")
    if text is None:
        with contextlib.suppress(OSError):
            text = (ROOT / ".kafka" / "broker.pid").read_text().strip()
    if not text:
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def _taskset_all(pid: int, cpus: str) -> bool:
    proc = subprocess.run(
        ["taskset", "-a", "-p", "-c", cpus, str(pid)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.returncode == 0


@contextlib.contextmanager
def pinned() -> Iterator[tuple[int | None, str]]:
    """Pin this process (and so wrk) and the broker to the load core; yield the
    server core (None: not pinned) and a note of what was pinned."""
    pair = cores()
    if pair is None:
        yield None, "not pinned (no taskset or fewer than 2 cores)"
        return
    server, load = pair
    before = os.sched_getaffinity(0)
    everyone = ",".join(str(c) for c in sorted(before))
    broker = _broker_pid()
    broker_pinned = broker is not None and _taskset_all(broker, str(load))
    os.sched_setaffinity(0, {load})
    with_broker = " and the broker" if broker_pinned else ""
    note = f"server on core {server}; wrk{with_broker} on core {load}"
    if not broker_pinned:
        note += " (the broker not pinned: not this worktree's)"
    try:
        yield server, note
    finally:
        os.sched_setaffinity(0, before)
        if broker_pinned and broker is not None:
            _taskset_all(broker, everyone)


# ---------------------------------------------------------------------- servers


class Uvicorn:
    """One uvicorn server (``workers`` processes) for one variant, optionally pinned."""

    def __init__(
        self,
        app: str,
        variant: str,
        env: dict[str, str],
        logdir: Path,
        *,
        loop: str = "asyncio",
        workers: int = 1,
        core: int | None = None,
    ) -> None:
        self.variant, self.workers = variant, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = logdir / f"{variant}-{loop}-{workers}.log"
        self.served = 0
        cmd = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", str(workers), "--loop", loop, "--http", "h11"]
        cmd += ["--no-access-log", "--log-level", "warning"]
        if core is not None:
            cmd = ["taskset", "-c", str(core), *cmd]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, **env, "BENCH_VARIANT": variant},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers stop with it (signal to the group)
            )

    def _one(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.rstrip("/") + STATS_PATH, timeout=5) as r:
            data: dict[str, Any] = json.load(r)
            return data

    def stats(self) -> dict[str, Any]:
        """One worker's counters (bench/middleware.py's check_logged reads them)."""
        return self._one()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until one worker answers, then (several workers) until each has answered or
        a few seconds passed: the warm-up load reaches any late one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"uvicorn ({self.variant}) exited:\n{self.tail()}")
            with contextlib.suppress(OSError):
                pids = {self._one()["pid"]}
                until = time.monotonic() + 5
                while len(pids) < self.workers and time.monotonic() < until:
                    with contextlib.suppress(OSError):
                        pids.add(self._one()["pid"])
                    time.sleep(0.05)
                return
            time.sleep(0.2)
        raise BenchError(f"uvicorn ({self.variant}) not ready in {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def stop(self) -> None:
        # Killed outright: what it logged is checked already, and a graceful stop of
        # (d) would wait for its final flush to a broker that is not there.
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(10)


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) of every live process of session ``sid`` (Linux
    /proc): a server started in its own session, all its workers included.  Unlike
    req/s, this hardly moves when other processes share the core."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
        if int(fields[3]) == sid:  # field 6, session
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15, utime, stime
    return total / tick


def _load_once(
    ctx: Context,
    app: str,
    variant: str,
    env: dict[str, str],
    seconds: int,
    *,
    loop: str,
    workers: int,
    core: int | None,
) -> tuple[Load, str]:
    """Start the server, warm it, measure ``seconds`` at saturation, check, stop."""
    with tempfile.TemporaryDirectory(prefix="bench-pinned-") as tmp:
        server = Uvicorn(app, variant, env, Path(tmp), loop=loop, workers=workers, core=core)
        topic = env["BENCH_TOPIC"]
        before = end_offset(ctx.bootstrap, topic) if workers > 1 and variant == "b" else 0
        try:
            server.wait_ready()
            server.served += wrk(server.url, 1, None).requests  # warm-up
            cpu0 = session_cpu(server.proc.pid)
            load = wrk(server.url, seconds, None)
            cpu = session_cpu(server.proc.pid) - cpu0
            if load.errors or not load.requests:
                raise BenchError(f"{app} ({variant}): {load.errors} errors, {load.requests} ok")
            server.served += load.requests
            if workers == 1:
                note = check_logged(server)  # type: ignore[arg-type]  # same attributes
            else:
                note = _check_topic(ctx, server, topic, before)
        finally:
            server.stop()
    return load, cpu / load.requests * 1e6, note


def _check_topic(ctx: Context, server: Uvicorn, topic: str, before: int) -> str:
    """Several workers: each has its own counters, so count the events in Kafka
    instead (the end offset of the topic has moved by one per logged request)."""
    if server.variant in ("a", "d"):
        return "" if server.variant == "a" else "Kafka down: not checked per worker"
    deadline = time.monotonic() + 30
    while True:
        got = end_offset(ctx.bootstrap, topic) - before
        if got >= server.served:
            return f"{got} events in the topic for {server.served} requests"
        if time.monotonic() > deadline:
            raise BenchError(f"({server.variant}) {got} events in Kafka for {server.served}")
        time.sleep(0.5)


def _env(ctx: Context, variant: str, topic: str, dead: str) -> dict[str, str]:
    bootstrap = dead if variant == "d" else ctx.bootstrap
    return {"BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic}


def _alternate(
    ctx: Context,
    groups: Sequence[tuple[str, str, str, str, int]],
    seconds: int,
    core: int | None,
    topic: str,
    dead: str,
) -> dict[tuple[str, str, str, str, int], list[tuple[Load, float, str]]]:
    """Every (case, app, variant, loop, workers) once per repetition, the order rotated."""
    out: dict[tuple[str, str, str, str, int], list[tuple[Load, float, str]]] = {
        g: [] for g in groups
    }
    by_case: dict[str, list[tuple[str, str, str, str, int]]] = {}
    for g in groups:
        by_case.setdefault(g[0], []).append(g)
    for rep in range(ctx.reps):
        for members in by_case.values():
            k = rep % len(members)
            for g in members[k:] + members[:k]:
                _case, app, variant, loop, workers = g
                out[g].append(
                    _load_once(
                        ctx,
                        APPS[app],
                        variant,
                        _env(ctx, variant, topic, dead),
                        seconds,
                        loop=loop,
                        workers=workers,
                        core=core,
                    )
                )
    return out


def _results(
    section: str,
    got: dict[tuple[str, str, str, str, int], list[tuple[Load, float, str]]],
    label: Any,
    where: str,
) -> list[Result]:
    results = []
    for g, runs in got.items():
        case = g[0]
        note = f"{where}; {runs[-1][2]}".rstrip("; ")
        for metric, values in (
            ("req/s", [ld.rps for ld, _, _ in runs]),
            ("p50 ms", [ld.p50_ms for ld, _, _ in runs]),
            ("p99 ms", [ld.p99_ms for ld, _, _ in runs]),
            ("server CPU µs/request", [cpu for _, cpu, _ in runs]),
        ):
            results.append(Result(section, case, label(g), metric, values, metric == "req/s", note))
    return results


def _settings(ctx: Context) -> int:
    if not shutil.which("wrk"):
        raise BenchError("wrk is not installed (apt-get install wrk): it is the load here")
    return 2 if ctx.quick else int(os.environ.get("BENCH_PINNED_SECONDS", 5))


def run_pinned(ctx: Context) -> list[Result]:
    """(a), (b), (d) at saturation, 1 worker and 4 workers, Starlette and FastAPI."""
    seconds = _settings(ctx)
    topic = ctx.topic("access-log")
    dead = f"127.0.0.1:{free_port()}"
    groups = [
        (f"{app}, {w} worker{'s' if w > 1 else ''}", app, v, "asyncio", w)
        for w in (1, 4)
        for app in APPS
        for v in ("a", "b", "d")
    ]
    with pinned() as (core, where):
        got = _alternate(ctx, groups, seconds, core, topic, dead)
    return _results(PINNED_SECTION, got, lambda g: VARIANTS[g[2]], where)


def run_uvloop(ctx: Context) -> list[Result]:
    """(a) and (b) at saturation on asyncio's loop and on uvloop, 1 worker, pinned."""
    seconds = _settings(ctx)
    topic = ctx.topic("access-log")
    dead = f"127.0.0.1:{free_port()}"
    groups = [
        (f"middleware, {app}, 1 worker, saturation", app, v, loop, 1)
        for app in APPS
        for v in ("a", "b")
        for loop in ("asyncio", "uvloop")
    ]
    with pinned() as (core, where):
        got = _alternate(ctx, groups, seconds, core, topic, dead)
    return _results(UVLOOP_SECTION, got, lambda g: f"{VARIANTS[g[2]]}, {g[3]}", where)


# ---------------------------------------------------------------------- tables


def _cell(r: Result) -> str:
    return f"{human(r.median, r.metric)} ({human(r.lo, r.metric)}-{human(r.hi, r.metric)})"


def _paired(value: Result, base: Result) -> str:
    ratios = [v / b - 1 for v, b in zip(value.samples, base.samples, strict=False) if b]
    if not ratios:
        return ""
    return f"{statistics.median(ratios):+.1%} ({min(ratios):+.1%} to {max(ratios):+.1%})"


def _find(results: Sequence[Result], case: str, impl: str, metric: str) -> Result | None:
    for r in results:
        if (r.case, r.impl, r.metric) == (case, impl, metric):
            return r
    return None


def _rows(results: Sequence[Result], base_of: Any) -> list[list[str]]:
    rows = []
    for r in results:
        if r.metric != "req/s":
            continue
        p50 = _find(results, r.case, r.impl, "p50 ms")
        p99 = _find(results, r.case, r.impl, "p99 ms")
        cpu = _find(results, r.case, r.impl, "server CPU µs/request")
        base = base_of(r)
        d_rps = d_p99 = d_cpu = ""
        if base is not None and base != r.impl:
            b_rps = _find(results, r.case, base, "req/s")
            b_p99 = _find(results, r.case, base, "p99 ms")
            b_cpu = _find(results, r.case, base, "server CPU µs/request")
            if b_rps is not None and b_p99 is not None and p99 is not None:
                d_rps, d_p99 = _paired(r, b_rps), _paired(p99, b_p99)
            if b_cpu is not None and cpu is not None:
                d_cpu = f"{cpu.median - b_cpu.median:+.1f} µs"
        rows.append(
            [
                r.case,
                r.impl,
                _cell(r),
                "" if p50 is None else _cell(p50),
                "" if p99 is None else _cell(p99),
                "" if cpu is None else _cell(cpu),
                d_rps,
                d_p99,
                d_cpu,
            ]
        )
    return rows


def pinned_table(results: Sequence[Result]) -> str:
    rows = [r for r in results if r.section == PINNED_SECTION]
    main = _rows(rows, lambda r: VARIANTS["a"])
    header = ["load", "variant", "req/s", "p50 ms", "p99 ms", "server CPU µs/req"]
    header += ["req/s vs (a)", "p99 vs (a)", "CPU vs (a)"]
    out = [markdown_table(header, main, right=2)]
    down = _rows(
        [r for r in rows if r.impl in (VARIANTS["b"], VARIANTS["d"])],
        lambda r: VARIANTS["b"],
    )
    down = [row for row in down if row[1] == VARIANTS["d"]]
    if down:
        h = ["load", "variant", "req/s", "p50 ms", "p99 ms", "server CPU µs/req"]
        h += ["req/s vs (b)", "p99 vs (b)", "CPU vs (b)"]
        out.append(markdown_table(h, down, right=2))
    return "\n\n".join(out)


def uvloop_table(results: Sequence[Result]) -> str:
    from bench.peers import uvloop_rows_table

    out = []
    if any(r.section == UVLOOP_SECTION and r.case.startswith("producer") for r in results):
        out.append(uvloop_rows_table(results))
    mw = [r for r in results if r.section == UVLOOP_SECTION and r.case.startswith("middleware")]
    if mw:
        # Each row against (a) on the same loop; uvloop rows also against asyncio's.
        vs_a = _rows(mw, lambda r: f"{VARIANTS['a']}, {r.impl.rsplit(', ', 1)[1]}")
        vs_loop = _rows(mw, lambda r: r.impl.replace(", uvloop", ", asyncio"))
        header = ["load", "variant, loop", "req/s", "p50 ms", "p99 ms", "server CPU µs/req"]
        header += ["req/s vs (a)", "p99 vs (a)", "CPU vs (a)", "req/s vs asyncio"]
        header += ["CPU vs asyncio"]
        rows = [[*a, b[6], b[8]] for a, b in zip(vs_a, vs_loop, strict=True)]
        out.append(markdown_table(header, rows, right=2))
    return "\n\n".join(out)
