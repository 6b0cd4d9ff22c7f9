"""Where a saturated uvicorn server's time goes, with and without the access log: the
profile behind the pinned-saturation figures (issue 17).

    python -m bench.profile_server [--app starlette|fastapi] [--seconds 5]

For variant (a) (no access log) and (b) (kafka_asgi's middleware) of the middleware
benchmark's app (bench/apps/), one at a time: uvicorn (1 worker, ``--loop asyncio
--http h11``) runs under ``cProfile`` pinned to core 1 (taskset), wrk loads it from
core 0 (1 thread, 16 connections) for ``--seconds``, then the profile is dumped.
Printed: requests/s, and the profiled time per request by package (kafka_asgi, h11,
uvicorn, starlette, asyncio, C built-ins...) and the functions (b) adds most.
cProfile slows Python code about twofold, so its microseconds are inflated; the
shares are the point.  Needs wrk and taskset; the broker as ``python -m bench``.
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.common import PYTHON, ROOT, BenchError, broker, create_topics, delete_topics, free_port

APPS = {"starlette": "bench.apps.starlette_app:app", "fastapi": "bench.apps.fastapi_app:app"}

_SERVER = """
import cProfile, os, signal, sys
import uvicorn
profile = cProfile.Profile()
def dump(*args):
    profile.disable()
    profile.dump_stats(sys.argv[3])
    os._exit(0)
signal.signal(signal.SIGUSR1, dump)
profile.enable()
uvicorn.run(sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]), loop="asyncio",
            http="h11", log_level="warning")
"""

PACKAGES = ("kafka_asgi", "h11", "uvicorn", "starlette", "fastapi", "anyio", "asyncio")


def _package(filename: str) -> str:
    if filename == "~":
        return "C built-ins"
    for name in PACKAGES:
        if f"/{name}/" in filename:
            return name
    return "other"


def _run(app: str, variant: str, bootstrap: str, topic: str, seconds: float, out: Path) -> int:
    port = free_port()
    env = dict(os.environ, BENCH_VARIANT=variant, BENCH_BOOTSTRAP=bootstrap, BENCH_TOPIC=topic)
    env["PYTHONPATH"] = str(ROOT)
    cmd = ["taskset", "-c", "1", PYTHON, "-c", _SERVER, APPS[app], str(port), str(out)]
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise BenchError(f"uvicorn ({variant}) did not start") from None
                time.sleep(0.2)
        wrk = ["taskset", "-c", "0", "wrk", "-t1", "-c16", f"-d{seconds:g}s", url]
        text = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
        requests = int(next(x for x in text.splitlines() if "requests in" in x).split()[0])
        print(f"({variant}) {requests / seconds:,.0f} requests/s (profiled)")
        server.send_signal(signal.SIGUSR1)
        server.wait(timeout=30)
        return requests
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_server")
    parser.add_argument("--app", choices=sorted(APPS), default="starlette")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise BenchError("needs wrk and taskset")
    per_package: dict[str, collections.Counter[str]] = {}
    per_function: dict[str, dict[str, float]] = {}
    with broker() as b, tempfile.TemporaryDirectory() as tmp:
        topic = f"bench-profile-{uuid.uuid4().hex[:8]}"
        create_topics(b.bootstrap, [topic], 1)
        try:
            for variant in ("a", "b"):
                out = Path(tmp) / f"{variant}.pstats"
                n = _run(args.app, variant, b.bootstrap, topic, args.seconds, out)
                stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
                packages: collections.Counter[str] = collections.Counter()
                functions: dict[str, float] = {}
                for (filename, line, name), (_, _, tottime, _, _) in stats.items():
                    us = tottime / n * 1e6
                    packages[_package(filename)] += us
                    functions[f"{Path(filename).name}:{line}({name})"] = us
                per_package[variant] = packages
                per_function[variant] = functions
        finally:
            delete_topics(b.bootstrap, [topic])
    a, bb = per_package["a"], per_package["b"]
    print("\nprofiled µs per request, by package: (a) no access log, (b) kafka_asgi")
    for name in sorted(set(a) | set(bb), key=lambda k: -bb[k]):
        print(f"  {name:12s} {a[name]:8.1f} {bb[name]:8.1f}   {bb[name] - a[name]:+7.1f}")
    total_a, total_b = sum(a.values()), sum(bb.values())
    print(f"  {'total':12s} {total_a:8.1f} {total_b:8.1f}   {total_b - total_a:+7.1f}")
    print(f"kafka_asgi's share of (b): {bb['kafka_asgi'] / total_b:.1%}")
    fa, fb = per_function["a"], per_function["b"]
    added = sorted(((fb[k] - fa.get(k, 0.0), k) for k in fb), reverse=True)[:10]
    print("\nwhat (b) adds most, profiled µs per request:")
    for us, name in added:
        print(f"  {us:+6.2f}  {name}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BenchError as exc:
        sys.exit(f"bench.profile_server: {exc}")
