"""Instructions per request of a uvicorn server, with and without kafka_asgi's access log,
counted by valgrind: what the saturation rows lose, priced by a count that does not move
with the machine's load (issue 17).

    python -m bench.server_instructions [--app starlette|fastapi|both]
                                        [--requests 500,2500] [--variants a,b,e,n,p]

The middleware benchmark's apps (bench/apps/) run under uvicorn (1 worker, ``--loop
asyncio --http h11``, as in the saturation rows) inside ``valgrind --tool=cachegrind
--cache-sim=no``. A load generator in this process sends N1, then in a fresh server N2,
``GET /`` requests over 16 keep-alive connections; the server's user-space instructions
at N2 less those at N1, over N2 - N1, are its instructions per request (start-up,
imports, the lifespan and the shutdown flush cancel out). Kernel time (the sockets'
system calls) is not counted, so the share of (a) is an upper bound of what the
saturation rows can lose to instructions.

Variants (bench/apps/__init__.py): (a) no access log; (b) kafka_asgi's middleware and
lifespan, Kafka up; (e) (b) without echoing ``x-request-id``; (n) the middleware with a
no-op producer (no lifespan): the middleware alone; (p) no middleware, the route handing
a prebuilt event of the same size to the lifespan's producer: the producer alone
(``send_nowait``, batches, Produce requests and responses); (d) (b) with nothing
listening at the bootstrap address: the events wait in the producer's buffer, and its
shutdown flush gives up after the lifespan's ``shutdown_timeout`` (10 s, in both runs)
and reports them failed (each report counted in); (u) (a) with uvicorn's own access
log on (``--log-level info``, one line a request, to a file): the
access log most apps have, for comparison. Each run is checked: every
request of (b), (e) and (p) is an event in the topic (fresh, one partition) once the
server has flushed at shutdown; (n)'s producer counted one per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid

from bench.common import (
    PYTHON,
    ROOT,
    BenchError,
    broker,
    create_topics,
    delete_topics,
    end_offset,
    free_port,
)

APPS = {"starlette": "bench.apps.starlette_app:app", "fastapi": "bench.apps.fastapi_app:app"}
VARIANTS = {
    "a": "(a) no logging",
    "b": "(b) kafka_asgi middleware",
    "e": "(e) (b) without echoing x-request-id",
    "n": "(n) middleware, no-op producer",
    "p": "(p) producer only, no middleware",
    "d": "(d) kafka_asgi middleware, Kafka down",
    "u": "(u) (a) with uvicorn's own access log",
}
CONNECTIONS = 16
_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench/1\r\nAccept: */*\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


async def _load(port: int, n: int) -> None:
    """``n`` GET / requests over CONNECTIONS keep-alive connections, each answered 200."""
    left = n

    async def connection() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left > 0:
                left -= 1
                writer.write(_REQUEST)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise BenchError(f"unexpected response: {head[:80]!r}")
                found = _CONTENT_LENGTH.search(head)
                if found is None:
                    raise BenchError(f"no content-length in {head[:200]!r}")
                await asyncio.wait_for(reader.readexactly(int(found.group(1))), 120)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))


def _get(url: str) -> bytes:
    # A generous timeout: under valgrind the first request is slow, and a retried
    # request that the server did serve would count one event too many.
    with urllib.request.urlopen(url, timeout=120) as response:
        body: bytes = response.read()
    return body


def _count(app: str, variant: str, n: int, bootstrap: str) -> int:
    """The server's instructions for start-up, ``n`` requests (after one to see it up)
    and shutdown; raises BenchError if a request's event is missing."""
    topic = f"bench-instr-{uuid.uuid4().hex[:10]}"
    create_topics(bootstrap, [topic], 1)
    port = free_port()
    env = dict(
        os.environ,
        BENCH_VARIANT="a" if variant == "u" else variant,
        BENCH_BOOTSTRAP=f"127.0.0.1:{free_port()}" if variant == "d" else bootstrap,
        BENCH_TOPIC=topic,
        PYTHONPATH=str(ROOT),
    )
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        PYTHON,
        "-m",
        "uvicorn",
        APPS[app],
        "--port",
        str(port),
        "--loop",
        "asyncio",
        "--http",
        "h11",
        "--log-level",
        "info" if variant == "u" else "warning",
    ]
    # uvicorn and valgrind both write to a file, read at the end (the access log's lines
    # are checked there): a pipe nobody reads meanwhile would fill and stall the server.
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                _get(base + "/")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise BenchError(f"uvicorn ({app}, {variant}) did not start") from None
                time.sleep(0.5)
        asyncio.run(_load(port, n))
        stats = json.loads(_get(base + "/_bench/stats"))
        served = n + 1
        if variant == "n":
            if stats["null_producer"]["count"] != served:
                raise BenchError(f"({variant}) {stats} for {served} requests")
        elif variant in ("b", "e", "d"):
            mw = stats["middleware"]
            if mw["emitted"] != served or mw["dropped"]:
                raise BenchError(f"({variant}) {stats} for {served} requests")
        server.send_signal(signal.SIGINT)
        server.wait(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.seek(0)
        err = log.read()
        log.close()
    if variant == "u" and err.count('"GET / HTTP/1.1" 200') != n + 1:
        raise BenchError(f"(u) uvicorn's access log does not have {n + 1} lines")
    found = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if server.returncode != 0 or found is None:
        raise BenchError(f"uvicorn ({app}, {variant}) under valgrind failed:\n{err[-2000:]}")
    try:
        if variant in ("b", "e", "p"):
            events = end_offset(bootstrap, topic)
            if events != n + 1:
                raise BenchError(f"({variant}) {events} events in Kafka for {n + 1} requests")
    finally:
        delete_topics(bootstrap, [topic])
    return int(found.group(1).replace(",", ""))


def measure(app: str, variants: list[str], low: int, high: int, bootstrap: str) -> dict[str, float]:
    """Instructions per request of each variant: (I(high) - I(low)) / (high - low)."""
    out: dict[str, float] = {}
    for variant in variants:
        counts = [_count(app, variant, n, bootstrap) for n in (low, high)]
        out[variant] = (counts[1] - counts[0]) / (high - low)
        label = f"{app} {VARIANTS[variant]}"
        print(f"  {label}: {out[variant]:,.0f} instructions a request", flush=True)
    return out


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| app | variant | instructions per request | over (a) | share of (a) |",
        "|---|---|--:|--:|--:|",
    ]
    for app, per in results.items():
        base = per.get("a")
        for variant, count in per.items():
            over = share = ""
            if base is not None and variant != "a":
                over = f"{count - base:+,.0f}"
                share = f"{(count - base) / base * 100:+.1f}%"
            lines.append(f"| {app} | {VARIANTS[variant]} | {count:,.0f} | {over} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server_instructions")
    parser.add_argument("--app", choices=[*APPS, "both"], default="both")
    parser.add_argument("--requests", default="500,2500", help="N1,N2 (N2 > N1)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    low, high = (int(x) for x in args.requests.split(","))
    if not 0 < low < high:
        raise SystemExit(f"--requests must be N1,N2 with 0 < N1 < N2, not {args.requests!r}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    apps = list(APPS) if args.app == "both" else [args.app]
    started = time.monotonic()
    with broker() as b:
        results = {app: measure(app, variants, low, high, b.bootstrap) for app in apps}
    print(
        f"\npython -m bench.server_instructions --requests {low},{high} "
        f"(uvicorn h11, {CONNECTIONS} connections; {time.monotonic() - started:.0f} s)\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
