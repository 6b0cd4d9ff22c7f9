"""Every benchmark, side by side with the peers: ``python -m bench [--quick]``.

    python -m bench                      # full run (under 20 minutes), writes bench/RESULTS.md
    python -m bench --quick              # under 3 minutes, noisier; prints only
    python -m bench --only producer,middleware
    python -m bench --write-readme       # also replace README.md's bench block
    python -m bench --only tuned         # issue 17's runs, each alone (not in the
                                         # default run): tuned, uvloop, cpu, pinned

The broker: KAFKA_BOOTSTRAP_SERVERS if set (KAFKA_VERSION may name its version),
else the local one from scripts/kafka_local.py (reused when it runs; started, and
stopped at the end, when it does not).  Every benchmark makes its own topics and
deletes them at the end.

Each figure is the median of several repetitions after a warm-up, shown with the
min-max spread and, where peers are measured, how many times better kafka_asgi is
(>1: kafka_asgi is better; throughput ratio, or inverse latency ratio).
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    OURS,
    ROOT,
    Context,
    Result,
    advantage,
    broker,
    change,
    delete_topics,
    dump_json,
    find,
    machine,
    peer_versions,
    ratio_table,
    source_version,
)

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# ---------------------------------------------------------------------- codec


def run_codec(ctx: Context) -> list[Result]:
    from bench import codec

    return codec.run(ctx)


# ---------------------------------------------------------------------- producer


def run_producer(ctx: Context) -> list[Result]:
    from bench import producer

    return producer.run(ctx)


def run_handoff(ctx: Context) -> list[Result]:
    from bench import producer

    return producer.run_handoff(ctx)


def run_middleware(ctx: Context) -> list[Result]:
    from bench import middleware

    return middleware.run(ctx)


def middleware_table(results: Sequence[Result]) -> str:
    from bench import middleware

    return middleware.table(results)


def run_tracecost(ctx: Context) -> list[Result]:
    from bench import middleware

    return middleware.trace_run(ctx)


def tracecost_table(results: Sequence[Result]) -> str:
    from bench import middleware

    return middleware.trace_table(results)


def run_tuned(ctx: Context) -> list[Result]:
    from bench import peers

    return peers.run_tuned(ctx)


def tuned_table(results: Sequence[Result]) -> str:
    from bench import peers

    return peers.tuned_table(results)


def run_uvloop(ctx: Context) -> list[Result]:
    from bench import peers, saturation

    return peers.run_uvloop(ctx) + saturation.run_uvloop(ctx)


def uvloop_table(results: Sequence[Result]) -> str:
    from bench import saturation

    return saturation.uvloop_table(results)


def run_cpu(ctx: Context) -> list[Result]:
    from bench import cpu

    return cpu.run(ctx)


def cpu_table(results: Sequence[Result]) -> str:
    from bench import cpu

    return cpu.table(results)


def run_pinned(ctx: Context) -> list[Result]:
    from bench import saturation

    return saturation.run_pinned(ctx)


def pinned_table(results: Sequence[Result]) -> str:
    from bench import saturation

    return saturation.pinned_table(results)


def run_memory(ctx: Context) -> list[Result]:
    from bench import memory

    return memory.run(ctx)


# ---------------------------------------------------------------------- sections


@dataclass
class Section:
    name: str
    title: str
    about: str
    run: Callable[[Context], list[Result]]
    table: Callable[[Sequence[Result]], str] = ratio_table
    needs_broker: bool = True
    # False: run only when named in --only (long runs outside the standard report).
    default: bool = True


SECTIONS = [
    Section(
        "producer",
        "Producer throughput",
        "Records per second from the first send until every record is acknowledged, "
        "each producer counting its own acknowledgements (a short count stops the run); "
        "each measurement in a fresh process on a fresh topic, clients taking turns. "
        "Distinct log-like values (lz4 shrinks them about 2.5-3x), no key, each client's "
        "defaults otherwise. kafka_asgi in async mode (`send_nowait`, then `flush()`), its "
        "loop letting the event loop run every 1,000 records as confluent-kafka's loop "
        'calls `poll(0)` every 1,000 (the row "kafka_asgi, loop never yields" shows '
        "a loop that only awaits when the buffer is full; the ratio there is kafka_asgi's "
        "over it). "
        "kafka-python sits out the lz4 cases: its lz4 codec needs the `lz4` package, "
        "which is not a dependency here (bench/producer.py).",
        run_producer,
    ),
    Section(
        "handoff",
        "Hand-off cost in the request path",
        "One call that hands a record over: kafka_asgi `send_nowait`, confluent-kafka "
        "`produce()`, aiokafka `send()` (the coroutine awaited until it returns its "
        "future, without waiting for the broker).",
        run_handoff,
    ),
    Section(
        "middleware",
        "Access-log middleware overhead",
        "A minimal app under uvicorn (1 worker, asyncio loop, h11), loaded over loopback "
        "by wrk (1 thread, 16 keep-alive connections; without wrk, an httpx load generator "
        "that cannot saturate the server, as the notes say) from another process: at "
        "saturation, and at a fixed rate below every variant's saturation. "
        "'in-process' calls each variant's app directly, 'µs/request' including the "
        "producer's background work: the middleware's cost without server or network noise. "
        "(a) no access log; (b) kafka_asgi's `AccessLogMiddleware`; (c) "
        '`@app.middleware("http")` awaiting aiokafka `send_and_wait()` per request, the '
        "middleware most apps have today; (d) (b) with Kafka stopped. Every event of (b) "
        "and (c) is checked as acknowledged afterwards. Cells: median (min-max). "
        "The Flask rows (bench/wsgi.py): the same variants for WSGI, (b) being "
        "`KafkaExtension` (the WSGI `AccessLogMiddleware` and its background producer) and "
        "(c) an `after_request` hook calling kafka-python's blocking `send().get()`; "
        "in-process calls the WSGI callable directly (the background producer's thread "
        "shares the GIL meanwhile); under gunicorn, 1 sync worker.",
        run_middleware,
        middleware_table,
    ),
    Section(
        "tracecost",
        "Trace context cost in the access-log middleware",
        "The ASGI AccessLogMiddleware alone around a minimal ASGI app, its producer a "
        "no-op, called in-process: `trace_context=False`, `True` without a "
        "`traceparent` header, `True` with one, and `True` in a process where the "
        "OpenTelemetry SDK is imported and a span is current (its ids are then the "
        "event's). CPU time of the calling thread (`time.thread_time`: the loop does "
        "no I/O, and wall time on a shared machine mostly counts other processes). "
        "Variants take turns in blocks of 2,000 requests; 'vs off' is the "
        "median over blocks of the difference to the same block's `trace_context=False` "
        "figure, and 'best blocks' the difference between each variant's fastest block "
        "(the least disturbed by other processes; the targets use it). All variants "
        "but 'no traceparent' get the same request, with a `traceparent` header "
        "(bench/middleware.py, `trace_run`).",
        run_tracecost,
        tracecost_table,
        needs_broker=False,
    ),
    Section(
        "memory",
        "Memory per buffered record, Kafka down",
        "Bytes per buffered 100-byte record, in a fresh process per measurement, "
        "measured after N `send_nowait` calls with no broker listening. "
        "'beyond payload' subtracts the 100 value bytes (the 33-byte header of the "
        "Python `bytes` object holding them is counted as overhead). aiokafka and "
        "kafka-python cannot buffer without metadata (their `send()` waits for the "
        "broker), so they are absent; confluent-kafka's queue is C memory, so RSS only.",
        run_memory,
    ),
    Section(
        "codec",
        "Record batch codec",
        "Encoding and decoding one magic-2 RecordBatch of 1000 records of 100 bytes "
        "(no key, no headers), beside aiokafka's record builder and reader "
        "(bench/codec.py). kafka_asgi encodes with the producer's own encoder "
        "(`encode_batch_columns`, records as parallel lists); `encode_batch (tuples)` is "
        "the general one-tuple-per-record API (the same decoder). lz4: kafka_asgi uses "
        "lz4's fast compressor, as the Java "
        "client does at its default level; aiokafka uses LZ4HC level 9.",
        run_codec,
        needs_broker=False,
    ),
    # Issue 17's runs, each alone with --only NAME (not part of the default run).
    Section(
        "tuned",
        "Tuned peers",
        "Producer throughput with each peer as its own docs advise for throughput beside "
        "its defaults (aiokafka and kafka-python: 1 MiB batches, linger 5 ms; "
        "confluent-kafka: linger.ms 20, batch.size 1 MiB, batch.num.messages 100,000), "
        "100 B, acks=1, no compression, 3 partitions; start-up, metadata and a warm-up "
        "record per partition outside the timed window for every client; then fewer "
        "records per run, to show how many a run needs to be stable (bench/peers.py).",
        run_tuned,
        tuned_table,
        default=False,
    ),
    Section(
        "uvloop",
        "uvloop",
        "The producer (bench/peers.py) and the middleware (bench/saturation.py) on "
        "asyncio's own loop and on uvloop's (uvicorn's default when uvloop is installed).",
        run_uvloop,
        uvloop_table,
        default=False,
    ),
    Section(
        "cpu",
        "CPU per 1,000 records",
        "Process CPU time (getrusage, every thread) per 1,000 records produced at a "
        "moderate fixed rate, each client in its own process (bench/cpu.py).",
        run_cpu,
        cpu_table,
        default=False,
    ),
    Section(
        "pinned",
        "Pinned saturation",
        "The middleware at saturation with the server pinned to one core and wrk and the "
        "broker to the other (taskset), variants alternated (bench/saturation.py).",
        run_pinned,
        pinned_table,
        default=False,
    ),
]


# ---------------------------------------------------------------------- targets


def _check(label: str, ok: bool, got: str) -> str:
    return f"| {label} | {got} | {'met' if ok else '**not met**'} |"


def _unsaturated(*rows: Result | None) -> bool:
    """Was a saturation row loaded by the httpx generator (no wrk)?  It cannot
    saturate the server: the row measures the generator, and judges nothing."""
    return any(r is not None and "load: httpx" in r.note for r in rows)


def targets(results: Sequence[Result]) -> list[str]:
    """The project's targets, each with the measured figure (whatever it is)."""
    lines: list[str] = []
    prod = [r for r in results if r.section == "producer" and r.impl == OURS]
    # The producer issue's target: 100-byte records with acks=1 (each codec and
    # partition count measured); then every case, beyond what the target asks.
    scopes = (
        ("100 B, acks=1", lambda case: case.startswith("100 B, acks=1,")),
        ("every case", lambda case: True),
    )
    for scope, selected in scopes:
        for peer, goal in (("aiokafka", 5.0), ("confluent-kafka", 1.0)):
            ratios = []
            for r in prod:
                other = find(results, "producer", r.case, peer, r.metric)
                if other is not None and selected(r.case):
                    ratios.append((advantage(r, other), r.case))
            if ratios:
                worst = min(ratios)
                lines.append(
                    _check(
                        f"producer >= {goal:g}x {peer} ({scope})",
                        worst[0] >= goal,
                        f"{worst[0]:.2f}x at worst ({worst[1]}); best {max(ratios)[0]:.2f}x",
                    )
                )
    for r in results:
        if r.section == "handoff" and r.impl == OURS and r.metric.startswith("median"):
            value_us = r.median * (1000 if "ms" in r.metric else 1)
            lines.append(_check("send_nowait < 1 µs median", value_us < 1.0, f"{value_us:.2f} µs"))
    a, b, d = "(a) no logging", "(b) kafka_asgi middleware", "(d) kafka_asgi, Kafka down"
    cases = dict.fromkeys(r.case for r in results if r.section == "middleware")
    for case in cases:
        if "saturation" in case:
            ra, rb, rd = (find(results, "middleware", case, v, "req/s") for v in (a, b, d))
            if _unsaturated(ra, rb, rd):
                lines.append(
                    f"| {case}: (b) versus (a), (d) versus (b) | not judged: the httpx load "
                    "generator cannot saturate the server (install wrk) | not measured |"
                )
                continue
            if ra and rb:
                lost = -change(rb, ra)
                lines.append(
                    _check(
                        f"{case}: (b) loses <= 3% of (a)'s req/s", lost <= 0.03, f"{lost:.1%} lost"
                    )
                )
            if rb and rd:
                diff = change(rd, rb)
                lines.append(
                    _check(
                        f"{case}: (d) req/s within 5% of (b)",
                        abs(diff) <= 0.05,
                        f"{diff:+.1%} vs (b)",
                    )
                )
        pa, pb = (find(results, "middleware", case, v, "p99 ms") for v in (a, b))
        if pa and pb:
            added = change(pb, pa)
            lines.append(
                _check(f"{case}: (b) adds <= 5% to (a)'s p99", added <= 0.05, f"{added:+.1%} p99")
            )
    for r in results:
        if r.section == "tracecost" and r.metric == "best µs vs off":
            lines.append(
                _check(
                    f"trace fields cost <= 1 µs ({r.impl})",
                    r.median <= 1.0,
                    f"{r.median:+.2f} µs",
                )
            )
    for r in results:
        if r.section == "memory" and r.impl == OURS and r.metric == "beyond payload (tracemalloc)":
            lines.append(
                _check(
                    f"memory <= 200 B beyond payload ({r.case.split(' records')[0]} records)",
                    r.median <= 200,
                    f"{r.median:.0f} B",
                )
            )
    if not lines:
        return []
    return ["| target | measured | |", "|---|---:|---|", *lines]


# ---------------------------------------------------------------------- report


def report(
    meta: dict[str, Any],
    sections: Sequence[Section],
    results: Sequence[Result],
    failures: dict[str, str],
) -> str:
    m = meta["machine"]
    v = meta["versions"]
    out = [
        README_START,
        "## Benchmarks",
        "",
        f"Measured {m['date']} ({meta['source']}) on {m['cpu']}, {m['cores']} cores "
        f"({m['os']}), "
        f"Python {m['python']}, against Apache Kafka {meta['kafka_version']} "
        f"({meta['broker']}); 1-minute load average {meta['load_before']} when the run "
        "began.",
        "Peers: "
        + ", ".join(f"{k} {v[k]}" for k in ("aiokafka", "confluent-kafka", "kafka-python"))
        + f" (librdkafka {v.get('librdkafka', '?')}); uvicorn {v['uvicorn']}, "
        f"Starlette {v['starlette']}, FastAPI {v['fastapi']}.",
        "",
        f"Command: `{meta['command']}` ({meta['mode']}; {meta['reps']} repetitions after "
        f"{meta['warmup']} warm-up, medians with the min-max spread; {meta['seconds']:.0f} s).",
    ]
    if meta["mode"] == "quick":
        out.append(
            "These are --quick figures, measured while other work shared the machine: "
            "indicative only."
        )
    tgt = targets(results)
    if tgt:
        out += ["", "### Targets", "", *tgt]
    for s in sections:
        rows = [r for r in results if r.section == s.name]
        out += ["", f"### {s.title}", "", s.about, ""]
        if s.name in failures:
            out.append(f"Not measured: {failures[s.name]}")
        elif rows:
            out.append(s.table(rows))
            noted = _first_note_per_impl(rows)
            if noted:
                out += ["", *(f"- {r.impl}: {r.note}" for r in noted)]
    out += ["", README_END, ""]
    return "\n".join(out)


def _first_note_per_impl(rows: Sequence[Result]) -> list[Result]:
    seen: dict[tuple[str, str], Result] = {}
    for r in rows:
        if r.note:
            seen.setdefault((r.case.split(",")[0], r.impl), r)
    return [
        Result(
            r.section, r.case, f"{r.case.split(',')[0]} {r.impl}", r.metric, r.samples, note=r.note
        )
        for r in seen.values()
    ]


def write_readme(text: str, readme: Path = ROOT / "README.md") -> bool:
    """Replace README.md's marked block with ``text`` (which carries the markers)."""
    if not readme.exists():
        return False
    current = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END) + r"\n?", re.S)
    if not pattern.search(current):
        return False
    readme.write_text(pattern.sub(lambda _: text, current, count=1))
    return True


def main(argv: Sequence[str] | None = None) -> None:
    names = [s.name for s in SECTIONS]
    standard = [s.name for s in SECTIONS if s.default]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short run (< 3 min), noisier")
    parser.add_argument(
        "--only",
        default=",".join(standard),
        help=f"comma-separated sections (default: all of {','.join(standard)}; "
        f"besides, alone: {','.join(n for n in names if n not in standard)})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"write the Markdown report here (default: {RESULTS.relative_to(ROOT)} "
        "for a full run of every section, nowhere for --quick)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also dump every sample as JSON")
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="replace README.md's <!-- bench:start --> ... <!-- bench:end --> block",
    )
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = sorted(set(only) - set(names))
    if bad:
        parser.error(f"unknown section(s) {bad}; known: {names}")
    sections = [s for s in SECTIONS if s.name in only]
    command = "python -m bench" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    warmup, reps = (1, 3) if args.quick else (1, 5)

    # SIGTERM unwinds like Ctrl-C: servers stopped, topics deleted, broker left as found.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    host = machine()  # date and load average as the run begins
    source = source_version()
    results: list[Result] = []
    failures: dict[str, str] = {}
    with broker() as b:
        ctx = Context(
            quick=args.quick,
            bootstrap=b.bootstrap,
            kafka_version=b.kafka_version,
            warmup=warmup,
            reps=reps,
        )
        print(
            f"broker {b.bootstrap} (Kafka {b.kafka_version}); "
            f"{'quick' if args.quick else 'full'} run of {', '.join(only)}",
            file=sys.stderr,
        )
        try:
            for s in sections:
                t0 = time.monotonic()
                print(f"== {s.name} ...", file=sys.stderr, flush=True)
                try:
                    got = s.run(ctx)
                except Exception as exc:  # one broken benchmark must not hide the others
                    failures[s.name] = f"{type(exc).__name__}: {exc}"
                    print(f"== {s.name} FAILED: {failures[s.name]}", file=sys.stderr)
                    continue
                results += got
                print(f"== {s.name} done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
                print(f"\n### {s.title}\n\n{s.table(got)}\n", file=sys.stderr, flush=True)
        finally:
            delete_topics(b.bootstrap, ctx.topics)
        meta = {
            "command": command,
            "mode": "quick" if args.quick else "full",
            "warmup": warmup,
            "reps": reps,
            "kafka_version": b.kafka_version,
            "broker": b.description,
            "machine": host,
            "load_before": host["load"],
            "source": source,
            "versions": peer_versions(),
            "seconds": time.monotonic() - started,
        }
    text = report(meta, sections, results, failures)
    print(text)
    output = args.output
    if output is None and not args.quick and {s.name for s in sections} == set(standard):
        output = RESULTS
    if output is not None:
        output.write_text(text)
        print(f"wrote {output}", file=sys.stderr)
    if args.json is not None:
        dump_json(args.json, meta, results)
    if args.write_readme and any(not s.default for s in sections):
        print(
            "README.md left as is: its benchmark block holds the standard run, and "
            f"{', '.join(s.name for s in sections if not s.default)} is not part of it",
            file=sys.stderr,
        )
    elif args.write_readme:
        if write_readme(text):
            print("replaced the benchmark block in README.md", file=sys.stderr)
        else:
            print(
                f"README.md has no {README_START} ... {README_END} block: left as is",
                file=sys.stderr,
            )
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
