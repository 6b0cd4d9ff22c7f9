"""The WSGI access log's cost: a minimal Flask app, in process and under gunicorn.

    python -m bench --only middleware [--quick]   # these rows with the ASGI ones
    python -m bench.wsgi inprocess BOOTSTRAP TOPIC N REPS   # the in-process part (JSON)

The variants are those of bench/middleware.py (bench/apps/flask_app.py): (a) bare
Flask; (b) kafka_asgi's KafkaExtension (WSGI AccessLogMiddleware, background
producer); (c) an ``after_request`` hook calling kafka-python's blocking
``send().get()`` per request; (d) (b) with Kafka stopped.

In process: each variant's WSGI callable is called directly (response iterated and
closed, as a server does), µs of process CPU per request (both threads); the
background producer's thread runs meanwhile, so its work is in (b)'s figure. Under
gunicorn: one sync worker per variant, loaded like the ASGI apps (wrk, else the httpx
load generator), every event of (b) and (c) checked as acknowledged afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, BenchError, Context, Result, free_port

SECTION = "middleware"  # the rows sit beside the ASGI ones
APP = "bench.apps.flask_app:app"
NAME = "Flask"
SERVER = "Flask under gunicorn (1 sync worker)"
STATS_PATH = "/_bench/stats"


class GunicornServer:
    """One gunicorn master with one sync worker serving one variant on a loopback port."""

    def __init__(self, variant: str, env: dict[str, str], logdir: Path) -> None:
        self.variant = variant
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = logdir / f"gunicorn-{variant}.log"
        self.served = 0
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "gunicorn",
                    APP,
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--worker-class",
                    "sync",
                    "--backlog",
                    "256",
                    "--no-control-socket",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env={**os.environ, **env, "BENCH_VARIANT": variant},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn ({self.variant}) exited:\n{self.tail()}")
            with contextlib.suppress(OSError):
                self.stats()
                return
            time.sleep(0.1)
        raise BenchError(f"gunicorn ({self.variant}) not ready in {timeout}s")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.rstrip("/") + STATS_PATH, timeout=5) as r:
            data: dict[str, Any] = json.load(r)
            return data

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def servers(env: dict[str, str], variants: Sequence[str]) -> Iterator[dict[str, GunicornServer]]:
    with tempfile.TemporaryDirectory(prefix="bench-gunicorn-") as tmp:
        started: dict[str, GunicornServer] = {}
        try:
            for v in variants:
                started[v] = GunicornServer(v, env, Path(tmp))
            for s in started.values():
                s.wait_ready()
            yield started
        finally:
            for s in started.values():
                s.stop()


# ---------------------------------------------------------------------- in-process


def _flask_app(variant: str, bootstrap: str, topic: str) -> Any:
    from flask import Flask

    from kafka_asgi.flask import KafkaExtension

    app = Flask(f"bench_{variant}")
    app.get("/")(lambda: "Hello, world!")
    ext = None
    if variant != "a":
        app.config.update(
            KAFKA_ASGI_CLUSTER=f"bench-{variant}",
            KAFKA_ASGI_BOOTSTRAP=bootstrap,
            KAFKA_ASGI_STARTUP_TIMEOUT=1.0,
            KAFKA_ASGI_SHUTDOWN_TIMEOUT=30.0 if variant == "b" else 0.5,
            KAFKA_ASGI_ACCESS_LOG={"topic": topic},
        )
        ext = KafkaExtension(app)
    return app, ext


def _inprocess(bootstrap: str, topic: str, n: int, reps: int) -> dict[str, Any]:
    import logging

    logging.getLogger("kafka_asgi").setLevel(logging.CRITICAL)  # (d) reports every record
    dead = f"127.0.0.1:{free_port()}"
    built = {v: _flask_app(v, dead if v == "d" else bootstrap, topic) for v in ("a", "b", "d")}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def timed(app: Any, count: int) -> float:
        # The process's CPU time (this thread and the background producer's): on a
        # shared machine wall time mostly measures how long other processes held the CPU.
        perf = time.process_time
        start = perf()
        for _ in range(count):
            environ = {
                "REQUEST_METHOD": "GET",
                "SCRIPT_NAME": "",
                "PATH_INFO": "/",
                "QUERY_STRING": "",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8000",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REMOTE_ADDR": "127.0.0.1",
                "HTTP_HOST": "127.0.0.1:8000",
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(b""),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": False,
                "wsgi.multiprocess": True,
                "wsgi.run_once": False,
                "wsgi.version": (1, 0),
            }
            result = app(environ, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return (perf() - start) / count * 1e6

    samples: dict[str, list[float]] = {v: [] for v in built}
    for app, _ext in built.values():
        timed(app, max(100, n // 10))
    for _ in range(reps):
        for v, (app, _ext) in built.items():
            samples[v].append(timed(app, n))
    for v, (_app, ext) in built.items():
        if ext is None:
            continue
        emitted = ext.middleware.emitted if ext.middleware is not None else 0
        ext.close()
        st = ext.background.final_stats
        if v == "b" and (st is None or st.failed or st.delivered != emitted):
            raise BenchError(f"in-process (b): {emitted} emitted, producer stats {st}")
    return {NAME: samples}


def inprocess(ctx: Context, topic: str, variants: dict[str, str]) -> list[Result]:
    n = 5_000 if ctx.quick else 20_000
    cmd = [PYTHON, "-m", "bench.wsgi", "inprocess", ctx.bootstrap, topic, str(n), str(ctx.reps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    from bench.middleware import _json_line

    data = _json_line(proc.stdout + proc.stderr, "the in-process WSGI benchmark")
    return [
        Result(
            SECTION,
            f"{app_name}, in-process (no server)",
            variants[v],
            "µs/request",
            values,
            higher_is_better=False,
        )
        for app_name, per_variant in data.items()
        for v, values in per_variant.items()
    ]


# ---------------------------------------------------------------------- the run


def run(ctx: Context, topic: str) -> list[Result]:
    """In-process rows and gunicorn rows, in bench/middleware.py's section and format."""
    from bench import middleware

    gen_name, gen = middleware.load_generator()
    seconds, warm = (1, 1) if ctx.quick else (4, 2)
    dead = f"127.0.0.1:{free_port()}"
    results = inprocess(ctx, topic, middleware.VARIANTS)
    env = {"BENCH_BOOTSTRAP": ctx.bootstrap, "BENCH_TOPIC": topic}
    with (
        servers(env, ["a", "b", "c"]) as up,
        servers({**env, "BENCH_BOOTSTRAP": dead}, ["d"]) as down,
    ):
        srv: dict[str, Any] = {**up, **down}
        results += middleware._measure(ctx, SERVER, srv, gen, seconds, warm, gen_name)
    return results


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["inprocess"]:
        bootstrap, topic, n, reps = args[1], args[2], int(args[3]), int(args[4])
        print("BENCH_JSON " + json.dumps(_inprocess(bootstrap, topic, n, reps)))
        return
    from bench.__main__ import main as bench_main

    bench_main([*args, "--only", SECTION])


if __name__ == "__main__":
    main()
