"""A producer's CPU per record at full speed, user and system time apart, and the
broker's beside it: what copying a batch on its way to the socket costs, and which
side of the machine a throughput case is bound by (issue 17).

    python -m bench.frame_cpu [--records 200000] [--size 1024] [--codec none] [--reps 3]
                              [--values log|random] [--yield-every 1000] [--acks 1|all]
                              [--client kafka_asgi|confluent-kafka] [--idempotence]

Each repetition runs in a fresh process: a producer (acks=1, one partition, the
topic made for the run) is warmed up with one acknowledged record, then
``send_nowait`` hands over ``--records`` distinct values of ``--size`` bytes (``log``:
bench/producer.py's log-like ones; ``random``: random hex digits, which no codec
shrinks), letting the event loop run every ``--yield-every`` records (1,000; 1 is a
web worker's pace, a loop turn per request) and waiting for room when the buffer is
full, then flushes.  Printed per repetition and as medians: records/s, and the
process's user and system CPU time (``resource.getrusage``) per record over the same
window.  With the local broker (scripts/kafka_local.py, one node), also the broker
process's CPU per record over the window (``/proc/<pid>/stat``) and how busy the
machine's cores were: client and broker CPU over wall time times the core count.
``--client confluent-kafka`` measures confluent-kafka's send loop (bench/producer.py)
the same way, its C threads counted in the process's CPU.  ``--idempotence`` turns it
on for either client (acks=all).  To compare two commits, run
it in a checkout of each, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from typing import Any

from bench.common import PYTHON, ROOT, BenchError, broker, create_topics, delete_topics


def _broker_pid() -> int | None:
    """The pid of the one local Kafka broker process, None if not exactly one."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and b"java" in cmdline:
            pids.append(int(entry))
    return pids[0] if len(pids) == 1 else None


def _process_cpu(pid: int | None) -> float:
    """User plus system CPU seconds of process ``pid`` so far (0 without one)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of proc(5), the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(
    bootstrap: str,
    topic: str,
    n: int,
    size: int,
    codec: str,
    kind: str,
    every: int,
    acks: str,
    client: str,
    idempotent: bool = False,
) -> dict[str, float]:
    from bench.producer import Case, _values, confluent_timed, ours_timed

    if kind == "random":
        values = [os.urandom(size // 2 + 1).hex().encode()[:size] for _ in range(n)]
    else:
        values = _values(n, size)
    case = Case(size=size, codec=codec, acks=acks, idempotent=idempotent)
    pid = _broker_pid()
    broker_before = _process_cpu(pid)
    if client == "confluent-kafka":
        elapsed, user, system = confluent_timed(bootstrap, topic, values, case)
    else:
        import anyio

        elapsed, user, system = anyio.run(ours_timed, bootstrap, topic, values, case, every)
    # The broker's CPU over about the same window (the warm-up is outside both).
    broker = _process_cpu(pid) - broker_before
    cores = os.cpu_count() or 1
    return {
        "records_per_s": n / elapsed,
        "user_us": user / n * 1e6,
        "sys_us": system / n * 1e6,
        "broker_us": broker / n * 1e6 if pid is not None else -1.0,
        "busy": (user + system + broker) / (elapsed * cores) if pid is not None else -1.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.frame_cpu")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--codec", default="none")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--values", choices=("log", "random"), default="log")
    parser.add_argument("--yield-every", type=int, default=1000)
    parser.add_argument("--acks", choices=("1", "all"), default="1")
    parser.add_argument("--client", choices=("kafka_asgi", "confluent-kafka"), default="kafka_asgi")
    parser.add_argument("--idempotence", action="store_true", help="both clients idempotent")
    parser.add_argument("--child", nargs=2, metavar=("BOOTSTRAP", "TOPIC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        bootstrap, topic = args.child
        result = _run(
            bootstrap,
            topic,
            args.records,
            args.size,
            args.codec,
            args.values,
            args.yield_every,
            args.acks,
            args.client,
            args.idempotence,
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
                cmd += ["--yield-every", str(args.yield_every), "--acks", args.acks]
                cmd += ["--client", args.client]
                if args.idempotence:
                    cmd.append("--idempotence")
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
            print(f"run {rep + 1}: {_line(run)}")
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"median of {len(runs)}: {_line(med)} ({args.client}, {args.records:,} x "
        f"{args.size} B {args.values} values, {args.codec}, acks={args.acks})"
    )


def _line(run: dict[str, float]) -> str:
    text = (
        f"{run['records_per_s'] / 1000:.1f} k records/s, "
        f"user {run['user_us']:.2f} µs/record, sys {run['sys_us']:.2f} µs/record"
    )
    if run["broker_us"] >= 0:
        text += f", broker {run['broker_us']:.2f} µs/record, cores busy {run['busy']:.0%}"
    return text


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BenchError as exc:
        sys.exit(f"bench.frame_cpu: {exc}")
