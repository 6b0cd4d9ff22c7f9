"""kafka_asgi's producer CPU per record at full speed, user and system time apart: what
copying a batch on its way to the socket costs (issue 17).

    python -m bench.frame_cpu [--records 200000] [--size 1024] [--codec none] [--reps 3]
                              [--values log|random] [--yield-every 1000]

Each repetition runs in a fresh process: a producer (acks=1, one partition, the
topic made for the run) is warmed up with one acknowledged record, then
``send_nowait`` hands over ``--records`` distinct values of ``--size`` bytes (``log``:
bench/producer.py's log-like ones; ``random``: random hex digits, which no codec
shrinks), letting the event loop run every ``--yield-every`` records (1,000; 1 is a
web worker's pace, a loop turn per request) and waiting for room when the buffer is
full, then flushes.  Printed per repetition and as medians: records/s, and the
process's user and system CPU time (``resource.getrusage``) per record over the same
window.  To compare two commits, run it in a checkout of each, alternating.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import uuid
from typing import Any

from bench.common import PYTHON, ROOT, BenchError, broker, create_topics, delete_topics


async def _run(
    bootstrap: str, topic: str, n: int, size: int, codec: str, kind: str, every: int
) -> dict[str, float]:
    from bench.producer import Case, _values, ours_timed

    if kind == "random":
        import os

        values = [os.urandom(size // 2 + 1).hex().encode()[:size] for _ in range(n)]
    else:
        values = _values(n, size)
    elapsed, user, system = await ours_timed(
        bootstrap, topic, values, Case(size=size, codec=codec), yield_every=every
    )
    return {"records_per_s": n / elapsed, "user_us": user / n * 1e6, "sys_us": system / n * 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.frame_cpu")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--codec", default="none")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--values", choices=("log", "random"), default="log")
    parser.add_argument("--yield-every", type=int, default=1000)
    parser.add_argument("--child", nargs=2, metavar=("BOOTSTRAP", "TOPIC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import anyio

        bootstrap, topic = args.child
        result = anyio.run(
            _run,
            bootstrap,
            topic,
            args.records,
            args.size,
            args.codec,
            args.values,
            args.yield_every,
        )
        print("BENCH_JSON " + json.dumps(result))
        return
    runs: list[dict[str, Any]] = []
    with broker() as b:
        for rep in range(args.reps):
            topic = f"bench-frame-cpu-{uuid.uuid4().hex[:8]}"
            create_topics(b.bootstrap, [topic], 1)
            try:
                cmd = [PYTHON, "-m", "bench.frame_cpu", "--records", str(args.records)]
                cmd += ["--size", str(args.size), "--codec", args.codec, "--values", args.values]
                cmd += ["--yield-every", str(args.yield_every)]
                cmd += ["--child", b.bootstrap, topic]
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT
                )
            finally:
                delete_topics(b.bootstrap, [topic])
            line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
            if line is None:
                raise BenchError(f"repetition {rep + 1} failed:\n{proc.stdout}{proc.stderr}")
            run = json.loads(line[len("BENCH_JSON ") :])
            runs.append(run)
            print(
                f"run {rep + 1}: {run['records_per_s'] / 1000:.1f} k records/s, "
                f"user {run['user_us']:.2f} µs/record, sys {run['sys_us']:.2f} µs/record"
            )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"median of {len(runs)}: {med['records_per_s'] / 1000:.1f} k records/s, "
        f"user {med['user_us']:.2f} µs/record, sys {med['sys_us']:.2f} µs/record "
        f"({args.records:,} x {args.size} B {args.values} values, {args.codec})"
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BenchError as exc:
        sys.exit(f"bench.frame_cpu: {exc}")
