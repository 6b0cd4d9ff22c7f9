"""The spill store on its own: segments, budget, acks, locks and adoption (no broker)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from kafka_asgi.producer import spill
from kafka_asgi.producer.spill import SpillStore
from kafka_asgi.protocol.spill import SEGMENT_HEADER, encode_ack, encode_frame
from tests.support.spill_files import zero_fill

TS = 1_700_000_000_000


def _frame(i: int, n: int = 1, topic: str = "t") -> bytes:
    return encode_frame(
        topic, i % 3, [(b"k%d" % i, b"v%d-%d" % (i, j), None, TS) for j in range(n)]
    )


def _store(root: Path, **kw: object) -> SpillStore:
    options: dict[str, object] = {"max_bytes": 1 << 30, "segment_bytes": 1 << 20, "fsync": "never"}
    options.update(kw)
    store = SpillStore(root, **options)  # type: ignore[arg-type]
    store.open()
    return store


def _die(store: SpillStore) -> None:
    """Drop a store as a killed process would: locks released, nothing cleaned."""
    for seg in store._segments:
        for fd in (seg.fd, seg.ack_fd):
            if fd is not None:
                os.close(fd)
        seg.fd = seg.ack_fd = None
    for fd in store._locks.values():
        os.close(fd)
    store._locks.clear()
    store.closed = True


def _read_all(store: SpillStore) -> list[tuple[object, object]]:
    out = []
    while True:
        r = store.read()
        if not r.frames and not r.damage:
            return out
        out += r.frames


def test_write_read_ack_deletes_segments(tmp_path: Path) -> None:
    store = _store(tmp_path, segment_bytes=400)
    frames = [_frame(i) for i in range(20)]
    assert store.append(frames) == 20
    assert store.own is not None
    segs = sorted(store.own.glob("*.seg"))
    assert len(segs) > 3  # rolled at segment_bytes
    assert all(p.stat().st_size <= 400 for p in segs)
    got = _read_all(store)
    assert [f.records for _, f in got] == [  # type: ignore[attr-defined]
        [(b"k%d" % i, b"v%d-0" % i, None, TS)] for i in range(20)
    ]
    # Nothing deleted before every frame of a segment is acknowledged.
    assert sorted(store.own.glob("*.seg")) == segs
    for seg, frame in got[:-1]:
        store.ack(seg, frame.offset)  # type: ignore[arg-type, attr-defined]
    assert sorted(store.own.glob("*.seg")) == segs[-1:]
    seg, frame = got[-1]
    store.ack(seg, frame.offset)  # type: ignore[arg-type, attr-defined]
    assert list(store.own.glob("*.seg")) == []
    assert store.disk_bytes == 0
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_budget_is_exact(tmp_path: Path) -> None:
    frame = _frame(1)
    store = _store(tmp_path, max_bytes=8 + 5 * len(frame) + 3)
    assert store.append([frame] * 3) == 3
    assert store.append([frame] * 3) == 2  # the sixth does not fit
    assert store.append([frame]) == 0
    assert store.disk_bytes == 8 + 5 * len(frame)
    got = _read_all(store)
    assert len(got) == 5
    for seg, f in got:
        store.ack(seg, f.offset)  # type: ignore[arg-type, attr-defined]
    assert store.append([frame]) == 1  # room again once acknowledged
    store.close()


def test_live_directory_is_never_shared(tmp_path: Path) -> None:
    a = _store(tmp_path)
    a.append([_frame(i) for i in range(3)])
    b = _store(tmp_path)
    assert b.adopted == []
    assert _read_all(b) == []
    assert len(_read_all(a)) == 3
    a.close()
    b.close()


def _making(root: Path, name: str, *, lock: bool, age: float) -> Path:
    """A directory as a producer killed between its mkdir and its rename leaves it."""
    d = root / f".making-{name}"
    d.mkdir(parents=True)
    if lock:
        (d / "LOCK").touch()
    then = time.time() - age
    os.utime(d, (then, then))
    return d


def test_directories_left_half_made_are_removed_once_stale_and_unlocked(
    tmp_path: Path,
) -> None:
    stale_locked_file = _making(tmp_path, "g0000000001-11-aa", lock=True, age=3600)
    stale_no_lock = _making(tmp_path, "g0000000001-12-bb", lock=False, age=3600)
    fresh = _making(tmp_path, "g0000000001-13-cc", lock=True, age=0)
    held = _making(tmp_path, "g0000000001-14-dd", lock=True, age=3600)
    holder = os.open(held / "LOCK", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its producer, alive
    os.utime(held, (time.time() - 3600,) * 2)
    not_empty = _making(tmp_path, "g0000000001-15-ee", lock=True, age=3600)
    (not_empty / "000000000001.seg").write_bytes(SEGMENT_HEADER)
    os.utime(not_empty, (time.time() - 3600,) * 2)
    try:
        store = _store(tmp_path)
        assert not stale_locked_file.exists()
        assert not stale_no_lock.exists()
        assert fresh.is_dir()  # may be a producer's, between its mkdir and its rename
        assert held.is_dir()
        assert (held / "LOCK").exists()
        # Something not a producer's making put there: left alone, nothing read from it.
        assert (not_empty / "000000000001.seg").exists()
        assert store.adopted == []
        assert store.own is not None and store.own.is_dir()
        store.close()
    finally:
        os.close(holder)
    # Released (its producer died holding it) and stale: the next open removes it.
    again = _store(tmp_path)
    assert not held.exists()
    assert fresh.is_dir()
    again.close()


def test_dead_directory_is_adopted_once_and_acks_survive(tmp_path: Path) -> None:
    a = _store(tmp_path, segment_bytes=300)
    a.append([_frame(i) for i in range(10)])
    _die(a)
    b = _store(tmp_path)
    c = _store(tmp_path)  # started after b: a's directory is b's
    assert b.adopted == [a.own]
    assert c.adopted == []
    got = _read_all(b)
    assert len(got) == 10
    for seg, frame in got[:4]:
        b.ack(seg, frame.offset)  # type: ignore[arg-type, attr-defined]
    _die(b)
    c.close()
    d = _store(tmp_path)
    rest = _read_all(d)
    # Only the frames whose acknowledgement was not recorded come back.
    assert [f.records for _, f in rest] == [f.records for _, f in got[4:]]  # type: ignore[attr-defined]
    for seg, frame in rest:
        d.ack(seg, frame.offset)  # type: ignore[arg-type, attr-defined]
    d.close()
    assert list(tmp_path.iterdir()) == []


def test_a_torn_ack_entry_does_not_garble_the_acks_written_after_it(tmp_path: Path) -> None:
    # A dies in the middle of an ack entry (half of it in the file). B adopts the
    # segment and acknowledges frames: its entries, appended after the torn one, were
    # misaligned, read as garbage by C after B died too, and the frames sent again.
    a = _store(tmp_path)
    a.append([_frame(i) for i in range(10)])
    got = _read_all(a)
    seg, frame = got[0]
    a.ack(seg, frame.offset)  # type: ignore[arg-type, attr-defined]
    _die(a)
    (ack_path,) = tmp_path.glob("*/*.ack")
    with ack_path.open("ab") as f:
        f.write(encode_ack(got[1][1].offset)[:4])  # type: ignore[attr-defined]
    b = _store(tmp_path)
    assert b.adopted == [a.own]
    rest = _read_all(b)
    assert len(rest) == 9  # the torn entry acknowledges nothing
    for seg, frame in rest[:5]:
        b.ack(seg, frame.offset)  # type: ignore[arg-type, attr-defined]
    _die(b)
    c = _store(tmp_path)
    again = [f.records for _, f in _read_all(c)]  # type: ignore[attr-defined]
    assert again == [f.records for _, f in rest[5:]]  # type: ignore[attr-defined]
    c.close()


def test_dead_producers_are_replayed_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dies with records on disk; B adopts them and spills newer records of its own
    # after them, then dies too; C must send A's before B's. Directory names were
    # sorted as strings ("w<pid>-<random>"): a container's worker has the same pid at
    # every start, and pids wrap, so that order was the random suffix's. Here the
    # suffixes come in descending order: by name alone, B's would go first.
    tokens = iter(["ffffffff", "80000000", "00000000"])
    monkeypatch.setattr(spill.secrets, "token_hex", lambda n: next(tokens))
    a = _store(tmp_path)
    a.append([_frame(i) for i in range(5)])
    _die(a)
    b = _store(tmp_path)
    assert b.adopted == [a.own]
    b.append([_frame(i) for i in range(5, 10)])
    _die(b)
    c = _store(tmp_path)
    assert c.adopted == [a.own, b.own]
    got = _read_all(c)
    values = [f.records[0][1] for _, f in got]  # type: ignore[attr-defined]
    assert values == [b"v%d-0" % i for i in range(10)]
    c.close()


def test_a_directory_of_an_earlier_version_is_replayed_first(tmp_path: Path) -> None:
    # Left by a version that named directories w<pid>-<random> (renamed here):
    # older than any numbered one, so its records go first.
    a = _store(tmp_path)
    a.append([_frame(i) for i in range(3)])
    _die(a)
    assert a.own is not None
    legacy = a.own.rename(tmp_path / f"w{os.getpid()}-ffffffff")
    b = _store(tmp_path)  # adopts it, spills newer records, dies too
    assert b.adopted == [legacy]
    assert b.own is not None and b.own.name.startswith("g0000000001-")
    b.append([_frame(i) for i in range(3, 6)])
    _die(b)
    c = _store(tmp_path)
    assert c.adopted == [legacy, b.own]
    values = [f.records[0][1] for _, f in _read_all(c)]  # type: ignore[attr-defined]
    assert values == [b"v%d-0" % i for i in range(6)]
    c.close()


def test_truncated_segment_loses_only_the_cut_frame(tmp_path: Path) -> None:
    a = _store(tmp_path)
    a.append([_frame(i) for i in range(5)])
    a.append([_frame(5, n=1)])
    _die(a)
    assert a.own is not None
    (seg_path,) = a.own.glob("*.seg")
    size = seg_path.stat().st_size
    os.truncate(seg_path, size - 7)
    b = _store(tmp_path)
    frames: list[object] = []
    damage = []
    while True:
        r = b.read()
        if not r.frames and not r.damage:
            break
        frames += r.frames
        damage += r.damage
    assert len(frames) == 5
    assert len(damage) == 1
    assert damage[0][1].records == 1
    b.close()


def test_segments_without_frames_are_not_left_behind(tmp_path: Path) -> None:
    # A worker killed between creating a segment and writing its first frame leaves
    # a segment of the file header only (or of less: a torn header). It holds nothing
    # to replay: the next producer deletes it when adopting the directory, instead of
    # counting no backlog for it and leaving it on disk for every later start.
    a = _store(tmp_path)
    a.append([_frame(i) for i in range(3)])
    a._roll()  # header only
    torn = a._roll()
    _die(a)
    os.truncate(torn.path, 3)
    assert a.own is not None
    assert len(list(a.own.glob("*.seg"))) == 3
    b = _store(tmp_path)
    assert b.adopted == [a.own]
    (kept,) = a.own.glob("*.seg")
    assert b.backlog_bytes == kept.stat().st_size - 8
    got = _read_all(b)
    assert len(got) == 3
    for seg, frame in got:
        b.ack(seg, frame.offset)  # type: ignore[arg-type, attr-defined]
    assert not a.own.exists()
    # Its own segment rolled and never written to goes at close, with its directory.
    b._roll()
    b.close()
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SpillStore(blocker / "spill", max_bytes=1000, segment_bytes=100)
    with pytest.raises(OSError):
        store.open()


def test_fsync_policies(tmp_path: Path) -> None:
    for policy in ("segment", "never", 0.0):
        store = _store(tmp_path / str(policy), fsync=policy, segment_bytes=200)
        assert store.append([_frame(i) for i in range(5)]) == 5
        store.sync()
        assert len(_read_all(store)) == 5
        store.close()


def test_large_frame_larger_than_read_chunk(tmp_path: Path) -> None:
    store = _store(tmp_path, read_bytes=64)
    big = encode_frame("t", 0, [(None, b"x" * 5000, None, TS)])
    store.append([_frame(0), big, _frame(2)])
    got = _read_all(store)
    assert [len(f.records[0][1]) for _, f in got] == [4, 5000, 4]  # type: ignore[attr-defined]
    store.close()


def test_sealed_segments_are_fsynced_in_the_background(tmp_path: Path) -> None:
    store = _store(tmp_path, fsync="segment", segment_bytes=200)
    assert not store.sync_due()
    assert store.append([_frame(i) for i in range(5)]) == 5  # rolls: seals segments
    assert store.sync_due()  # their fsync waits for a worker thread
    store.background_sync()
    assert not store.sync_due()
    periodic = _store(tmp_path / "p", fsync=0.0)
    assert not periodic.sync_due()
    periodic.append([_frame(0)])
    assert periodic.sync_due()
    periodic.background_sync()
    assert not periodic.sync_due()
    store.close()
    periodic.close()


@pytest.mark.parametrize("delivered", [True, False])
def test_reader_stops_in_front_of_a_held_frame(tmp_path: Path, delivered: bool) -> None:
    store = _store(tmp_path)
    store.append([_frame(0)])
    placed = store.append_held(_frame(1))
    assert placed is not None
    store.append([_frame(2), _frame(3)])
    first = store.read()
    assert [f.records[0][0] for _, f in first.frames] == [b"k0"]
    assert first.blocked and first.more
    again = store.read()
    assert again.frames == [] and again.blocked
    seg, offset = placed
    store.settle([(seg, offset, delivered)])
    rest = _read_all(store)
    # Delivered: its copy is never handed out; failed: it is, in its place.
    expected = [b"k2", b"k3"] if delivered else [b"k1", b"k2", b"k3"]
    assert [f.records[0][0] for _, f in rest] == expected  # type: ignore[attr-defined]
    for s, f in [*first.frames, *rest]:
        store.ack(s, f.offset)  # type: ignore[arg-type, attr-defined]
    assert store.disk_bytes == 0
    store.close()


def test_a_segment_read_past_settled_frames_goes_on_before_the_next_segment(
    tmp_path: Path,
) -> None:
    # Each segment starts with held copies (batches in flight when the topic began
    # spilling), then the frames moved behind them. Once the copies are settled
    # (delivered), a read of a chunk that holds only them must go on in the same
    # segment, not hand out the next segment's frames ahead of this one's.
    held_frame = _frame(0, n=20)
    store = _store(tmp_path)
    placed = []
    for first in (0, 100):
        for i in range(3):
            spot = store.append_held(_frame(first + i, n=20))
            assert spot is not None
            placed.append(spot)
        assert store.append([_frame(first + 10), _frame(first + 11)]) == 2
        store._roll()  # the next batch's copies start a segment, as in the run that found it
    store.settle([(seg, offset, True) for seg, offset in placed])
    order = []
    while True:
        # Chunks smaller than the settled copies (the replayer reads about what the
        # memory buffer has room for).
        r = store.read(len(held_frame) // 2)
        if not r.frames and not r.more:
            break
        order += [f.records[0][0] for _, f in r.frames]
    assert order == [b"k10", b"k11", b"k110", b"k111"]
    store.close()


def test_held_frame_needs_room_in_the_budget(tmp_path: Path) -> None:
    frame = _frame(0)
    store = _store(tmp_path, max_bytes=len(frame) + 10)
    assert store.append_held(frame) is not None
    assert store.append_held(frame) is None
    store.close()


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        pytest.param(1, [[b"k0"], [b"k2"], [b"k3"]], id="probe"),
        pytest.param(4096, [[b"k0"], [b"k2", b"k3"]], id="chunk-smaller-than-the-damage"),
    ],
)
def test_a_damaged_region_is_read_past_at_once_and_reported_once(
    tmp_path: Path, chunk: int, expected: list[list[bytes]]
) -> None:
    # 64 KiB of zeros between two frames. A read stopped at the first chunk holding
    # damage, reported as a piece of its own: a probe (read(1), one a second while
    # Kafka seems away) crossed 29 bytes of it per read, 2261 probes and 2260
    # SpillDamagedError for 64 KiB before the next frame. The frames after the
    # damage still come in reads of the size asked for (a probe's one frame).
    store = _store(tmp_path)
    lost = encode_frame("t", 0, [(None, b"x" * 65536, None, TS)])
    assert store.append([_frame(0), lost, _frame(2), _frame(3)]) == 4
    start = len(SEGMENT_HEADER) + len(_frame(0))
    zero_fill(store, start, len(lost))
    reads = []
    for _ in range(len(expected)):
        reads.append(store.read(chunk))
    assert [[f.records[0][0] for _, f in r.frames] for r in reads] == expected
    damage = [(d.offset, d.length, d.records) for r in reads for _, d in r.damage]
    assert damage == [(start, len(lost), None)]
    assert not reads[-1].more
    store.close()


def test_a_zero_filled_segment_start_is_one_damage_with_its_file_header(tmp_path: Path) -> None:
    # The file header too: one region from byte 0, not a report for the header and
    # one for each chunk of the zeros after it.
    store = _store(tmp_path)
    lost = encode_frame("t", 0, [(None, b"x" * 20000, None, TS)])
    assert store.append([lost, _frame(1)]) == 2
    zero_fill(store, 0, len(SEGMENT_HEADER) + len(lost))
    first = store.read(1)
    assert [f.records[0][0] for _, f in first.frames] == [b"k1"]
    assert [(d.offset, d.length) for _, d in first.damage] == [(0, len(SEGMENT_HEADER) + len(lost))]
    store.close()


def test_an_ack_that_cannot_be_written_loses_none_of_the_outcomes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk full as acks are written (ENOSPC): every outcome is still taken. Once
    the first ack failed, the rest were dropped: their frames stayed handed out for
    good, a given-back one was never read again, and the segment was never deleted."""
    import errno

    store = _store(tmp_path)
    assert store.append([_frame(i) for i in range(4)]) == 4
    (seg, _), *_ = read = _read_all(store)
    offsets = [f.offset for _, f in read]  # type: ignore[attr-defined]
    write = os.write

    def full(fd: int, data: bytes) -> int:
        if data == encode_ack(offsets[0]):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    monkeypatch.setattr(spill.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        store.settle(
            [
                (seg, offsets[0], True),
                (seg, offsets[1], True),  # type: ignore[list-item]
                (seg, offsets[2], False),
                (seg, offsets[3], True),
            ]
        )  # type: ignore[list-item]
    monkeypatch.setattr(spill.os, "write", write)
    # The given-back frame is read again, alone: the others were taken as acknowledged.
    again = _read_all(store)
    assert [f.offset for _, f in again] == [offsets[2]]  # type: ignore[attr-defined]
    store.settle([(seg, offsets[2], True)])  # type: ignore[list-item]
    # Every frame acknowledged: the segment is deleted, its disk freed.
    assert store.disk_bytes == 0
    store.close()


def test_a_failed_fsync_at_close_still_releases_every_file_and_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync failing at close (EIO): raised, but only after every descriptor is closed
    and every lock released. It stopped at the error with the store marked closed, so
    nothing closed them later: the directory stayed locked to this process, and a new
    producer on the same spill_dir could not adopt its records."""
    import errno

    store = _store(tmp_path, segment_bytes=400, fsync="segment")
    assert store.append([_frame(i, n=20) for i in range(6)]) == 6
    own = store.own
    assert own is not None
    opened = set(os.listdir("/proc/self/fd"))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spill.os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output"):
        store.close()
    monkeypatch.undo()
    assert len(opened - set(os.listdir("/proc/self/fd"))) >= 2  # the lock and segments
    assert store._locks == {}
    with open(own / "LOCK", "rb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
    after = _store(tmp_path)
    assert own in after.adopted
    assert len(_read_all(after)) == 6
    after.close()
