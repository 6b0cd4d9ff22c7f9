"""Instructions per request that kafka_asgi's access log adds to a minimal WSGI app
(Flask and Django), counted by valgrind: a count that does not move with the machine's
load, as CPU time does on a shared virtual machine.

    python -m bench.instructions                          # the table
    python -m bench.instructions app FRAMEWORK VARIANT N  # one process, N requests

Each variant runs twice under ``valgrind --tool=callgrind --separate-threads=yes``,
with N1 and N2 requests after a warm-up; the request thread's instructions at N2
less those at N1, divided by N2 - N1, are its instructions per request (start-up and
imports cancel out). Variants: (a) the bare app, ``GET /`` answering "Hello, world!";
(b) the same with kafka_asgi's access log (Flask: ``KafkaExtension``; Django:
``AccessLogMiddleware``), its events going through the background producer's thread
to an in-memory producer that counts them, no broker. So (b) counts the request thread's work: the
hand-off, not the producer's batches. Every event of (b) is checked as handed over.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, BenchError

FRAMEWORKS = ("flask", "django")
VARIANTS = {"a": "(a) no logging", "b": "(b) kafka_asgi access log"}
WARM_UP = 50


def _environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench/1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def _flask(variant: str, producer: Any) -> tuple[Any, Any]:
    from flask import Flask

    app = Flask("bench_instructions")
    app.get("/")(lambda: "Hello, world!")
    if variant == "a":
        return app, None
    from kafka_asgi.flask import KafkaExtension

    app.config.update(
        KAFKA_ASGI_CLUSTER="bench-instructions",
        KAFKA_ASGI_PRODUCER_FACTORY=lambda: producer,
        KAFKA_ASGI_ACCESS_LOG={"topic": "access-log"},
    )
    ext = KafkaExtension(app)
    return app, ext.background


def _django(variant: str, producer: Any) -> tuple[Any, Any]:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="bench-only",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["kafka_asgi.django.AccessLogMiddleware"] if variant == "b" else [],
        INSTALLED_APPS=[],
        USE_TZ=True,
        KAFKA_ASGI={
            "CLUSTER": "bench-instructions",
            "PRODUCER_FACTORY": lambda: producer,
            "ACCESS_LOG": {"topic": "access-log"},
        },
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse
    from django.urls import path

    def hello(request: Any) -> HttpResponse:
        return HttpResponse(b"Hello, world!")

    globals()["urlpatterns"] = [path("", hello)]
    return WSGIHandler(), None


def _background_of(framework: str, found: Any) -> Any:
    if framework == "django":
        from kafka_asgi.integrations.django import _background

        return _background.get("bench-instructions")
    return found


def app_main(framework: str, variant: str, n: int) -> None:
    """Run WARM_UP + n requests through the app in this process (under valgrind)."""
    from kafka_asgi.integrations.testing import InMemoryProducer

    class Counting(InMemoryProducer):
        """Counts the events instead of keeping them: kept events would grow the
        cyclic collector's work, which a real producer's delivered batches do not."""

        count = 0

        def send_nowait(self, topic: str, value: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1

    producer = Counting()
    app, background = (_flask if framework == "flask" else _django)(variant, producer)

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    def requests(count: int) -> None:
        for _ in range(count):
            result = app(_environ(), start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    requests(WARM_UP)
    background = _background_of(framework, background)
    if background is not None:
        background.ensure_started(60.0)  # the thread-safe hand-off from here on
    requests(n)
    events = 0
    if variant == "b":
        background.stop(120.0)
        events = producer.count
        if events != WARM_UP + n:
            raise SystemExit(f"{framework} (b): {events} events for {WARM_UP + n} requests")
    print("BENCH_JSON " + json.dumps({"events": events}))


def _request_thread_instructions(framework: str, variant: str, n: int, tmp: Path) -> int:
    out = tmp / f"callgrind.{framework}.{variant}.{n}"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
        PYTHON,
        "-m",
        "bench.instructions",
        "app",
        framework,
        variant,
        str(n),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if proc.returncode != 0 or "BENCH_JSON" not in proc.stdout:
        raise BenchError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    # Thread 1 is the one that ran the requests (callgrind numbers them from 1).
    for line in Path(f"{out}-01").read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise BenchError(f"no summary line in {out}-01")


def measure(n1: int, n2: int) -> dict[str, dict[str, float]]:
    if shutil.which("valgrind") is None:
        raise BenchError("valgrind is not installed (apt-get install valgrind)")
    per_request: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        for framework in FRAMEWORKS:
            per_request[framework] = {}
            for variant in VARIANTS:
                low = _request_thread_instructions(framework, variant, n1, Path(tmp))
                high = _request_thread_instructions(framework, variant, n2, Path(tmp))
                per_request[framework][variant] = (high - low) / (n2 - n1)
    return per_request


def table(per_request: dict[str, dict[str, float]]) -> str:
    lines = [
        "| app | variant | instructions per request | over (a) |",
        "|---|---|--:|--:|",
    ]
    for framework, variants in per_request.items():
        bare = variants["a"]
        for variant, count in variants.items():
            over = "" if variant == "a" else f"+{count - bare:,.0f} ({(count / bare - 1):+.0%})"
            name = "Flask" if framework == "flask" else "Django"
            lines.append(f"| {name} | {VARIANTS[variant]} | {count:,.0f} | {over} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["app"]:
        app_main(args[1], args[2], int(args[3]))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--requests", default="500,1500", help="N1,N2 (default 500,1500)")
    opts = parser.parse_args(args)
    n1, n2 = (int(x) for x in opts.requests.split(","))
    if not 0 < n1 < n2:
        raise SystemExit(f"--requests needs 0 < N1 < N2, not {opts.requests!r}")
    print(table(measure(n1, n2)))


if __name__ == "__main__":
    main()
