"""Record batch codec throughput: kafka_asgi beside aiokafka, in the same run.

    python -m bench.codec            # full run
    python -m bench.codec --quick    # a few seconds

(``python -m bench`` runs it too, through :func:`run`: medians of repetitions, the
implementations taking turns.)

Encodes and decodes batches of 100-byte values (no key, no headers, one
timestamp: the shape of a busy access-log event stream), uncompressed and lz4; and
uncompressed with the records 1 ms apart (a web worker's events at a few hundred a
second: every record its own timestamp).
aiokafka is measured with its C extension and with its pure-Python classes.
Numbers are records per second, best of several repeats on this machine.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from bench.common import OURS, Context, Result, rate
from kafka_asgi.protocol.compression import Compression
from kafka_asgi.protocol.records import decode_batches, encode_batch, encode_batch_columns

VALUE_SIZE = 100
TS = 1_700_000_000_000


def _best_rate(fn: Callable[[], Any], records_per_call: int, budget: float, repeats: int) -> float:
    """Best records/s over ``repeats`` rounds of about ``budget`` seconds each."""
    fn()  # warm up (imports, caches)
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-9)
    calls = max(1, int(budget / once))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        best = max(best, calls * records_per_call / elapsed)
    return best


def _values(n: int) -> list[bytes]:
    # Log-like values: compressible, but not all identical.
    base = b"GET /api/v1/items?page=%06d HTTP/1.1 200 " % 0
    out = []
    for i in range(n):
        v = base + (b"%06d " % i) + os.urandom(8).hex().encode()
        out.append(v.ljust(VALUE_SIZE, b"-")[:VALUE_SIZE])
    return out


def _stamps_ms(n: int, spread: bool) -> list[int]:
    return [TS + i for i in range(n)] if spread else [TS] * n


def _ours(
    values: list[bytes], codec: Compression, spread: bool
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    # The producer's own encoder: records held as parallel lists (values and the
    # nanosecond timestamps send_nowait takes), as its partition buffers hold them.
    stamps = [ms * 1_000_000 for ms in _stamps_ms(len(values), spread)]
    batch = encode_batch_columns(values, stamps, compression=codec)

    def encode() -> bytes:
        return encode_batch_columns(values, stamps, compression=codec)

    def decode() -> Any:
        return decode_batches(batch)

    return encode, decode


def _ours_tuples(
    values: list[bytes], codec: Compression, spread: bool
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    # The general API: one (key, value, headers, timestamp_ms) tuple per record.
    stamps = _stamps_ms(len(values), spread)
    records = [(None, v, None, ms) for v, ms in zip(values, stamps, strict=True)]
    batch = encode_batch(records, compression=codec)

    def encode() -> bytes:
        return encode_batch(records, compression=codec)

    def decode() -> Any:
        return decode_batches(batch)

    return encode, decode


def _aiokafka(
    values: list[bytes], codec: Compression, spread: bool, builder_cls: Any, reader_cls: Any
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    stamps = _stamps_ms(len(values), spread)

    def encode() -> Any:
        builder = builder_cls(
            magic=2,
            compression_type=int(codec),
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 30,
        )
        append = builder.append
        for i, v in enumerate(values):
            append(i, timestamp=stamps[i], key=None, value=v, headers=[])
        return builder.build()

    batch = bytes(encode())

    def decode() -> Any:
        reader = reader_cls(batch)
        return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in reader]

    return encode, decode


# (codec, records 1 ms apart): a busy stream's batches, and a web worker's at a few
# hundred events a second.
CASES = ((Compression.NONE, False), (Compression.LZ4, False), (Compression.NONE, True))


def _label(codec: Compression, spread: bool) -> str:
    return codec.name.lower() + (", 1 ms apart" if spread else "")


Maker = Callable[[list[bytes], Compression, bool], tuple[Callable[[], Any], Callable[[], Any]]]


def _impls() -> list[tuple[str, Maker]]:
    impls: list[tuple[str, Maker]] = [
        (OURS, _ours),
        (f"{OURS} encode_batch (tuples)", _ours_tuples),
    ]
    try:
        from aiokafka.record import default_records as aio  # type: ignore[import-untyped]
    except ImportError:
        print("aiokafka is not installed: measuring kafka_asgi alone")
        return impls
    impls.append(
        (
            "aiokafka (C extension)",
            lambda v, c, s: _aiokafka(
                v, c, s, aio.DefaultRecordBatchBuilder, aio.DefaultRecordBatch
            ),
        )
    )
    impls.append(
        (
            "aiokafka (pure Python)",
            lambda v, c, s: _aiokafka(
                v, c, s, aio._DefaultRecordBatchBuilderPy, aio._DefaultRecordBatchPy
            ),
        )
    )
    return impls


def run(ctx: Context, batch: int = 1000) -> list[Result]:
    """The "codec" section of ``python -m bench``: encode and decode records/s."""
    values = _values(batch)
    budget = 0.1 if ctx.quick else 0.4
    results = []
    for codec, spread in CASES:
        case = f"{batch} x {VALUE_SIZE} B, {_label(codec, spread)}"
        fns = {name: make(values, codec, spread) for name, make in _impls()}
        samples: dict[tuple[str, str], list[float]] = {}
        for rep in range(ctx.warmup + ctx.reps):
            for name, (enc, dec) in fns.items():  # implementations take turns
                for metric, fn in (("encode records/s", enc), ("decode records/s", dec)):
                    r = rate(fn, batch, budget)
                    if rep >= ctx.warmup:
                        samples.setdefault((name, metric), []).append(r)
        for (name, metric), got in samples.items():
            results.append(Result("codec", case, name, metric, got))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.codec", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short run (a few seconds)")
    parser.add_argument("--batch", type=int, default=1000, help="records per batch (default 1000)")
    args = parser.parse_args(argv)
    budget, repeats = (0.05, 3) if args.quick else (0.3, 7)
    impls = _impls()

    values = _values(args.batch)
    print(f"batches of {args.batch} records, {VALUE_SIZE}-byte values, no key, no headers")
    header = f"{'case':<18} {'implementation':<34} {'encode rec/s':>14} {'decode rec/s':>14}"
    print(header)
    print("-" * len(header))
    for codec, spread in CASES:
        for name, make in impls:
            encode, decode = make(values, codec, spread)
            enc = _best_rate(encode, args.batch, budget, repeats)
            dec = _best_rate(decode, args.batch, budget, repeats)
            print(f"{_label(codec, spread):<18} {name:<34} {enc:>14,.0f} {dec:>14,.0f}")
    print(
        "lz4: kafka_asgi uses lz4's fast compressor (what the Java client does at its default"
        " level); aiokafka uses LZ4HC level 9."
    )


if __name__ == "__main__":
    main()
