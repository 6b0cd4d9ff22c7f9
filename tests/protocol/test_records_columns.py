"""encode_batch_columns: the producer's column-wise encoder makes encode_batch's bytes."""

from __future__ import annotations

import random

import pytest

from kafka_asgi.protocol.records import decode_batches, encode_batch, encode_batch_columns

_MS = 1_000_000


def _case(
    rng: random.Random, n: int, step: int, size: int
) -> tuple[list, list, list | None, list | None]:
    base = 1_700_000_000_123_456_789
    stamps = sorted(base + i * step + rng.randint(0, step) for i in range(n))
    values: list[bytes | None] = [rng.randbytes(rng.randint(0, size)) for _ in range(n)]
    return values, stamps, None, None


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 8191, 8192, 8193, 9000])
# step: records in one millisecond (0, 1 µs apart), spread over a few per millisecond
# (1/2 ms apart, 1 ms: a web worker's events; a delta per record), or far apart (3 ms,
# 70 ms: batches spanning beyond 8 s take a run per millisecond again).
@pytest.mark.parametrize("step", [0, 1_000, _MS // 2, _MS, 3 * _MS, 70 * _MS])
def test_plain_values_match_encode_batch(n: int, step: int) -> None:
    rng = random.Random(n * 31 + step)
    values, stamps, _, _ = _case(rng, n, step, 200)
    records = [(None, v, None, ns // _MS) for v, ns in zip(values, stamps, strict=True)]
    assert encode_batch_columns(values, stamps) == encode_batch(records)
    assert encode_batch_columns(
        values, stamps, producer_id=7, producer_epoch=1, base_sequence=3
    ) == encode_batch(records, producer_id=7, producer_epoch=1, base_sequence=3)


def test_mixed_columns_match_encode_batch() -> None:
    rng = random.Random(5)
    for trial in range(200):
        n = rng.randint(1, 300)
        values, stamps, _, _ = _case(
            rng, n, rng.choice([0, 10_000, 2 * _MS]), 20_000 if trial % 7 == 0 else 60
        )
        if rng.random() < 0.3:
            rng.shuffle(stamps)  # a clock stepped back
        if rng.random() < 0.3:
            values[rng.randrange(n)] = None
        keys = [None if rng.random() < 0.5 else b"k%d" % i for i in range(n)] if trial % 3 else None
        headers = (
            [None if rng.random() < 0.5 else [("h", b"v"), ("n", None)] for _ in range(n)]
            if trial % 4 == 0
            else None
        )
        records = [
            (
                None if keys is None else keys[i],
                values[i],
                None if headers is None else headers[i],
                stamps[i] // _MS,
            )
            for i in range(n)
        ]
        data = encode_batch_columns(
            values, stamps, keys, headers, compression=1 if trial % 5 == 0 else 0
        )
        assert data == encode_batch(records, compression=1 if trial % 5 == 0 else 0)
        (batch,) = decode_batches(data)
        assert [r.value for r in batch.records] == values


def test_bad_columns_are_named() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        encode_batch_columns([], [])
    with pytest.raises(ValueError, match="2 values, 1 timestamps"):
        encode_batch_columns([b"a", b"b"], [0])
    with pytest.raises(TypeError, match=r"timestamps_ns\[1\]"):
        encode_batch_columns([b"a", b"b"], [0, "later"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"records\[1\] value"):
        encode_batch_columns([b"a", 5], [0, 0])  # type: ignore[list-item]


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_section_then_assemble_makes_the_same_batch(codec: int) -> None:
    """The producer's two-step encoding (records section, compression on a worker
    thread, header around it) writes encode_batch_columns's bytes."""
    from kafka_asgi.protocol.compression import compress
    from kafka_asgi.protocol.records import assemble_batch, encode_records_section

    if codec in (2, 3, 4):
        pytest.importorskip("cramjam")
    rng = random.Random(codec)
    for trial in range(40):
        n = rng.randint(1, 400)
        values, stamps, _, _ = _case(rng, n, rng.choice([0, 10_000, 2 * _MS]), 300)
        keys = [None if rng.random() < 0.5 else b"k%d" % i for i in range(n)] if trial % 2 else None
        headers = (
            [None if rng.random() < 0.5 else [("h", b"v")] for _ in range(n)] if trial % 3 else None
        )
        section = encode_records_section(values, stamps, keys, headers)
        assert section is not None
        body, base_ts, max_delta = section
        packed = compress(codec, body) if codec else body
        stamp = {"producer_id": 9, "producer_epoch": 2, "base_sequence": 40 + trial}
        made = assemble_batch(
            packed, n, base_ts, max_delta, compression=codec, compressed=True, **stamp
        )
        assert made == encode_batch_columns(
            values, stamps, keys, headers, compression=codec, **stamp
        )
        # Not compressed yet: assemble_batch compresses it itself.
        assert assemble_batch(body, n, base_ts, max_delta, compression=codec, **stamp) == made


def test_section_leaves_unusual_input_to_the_checked_path() -> None:
    from kafka_asgi.protocol.records import assemble_batch, encode_records_section

    assert encode_records_section([], []) is None
    assert encode_records_section([b"a", b"b"], [0]) is None  # columns of different lengths
    assert encode_records_section([b"a", 5], [0, 0]) is None  # type: ignore[list-item]
    # A timestamp out of range: the section is made, the header names it.
    section = encode_records_section([b"a"], [-(1 << 90)])
    assert section is not None
    with pytest.raises(ValueError, match=f"base_ts={-(1 << 90) // _MS}"):
        assemble_batch(section[0], 1, section[1], section[2])


def test_encoding_tables_are_never_changed_once_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # A table is grown by publishing a longer copy: one an encoder (another thread's)
    # is reading keeps its entries, at their index.
    from kafka_asgi.protocol import record_encoder as enc

    monkeypatch.setattr(enc, "_LENGTHS", {})
    monkeypatch.setattr(enc, "_OFFSET_NULL_KEY", [])
    monkeypatch.setattr(enc, "_ATTRIBUTES_DELTA", [])
    for grow in (
        lambda size: enc._lengths(2, size),
        enc._offsets_null_key,
        enc._attributes_delta,
    ):
        small = grow(10)
        before = list(small)
        large = grow(500)
        assert small == before
        assert large[: len(before)] == before
        assert len(large) >= 500


def test_threads_encoding_at_once_make_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Producers in several threads (a WSGI worker's background producer beside
    # another) encode at once, the tables growing under them: each batch must still be
    # encode_batch's (an in-place extension put entries at the wrong index about one
    # trial in two).
    import sys
    import threading

    from kafka_asgi.protocol import record_encoder as enc

    wrong: list[int] = []

    def encode_some(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20):
            n = rng.randint(1, 3000)
            step = rng.choice([_MS // 2, _MS, 2 * _MS])
            stamps = [1_700_000_000_000_000_000 + i * step for i in range(n)]
            values = [b"v" * rng.randint(0, 300) for _ in range(n)]
            records = [(None, v, None, ns // _MS) for v, ns in zip(values, stamps, strict=True)]
            if encode_batch_columns(values, stamps) != encode_batch(records):
                wrong.append(seed)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can
    try:
        for trial in range(4):
            monkeypatch.setattr(enc, "_LENGTHS", {})
            monkeypatch.setattr(enc, "_OFFSET_NULL_KEY", [])
            monkeypatch.setattr(enc, "_ATTRIBUTES_DELTA", [])
            threads = [
                threading.Thread(target=encode_some, args=(trial * 10 + k,)) for k in range(6)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
