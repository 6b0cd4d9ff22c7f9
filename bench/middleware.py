"""Middleware overhead: what an access log costs a minimal app under uvicorn (and, from
bench/wsgi.py, a minimal Flask app under gunicorn).

    python -m bench.middleware [--quick]          # this benchmark alone
    python -m bench.middleware direct             # the middleware's own µs/request,
                                                  # driven without an event loop
    python -m bench.middleware loadgen URL ...    # the httpx load generator (used
                                                  # when wrk is not installed)

A minimal Starlette app and a minimal FastAPI app (bench/apps/) run under
uvicorn, one worker each, one server process per variant:

(a) no access log;
(b) kafka_asgi's AccessLogMiddleware (``send_nowait`` once the response is sent);
(c) the middleware most people write today: ``@app.middleware("http")`` awaiting
    aiokafka's ``send_and_wait()`` once per request;
(d) kafka_asgi's middleware with Kafka stopped (bootstrap on a port where nothing
    listens); the notes say what became of its events (buffered, reported as
    undelivered, or refused with the buffer full).

In process (each app called directly, no server, CPU time of the thread that also runs
the producer) there is also (n): kafka_asgi's middleware with a no-op producer, the
middleware's own work; (b) minus (n) is the producer's share.

A separate process loads ``GET /`` over loopback: wrk when installed, else an httpx
load generator.  Two modes: saturation (as fast as 16 connections go) and a fixed
rate below every variant's saturation.  Variants take turns in every repetition, so
drift on a shared machine spreads over all of them.  Afterwards each server's
``/_bench/stats`` must show every request logged (b: acknowledged by Kafka, none
failed; c: every send_and_wait returned): a short count stops the run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    ROOT,
    BenchError,
    Context,
    Result,
    change,
    find,
    free_port,
    human,
    markdown_table,
)

SECTION = "middleware"
APPS = {
    "Starlette": "bench.apps.starlette_app:app",
    "FastAPI": "bench.apps.fastapi_app:app",
}
VARIANTS = {
    "a": "(a) no logging",
    "b": "(b) kafka_asgi middleware",
    "c": "(c) send and wait per request",
    "d": "(d) kafka_asgi, Kafka down",
    "n": "(n) kafka_asgi middleware, no-op producer",  # in-process only
}
CONNECTIONS = 16
MAX_FIXED_RATE = 1000  # req/s; lowered to half the slowest variant's saturation
STATS_PATH = "/_bench/stats"


@dataclass
class Load:
    """One load run as the load generator saw it."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


# ---------------------------------------------------------------------- servers


_LIVE: set[Server] = set()


@atexit.register
def _kill_leftovers() -> None:
    # A safety net: every exit path should have stopped its servers already.
    for server in list(_LIVE):
        server.stop()


class Server:
    """One uvicorn process (1 worker) serving one app variant on a loopback port."""

    def __init__(self, app: str, variant: str, env: dict[str, str], logdir: Path) -> None:
        self.app, self.variant = app, variant
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = logdir / f"{app.split(':')[0].rsplit('.', 1)[-1]}-{variant}.log"
        self.served = 0  # requests the load generator counted against this server
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    app,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    # uvicorn's default ("auto") takes uvloop when installed (bench/loops.py
                    # measures it): these rows stay on asyncio's own loop.
                    "--loop",
                    "asyncio",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env={**os.environ, **env, "BENCH_VARIANT": variant},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _LIVE.add(self)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"uvicorn {self.app} ({self.variant}) exited:\n{self.tail()}")
            with contextlib.suppress(OSError):
                self.stats()
                return
            time.sleep(0.1)
        raise BenchError(f"uvicorn {self.app} ({self.variant}) not ready in {timeout}s")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.rstrip("/") + STATS_PATH, timeout=5) as r:
            data: dict[str, Any] = json.load(r)
            return data

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def stop(self) -> None:
        _LIVE.discard(self)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def servers(app: str, env: dict[str, str], variants: Sequence[str]) -> Iterator[dict[str, Server]]:
    with tempfile.TemporaryDirectory(prefix="bench-uvicorn-") as tmp:
        started: dict[str, Server] = {}
        try:
            for v in variants:
                started[v] = Server(app, v, env, Path(tmp))
            for s in started.values():
                s.wait_ready()
            yield started
        finally:
            for s in started.values():
                s.stop()


def check_logged(server: Server, timeout: float = 15.0) -> str:
    """Check that the server logged every request the load generator counted; a
    note on what the variant did.  Raises BenchError on a short count."""
    deadline = time.monotonic() + timeout
    while True:
        st = server.stats()
        if server.variant in ("a", "d"):
            break
        if server.variant == "c":
            naive = st["naive"]
            if naive["failed"]:
                raise BenchError(f"(c) {naive['failed']} send_and_wait calls failed: {naive}")
            if naive["sent"] < server.served:
                raise BenchError(f"(c) logged {naive['sent']} events for {server.served} requests")
            return f"{naive['sent']} events acknowledged"
        mw, prod = st["middleware"], st["producer"]
        if mw["dropped"] or prod.get("failed"):
            raise BenchError(f"(b) events lost: middleware {mw}, producer {prod}")
        if mw["emitted"] < server.served:
            raise BenchError(f"(b) logged {mw['emitted']} events for {server.served} requests")
        if prod.get("delivered", 0) >= mw["emitted"]:
            return f"{prod['delivered']} events acknowledged"
        if time.monotonic() > deadline:
            raise BenchError(f"(b) {mw['emitted']} events emitted, only {prod} after {timeout}s")
        time.sleep(0.2)
    if server.variant == "d":
        mw, prod = st["middleware"], st["producer"]
        return (
            f"{mw['emitted']} events handed over: {prod.get('failed', 0)} reported as undelivered, "
            f"{prod.get('buffered', 0)} still buffered; "
            f"{mw['dropped']} refused (buffer full)"
        )
    return ""


# ---------------------------------------------------------------------- load


_WRK_SCRIPT = """\
-- Written by bench/middleware.py.  interval > 0: one request per slot of
-- `interval` ms (a fixed rate, kept by the clock rather than by the responses).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = %(interval)f
local next_at = nil

if interval > 0 then
  function delay()
    local t = now_ms()
    if next_at == nil or next_at < t - 1000 then next_at = t end
    local slot = next_at
    next_at = next_at + interval
    if slot <= t then return 0 end
    return math.floor(slot - t + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "seconds": %%f, "p50_ms": %%f, "p99_ms": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def _json_line(stdout: str, what: str) -> Any:
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :])
    raise BenchError(f"{what} printed no result:\n{stdout[-2000:]}")


def _parse(stdout: str, what: str) -> Load:
    return Load(**_json_line(stdout, what))


def wrk(url: str, seconds: int, rate: float | None) -> Load:
    interval = 1000.0 / rate if rate else 0.0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_SCRIPT % {"interval": interval})
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{CONNECTIONS}",
                f"-d{seconds}s",
                "--timeout",
                "5s",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
    finally:
        os.unlink(f.name)
    return _parse(out.stdout + out.stderr, "wrk")


def httpx_load(url: str, seconds: int, rate: float | None) -> Load:
    cmd = [
        PYTHON,
        "-m",
        "bench.middleware",
        "loadgen",
        url,
        "--seconds",
        str(seconds),
        "--connections",
        str(CONNECTIONS),
    ]
    if rate:
        cmd += ["--rate", str(rate)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 60, check=False, cwd=ROOT
    )
    return _parse(out.stdout + out.stderr, "the httpx load generator")


def load_generator() -> tuple[str, Any]:
    if shutil.which("wrk"):
        return "wrk", wrk
    return "httpx (another process)", httpx_load


async def _loadgen(url: str, seconds: float, connections: int, rate: float | None) -> Load:
    """The fallback load generator: ``connections`` keep-alive clients; with ``rate``,
    each request waits for its slot on a fixed schedule."""
    import anyio
    import httpx

    latencies: list[float] = []
    errors = 0
    interval = 1.0 / rate if rate else 0.0
    next_at = 0.0
    perf = time.perf_counter
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
        start = perf()
        end = start + seconds
        next_at = start

        async def worker() -> None:
            nonlocal errors, next_at
            while True:
                if interval:
                    slot = next_at = max(next_at, perf() - 1.0)
                    next_at += interval
                    if slot >= end:
                        return
                    if slot > perf():
                        await anyio.sleep(slot - perf())
                elif perf() >= end:
                    return
                t0 = perf()
                try:
                    r = await client.get(url)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(perf() - t0)
                else:
                    errors += 1

        async with anyio.create_task_group() as tg:
            for _ in range(connections):
                tg.start_soon(worker)
        elapsed = perf() - start
    latencies.sort()
    from bench.common import percentile

    return Load(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        errors=errors,
    )


# ---------------------------------------------------------------------- in-process


def _inprocess_apps(app_name: str, producers: dict[str, Any], topic: str) -> dict[str, Any]:
    """The app of each variant, built in this process (no server, no socket)."""
    from kafka_asgi.integrations.asgi import AccessLogMiddleware

    apps: dict[str, Any] = {}
    for v in ("a", "b", "n", "d"):
        if app_name == "FastAPI":
            from fastapi import FastAPI

            fa = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

            async def hello() -> dict[str, str]:
                return {"message": "Hello, world!"}

            fa.get("/")(hello)
            if v != "a":
                fa.add_middleware(AccessLogMiddleware, topic=topic, producer=producers[v])
            apps[v] = fa
        else:
            from starlette.applications import Starlette
            from starlette.middleware import Middleware
            from starlette.requests import Request
            from starlette.responses import PlainTextResponse
            from starlette.routing import Route

            async def text(request: Request) -> PlainTextResponse:
                return PlainTextResponse("Hello, world!")

            mw = (
                []
                if v == "a"
                else [Middleware(AccessLogMiddleware, topic=topic, producer=producers[v])]
            )
            apps[v] = Starlette(routes=[Route("/", text)], middleware=mw)
    return apps


async def _inprocess(bootstrap: str, topic: str, n: int, reps: int) -> dict[str, Any]:
    """CPU microseconds per request of each variant's app called directly, the
    producer's background work included (the loop is entered once per request)."""
    import logging

    import anyio.lowlevel

    from kafka_asgi import Producer

    logging.getLogger("kafka_asgi").setLevel(logging.CRITICAL)  # (d) reports every record

    receive, send = _receive, _discard

    async def timed(app: Any, count: int) -> float:
        # The thread's CPU time, as the trace-cost benchmark: the producer's background
        # work runs on this thread's loop, so it is counted; the time other processes
        # of a shared machine hold the CPU is not (wall time measured mostly that).
        perf = time.thread_time
        start = perf()
        for _ in range(count):
            scope = _scope([(b"host", b"127.0.0.1:8000")])
            await app(scope, receive, send)
            await anyio.lowlevel.checkpoint()
        return (perf() - start) / count * 1e6

    NullProducer = _NullProducer  # (n): the middleware's own work, without the producer's

    out: dict[str, Any] = {}
    async with Producer(bootstrap) as live, Producer(f"127.0.0.1:{free_port()}") as dead:
        for app_name in APPS:
            producers = {"b": live, "n": NullProducer(), "d": dead}
            apps = _inprocess_apps(app_name, producers, topic)
            samples: dict[str, list[float]] = {v: [] for v in apps}
            for app in apps.values():
                await timed(app, max(100, n // 10))
            for _ in range(reps):
                for v, app in apps.items():
                    samples[v].append(await timed(app, n))
            out[app_name] = samples
        await live.flush(timeout=30)
        st = live.stats()
        if st.failed or st.delivered != st.enqueued:
            raise BenchError(f"in-process (b): not every event acknowledged: {st}")
    return out


def inprocess(ctx: Context, topic: str) -> list[Result]:
    n = 5_000 if ctx.quick else 20_000
    cmd = [
        PYTHON,
        "-m",
        "bench.middleware",
        "inprocess",
        ctx.bootstrap,
        topic,
        str(n),
        str(ctx.reps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    data = _json_line(proc.stdout + proc.stderr, "the in-process middleware benchmark")
    results = []
    for app_name, per_variant in data.items():
        for v, values in per_variant.items():
            results.append(
                Result(
                    SECTION,
                    f"{app_name}, in-process (no server)",
                    VARIANTS[v],
                    "µs/request",
                    values,
                    higher_is_better=False,
                )
            )
    return results


# ---------------------------------------------------------------------- bare ASGI pieces


class _NullProducer:
    """A producer that drops every record: the middleware's own work alone."""

    def send_nowait(self, *args: Any) -> None:
        pass


async def _bare_app(scope: Any, receive: Any, send: Any) -> None:
    # New messages each time: the middleware adds its request-id header to them.
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Any) -> None:
    pass


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """A new HTTP scope for ``GET /`` from a loopback client, as uvicorn makes one."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


# ---------------------------------------------------------------------- trace context cost

TRACE_SECTION = "tracecost"
TRACE_CASE = "bare middleware, no-op producer"
TRACE_VARIANTS = {
    "off": "trace_context=False",
    "on": "trace_context=True, no traceparent",
    "header": "trace_context=True, traceparent header",
    "otel": "trace_context=True, OpenTelemetry span current",
}
_TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _trace_cost(variants: Sequence[str], n: int, reps: int) -> dict[str, list[float]]:
    """µs per request of the bare middleware around a minimal ASGI app, the producer a
    no-op: the middleware's own work with trace fields on and off."""
    from kafka_asgi.integrations.access_log import AccessLogMiddleware

    NullProducer, app, receive, send = _NullProducer, _bare_app, _receive, _discard

    base_headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")]
    cases: dict[str, tuple[Any, list[tuple[bytes, bytes]]]] = {}
    for v in variants:
        mw = AccessLogMiddleware(app, topic="t", producer=NullProducer(), trace_context=v != "off")
        # The same request (with a traceparent) for all but "on, no traceparent".
        headers = base_headers if v == "on" else [*base_headers, (b"traceparent", _TRACEPARENT)]
        cases[v] = (mw, headers)

    span_cm: Any = contextlib.nullcontext()
    if "otel" in variants:
        from opentelemetry.sdk.trace import TracerProvider

        span_cm = TracerProvider().get_tracer("bench").start_as_current_span("server")

    async def timed(v: str, count: int) -> float:
        mw, headers = cases[v]
        # The thread's CPU time: on a shared machine wall time mostly measures how long
        # other processes held the CPU (this loop does no I/O).
        perf = time.thread_time
        began = perf()
        for _ in range(count):
            scope = {
                "type": "http",
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/",
                "query_string": b"",
                "headers": headers,
                "client": ("127.0.0.1", 40000),
            }
            await mw(scope, receive, send)
        return (perf() - began) / count * 1e6

    out: dict[str, list[float]] = {v: [] for v in variants}
    with span_cm:
        for v in variants:
            await timed(v, max(1000, n // 10))
        for _ in range(reps):
            for v in variants:
                out[v].append(await timed(v, n))
    return out


def trace_run(ctx: Context) -> list[Result]:
    """Two processes: one that never imports OpenTelemetry (off / on / header), and
    one with an OpenTelemetry SDK span current around every request. Variants take
    turns in short blocks, so the load of a shared machine falls on all of them; the
    cost of a variant is the median over blocks of its difference to the block's
    "off" figure (paired, which cancels drift better than comparing medians)."""
    block = 2_000
    reps = 20 if ctx.quick else 60
    results: list[Result] = []
    for variants in (["off", "on", "header"], ["off", "otel"]):
        cmd = [PYTHON, "-m", "bench.middleware", "tracecost", ",".join(variants)]
        cmd += [str(block), str(reps)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT
        )
        data = _json_line(proc.stdout + proc.stderr, "the trace context benchmark")
        note = "opentelemetry-sdk imported, a span current" if "otel" in variants else ""
        for v, values in data.items():
            label = TRACE_VARIANTS[v] + (" (OpenTelemetry process)" if v == "off" and note else "")
            results.append(
                Result(TRACE_SECTION, TRACE_CASE, label, "µs/request", values, False, note)
            )
            if v != "off":
                diffs = [a - b for a, b in zip(values, data["off"], strict=True)]
                results.append(
                    Result(TRACE_SECTION, TRACE_CASE, label, "µs vs off", diffs, False, note)
                )
                # The least disturbed block of each: the best estimate of the work itself.
                best = [min(values) - min(data["off"])]
                results.append(
                    Result(TRACE_SECTION, TRACE_CASE, label, "best µs vs off", best, False, note)
                )
    return results


def trace_table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        if r.section != TRACE_SECTION or r.metric != "µs/request":
            continue
        d = find(results, TRACE_SECTION, TRACE_CASE, r.impl, "µs vs off")
        b = find(results, TRACE_SECTION, TRACE_CASE, r.impl, "best µs vs off")
        delta = "" if d is None else f"{d.median:+.2f} ({d.lo:+.1f} to {d.hi:+.1f})"
        best = "" if b is None else f"{b.median:+.2f}"
        rows.append([r.impl, _cell(r), delta, best])
    header = ["variant", "µs/request", "vs off: paired blocks", "vs off: best blocks"]
    return markdown_table(header, rows, 1)


# ---------------------------------------------------------------------- the run


def run(ctx: Context, apps: Sequence[str] | None = None) -> list[Result]:
    gen_name, gen = load_generator()
    topic = ctx.topic("access-log")
    dead = f"127.0.0.1:{free_port()}"
    seconds, warm = (1, 1) if ctx.quick else (4, 2)
    results = inprocess(ctx, topic)
    for app_name in [a for a in apps or list(APPS) if a in APPS]:
        app = APPS[app_name]
        env = {"BENCH_BOOTSTRAP": ctx.bootstrap, "BENCH_TOPIC": topic}
        with (
            servers(app, env, ["a", "b", "c"]) as up,
            servers(app, {**env, "BENCH_BOOTSTRAP": dead}, ["d"]) as down,
        ):
            srv = {**up, **down}
            results += _measure(ctx, app_name, srv, gen, seconds, warm, gen_name)
    if apps is None or "Flask" in apps:
        from bench import wsgi

        results += wsgi.run(ctx, topic)  # the WSGI rows, beside these
    return results


def _measure(
    ctx: Context,
    app_name: str,
    srv: dict[str, Server],
    gen: Any,
    seconds: int,
    warm: int,
    gen_name: str,
) -> list[Result]:
    samples: dict[tuple[str, str, str], list[float]] = {}

    def record(mode: str, v: str, load: Load) -> None:
        if load.errors:
            raise BenchError(f"{app_name} {VARIANTS[v]}: {load.errors} failed requests")
        if load.requests == 0:
            raise BenchError(f"{app_name} {VARIANTS[v]}: no request completed")
        srv[v].served += load.requests
        for metric, value in (
            ("req/s", load.rps),
            ("p50 ms", load.p50_ms),
            ("p99 ms", load.p99_ms),
        ):
            samples.setdefault((mode, v, metric), []).append(value)

    sat = f"{app_name}, saturation ({CONNECTIONS} connections)"
    for v, s in srv.items():  # warm-up: imports, caches, connections to Kafka
        srv[v].served += gen(s.url, warm, None).requests
    for _ in range(ctx.reps):
        for v, s in srv.items():
            record(sat, v, gen(s.url, seconds, None))

    slowest = min(
        sorted(samples[(sat, v, "req/s")])[len(samples[(sat, v, "req/s")]) // 2] for v in srv
    )
    fixed_rate = max(50, min(MAX_FIXED_RATE, int(slowest / 2 / 50) * 50))
    fixed = f"{app_name}, fixed rate {fixed_rate} req/s"
    for _ in range(ctx.reps):
        for v, s in srv.items():
            record(fixed, v, gen(s.url, seconds, fixed_rate))

    notes = {v: check_logged(s) for v, s in srv.items()}
    out = []
    for (mode, v, metric), values in samples.items():
        out.append(
            Result(
                SECTION,
                mode,
                VARIANTS[v],
                metric,
                values,
                higher_is_better=metric == "req/s",
                note=f"load: {gen_name}; {notes[v]}".rstrip("; "),
            )
        )
    return out


def _cell(r: Result) -> str:
    return f"{human(r.median, r.metric)} ({human(r.lo, r.metric)}-{human(r.hi, r.metric)})"


def table(results: Sequence[Result]) -> str:
    """Rows: app/mode x variant; the changes are against (a) on the same row group."""
    header = ["load", "variant", "req/s", "p50 ms", "p99 ms", "req/s vs (a)", "p99 vs (a)"]
    rows = []
    cost_rows = []
    cases = list(dict.fromkeys(r.case for r in results if r.section == SECTION))
    for case in cases:
        base_rps = find(results, SECTION, case, VARIANTS["a"], "req/s")
        base_p99 = find(results, SECTION, case, VARIANTS["a"], "p99 ms")
        base_cost = find(results, SECTION, case, VARIANTS["a"], "µs/request")
        for label in VARIANTS.values():
            cost = find(results, SECTION, case, label, "µs/request")
            if cost is not None:
                extra = ""
                if base_cost is not None and label != VARIANTS["a"]:
                    extra = f"{cost.median - base_cost.median:+.1f} µs"
                cost_rows.append([case, label, _cell(cost), extra])
            rps = find(results, SECTION, case, label, "req/s")
            p50 = find(results, SECTION, case, label, "p50 ms")
            p99 = find(results, SECTION, case, label, "p99 ms")
            if rps is None or p50 is None or p99 is None:
                continue
            d_rps = d_p99 = ""
            if base_rps is not None and base_p99 is not None and label != VARIANTS["a"]:
                d_rps = f"{change(rps, base_rps):+.1%}"
                d_p99 = f"{change(p99, base_p99):+.1%}"
            rows.append([case, label, _cell(rps), _cell(p50), _cell(p99), d_rps, d_p99])
    out = []
    if rows:
        out.append(markdown_table(header, rows, right=2))
    if cost_rows:
        out.append(
            markdown_table(["app called directly", "variant", "µs/request", "vs (a)"], cost_rows, 2)
        )
    return "\n\n".join(out)


# ---------------------------------------------------------------------- direct drive


def direct(number: int = 100_000, repeat: int = 9) -> dict[str, float]:
    """µs per request of the middleware's own work, without an event loop: each request's
    coroutine is run to its end by one ``send(None)`` (nothing in it suspends), around
    a bare two-message ASGI app, the producer a no-op; best of ``repeat`` timeit runs
    (the least disturbed), so steadier than the in-process rows' CPU time."""
    import timeit

    from kafka_asgi.integrations.access_log import AccessLogMiddleware

    NullProducer, app, receive, send = _NullProducer, _bare_app, _receive, _discard

    def one(asgi: Any) -> None:
        scope = _scope([(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")])
        coro = asgi(scope, receive, send)
        try:
            coro.send(None)
        except StopIteration:
            return
        raise BenchError("the request suspended: not a direct-drive case")

    template = AccessLogMiddleware(app, topic="t", producer=NullProducer())
    template._dumps = None  # the pure-Python template, as without the orjson extra
    cases = {
        "bare app": app,
        "AccessLogMiddleware (orjson if installed)": AccessLogMiddleware(
            app, topic="t", producer=NullProducer()
        ),
        "AccessLogMiddleware (template)": template,
    }
    out = {}
    for name, asgi in cases.items():
        best = min(timeit.repeat(lambda a=asgi: one(a), number=number, repeat=repeat))
        out[name] = best / number * 1e6
    return out


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["inprocess"]:
        import anyio

        bootstrap, topic, n, reps = args[1], args[2], int(args[3]), int(args[4])
        print("BENCH_JSON " + json.dumps(anyio.run(_inprocess, bootstrap, topic, n, reps)))
        return
    if args[:1] == ["direct"]:
        for name, us in direct().items():
            print(f"{name}: {us:.2f} µs/request")
        return
    if args[:1] == ["tracecost"]:
        import anyio

        variants, n, reps = args[1].split(","), int(args[2]), int(args[3])
        print("BENCH_JSON " + json.dumps(anyio.run(_trace_cost, variants, n, reps)))
        return
    if args[:1] == ["loadgen"]:
        p = argparse.ArgumentParser(prog="python -m bench.middleware loadgen")
        p.add_argument("url")
        p.add_argument("--seconds", type=float, default=5.0)
        p.add_argument("--connections", type=int, default=CONNECTIONS)
        p.add_argument("--rate", type=float, default=None)
        a = p.parse_args(args[1:])
        import anyio

        load = anyio.run(_loadgen, a.url, a.seconds, a.connections, a.rate)
        print("BENCH_JSON " + json.dumps(load.__dict__))
        return
    from bench.__main__ import main as bench_main

    bench_main([*args, "--only", SECTION])


if __name__ == "__main__":
    main()
