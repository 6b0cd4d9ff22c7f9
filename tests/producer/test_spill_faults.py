"""The spill under faults injected into its file I/O (no broker): an append that
fails after filling a segment, producers starting together on one spill_dir, and
what the seam keeps per frame replayed."""

from __future__ import annotations

import builtins
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from kafka_asgi.errors import SpillDamagedError, SpillError
from kafka_asgi.producer import spill, spill_seam
from kafka_asgi.producer.errors import DeliveryTimeoutError
from kafka_asgi.producer.spill import SpillStore
from kafka_asgi.producer.spill_seam import FRAME_RECORDS, FrameTicket, SpillHost, SpillSeam
from kafka_asgi.protocol.errors import KafkaError, TopicAuthorizationFailedError
from kafka_asgi.protocol.spill import SEGMENT_HEADER, encode_frame
from tests.support.fake_client import FakeClient
from tests.support.producers import make
from tests.support.spill_files import zero_fill
from tests.support.timing import eventually, scaled

TS = 1_700_000_000_000
Hook = Callable[[str, tuple[Any, ...]], None]


class _HookedOs:
    """The os module as spill.py sees it, with ``hook(name, args)`` called before each
    of its functions (the hook may raise that call's error, or run something first)."""

    def __init__(self, hook: Hook) -> None:
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if not callable(real):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            self._hook(name, args)
            return real(*args, **kwargs)

        return call


def _fail_nth(name: str, nth: int, code: int, match: str = "") -> Hook:
    """A hook failing the ``nth`` call of ``os.<name>`` (on a path ending ``match``)."""
    seen = 0

    def hook(called: str, args: tuple[Any, ...]) -> None:
        nonlocal seen
        if called != name or not str(args[0]).endswith(match):
            return
        seen += 1
        if seen == nth:
            raise OSError(code, os.strerror(code))

    return hook


def _store(root: Path, **kw: Any) -> SpillStore:
    options: dict[str, Any] = {"max_bytes": 1 << 30, "segment_bytes": 1 << 20, "fsync": "never"}
    options.update(kw)
    store = SpillStore(root, **options)
    store.open()
    return store


def _values(store: SpillStore) -> list[bytes | None]:
    out: list[bytes | None] = []
    while True:
        r = store.read()
        if not r.frames and not r.damage:
            return out
        out += [rec[1] for _, f in r.frames for rec in f.records]


# A frame of 64 of these is larger than a 4096-byte segment: one frame per segment,
# so the second frame of an append needs a second segment.
def _records(n: int) -> list[tuple[bytes | None, bytes | None, None, int]]:
    return [(b"k%d" % (i % 7), b"%04d" % i, None, TS) for i in range(n)]


_SECOND_SEGMENT_FAULTS = [
    pytest.param("open", 2, errno.EMFILE, ".seg", id="its-open-EMFILE"),
    # Writes: header 1, frame 1, header 2, then the second segment's first frame.
    pytest.param("write", 4, errno.ENOSPC, "", id="its-first-frame-ENOSPC"),
]


@pytest.mark.parametrize(("call", "nth", "code", "match"), _SECOND_SEGMENT_FAULTS)
def test_an_append_failing_in_its_second_segment_says_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, nth: int, code: int, match: str
) -> None:
    # The frame written to the first segment stays there and is replayed: the error
    # must say so, or the caller reports it as not spilled while it is delivered later.
    store = _store(tmp_path, segment_bytes=4096)
    frames = [encode_frame("t", 0, _records(200)[i : i + 64]) for i in range(0, 200, 64)]
    assert len(frames[0]) > 4096 - 8
    monkeypatch.setattr(spill, "os", _HookedOs(_fail_nth(call, nth, code, match)))
    with pytest.raises(OSError) as failed:
        store.append(frames)
    monkeypatch.undo()
    assert failed.value.errno == code
    assert getattr(failed.value, "written", None) == 1
    assert isinstance(failed.value, spill._PartialAppendError)
    assert store.disk_bytes == sum(p.stat().st_size for p in tmp_path.glob("*/*.seg"))
    store.close()
    after = _store(tmp_path)
    assert _values(after) == [b"%04d" % i for i in range(64)]
    after.close()


class _Host:
    """What the seam calls back, recording the records reported as dropped."""

    def __init__(self) -> None:
        self.dropped: list[tuple[str, list[Any], KafkaError]] = []

    def report_dropped(self, topic: str, partition: int, records: list[Any], e: KafkaError) -> None:
        self.dropped.append((topic, list(records), e))

    def spill_host(self) -> SpillHost:
        def nothing() -> None:
            pass

        def no_inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
            raise AssertionError("no replayer runs here")

        return SpillHost(lambda: 0, no_inject, self.report_dropped, nothing, nothing)


def _seam(store: SpillStore) -> tuple[SpillSeam, _Host]:
    """A seam over an open store, as SpillSeam.run leaves it (without its tasks)."""
    host = _Host()
    seam = SpillSeam(store, when_full="drop_newest", queue_limit=10_000, replay_limit=64)
    seam._host = host.spill_host()
    seam.ready = True
    return seam, host


def _spill(seam: SpillSeam, records: list[Any]) -> None:
    """Records of topic "t" that failed delivery, to the disk (the producer moves the
    topic's memory records first: here there are none)."""
    assert seam.intercept("t", 0, records, None, DeliveryTimeoutError("timed out")) is None
    seam.begin_evacuation()
    seam.end_evacuation()


def test_records_written_before_a_failed_roll_are_not_reported_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 200 records, 4096-byte segments, the second segment cannot be opened (EMFILE):
    # the first frame's 64 records are on disk and replayed by the next producer, so
    # only the other 136 may be reported (they were reported too, all 200), and the
    # topic's backlog must still count the 64 (it keeps spilling, nothing overtakes).
    records = _records(200)
    store = _store(tmp_path, segment_bytes=4096)
    seam, host = _seam(store)
    monkeypatch.setattr(spill, "os", _HookedOs(_fail_nth("open", 2, errno.EMFILE, ".seg")))
    _spill(seam, records)
    monkeypatch.undo()
    reported = [r for _, rs, _ in host.dropped for r in rs]
    assert reported == records[FRAME_RECORDS:]
    assert all(isinstance(e, SpillError) for _, _, e in host.dropped)
    assert isinstance(seam.last_error, SpillError)
    assert (seam.spilled, seam.dropped, seam.queued) == (FRAME_RECORDS, 200 - FRAME_RECORDS, 0)
    assert seam._backlog == {"t": FRAME_RECORDS}
    assert "t" in seam.spilling
    store.close()
    after = _store(tmp_path)
    assert _values(after) == [r[1] for r in records[:FRAME_RECORDS]]
    after.close()


@pytest.mark.parametrize("outcome", ["delivered", "half re-spilled"])
def test_a_frame_settled_for_good_leaves_no_replay_count_behind(
    tmp_path: Path, outcome: str
) -> None:
    # A frame refused for its records (not for Kafka's absence) is counted per frame
    # until max_replays. That count must go once the frame is settled: kept, it grew
    # for the life of the process, and keyed by id(segment) a later segment (every
    # first frame is at offset 8) took it over and was given up after fewer replays.
    store = _store(tmp_path)
    seam, _ = _seam(store)
    records = _records(2)
    _spill(seam, records)
    refused = TopicAuthorizationFailedError("not allowed")

    def replay() -> FrameTicket:
        (seg, frame), *more = store.read().frames
        assert not more and [r[1] for r in frame.records] == [r[1] for r in records]
        return FrameTicket(seam, seg, frame.offset, len(frame.records), frame.attempts, "t")

    ticket = replay()
    for record in records:
        ticket.settled((record, refused))
    assert seam._attempts  # counted, and given back to be read again
    store.settle(seam._settle)
    seam._settle.clear()
    ticket = replay()
    ticket.settled(None)
    ticket.settled(None if outcome == "delivered" else (records[1], refused))
    assert seam._settle == [(ticket.seg, ticket.offset, True)]
    assert seam._attempts == {}
    assert seam._rereads == {}
    store.close()


@pytest.mark.parametrize("window", ["open", "_flock"])
def test_a_producer_starting_alongside_leaves_a_new_directory_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: str
) -> None:
    # Another worker's open() runs while this one makes its directory: after the
    # mkdir, before the LOCK file is opened or before it is locked. It took the lock
    # itself, found no segments and removed the directory: every append then failed.
    others: list[SpillStore] = []

    def start_another() -> None:
        if not others:
            others.append(SpillStore(tmp_path, max_bytes=1 << 20, segment_bytes=4096))
            others[0].open()

    def hook(name: str, args: tuple[Any, ...]) -> None:
        if name == "open" and Path(args[0]).name == "LOCK":
            start_another()

    if window == "open":
        monkeypatch.setattr(spill, "os", _HookedOs(hook))
    else:
        real = spill._flock

        def flock(fd: int) -> bool:
            start_another()
            return real(fd)

        monkeypatch.setattr(spill, "_flock", flock)
    a = _store(tmp_path)
    monkeypatch.undo()
    (b,) = others
    assert a.own is not None and b.own is not None
    assert b.adopted == [] and a.adopted == []
    assert a.append([encode_frame("t", 0, _records(1))]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.own.name, b.own.name])
    a.close()
    b.close()


@pytest.mark.anyio
async def test_a_probe_reads_past_a_damaged_region_and_reports_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    # Kafka seems away: the replayer probes with one frame at a time. A probe whose
    # read ended in damage and no frame used up its turn (one a second): 64 KiB of
    # zeros (a power cut) took 2261 probes, ~38 minutes, and 2260 SpillDamagedError
    # before the frame behind it; with every topic spilling, nothing else told the
    # seam Kafka was back meanwhile. One probe must reach the frame, one report the
    # region.
    monkeypatch.setattr(spill_seam, "_PROBE_INTERVAL", 0.01)
    store = _store(tmp_path)
    lost = encode_frame("t", 0, [(None, b"x" * 65536, None, TS)])
    assert store.append([lost, encode_frame("t", 0, [(b"k", b"after", None, TS)])]) == 2
    zero_fill(store, len(SEGMENT_HEADER), len(lost))
    errors: list[KafkaError] = []
    seam = SpillSeam(
        store,
        when_full="drop_newest",
        queue_limit=10_000,
        replay_limit=64,
        on_error=errors.append,
    )
    injected: list[bytes | None] = []
    probes = 0
    done = anyio.Event()
    read = seam._read

    async def counted(read_bytes: int) -> spill.ReadResult:
        nonlocal probes
        probes += 1
        if probes >= 4:
            done.set()  # the code before: still crawling through the zeros
        return await read(read_bytes)

    def inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
        injected.append(record[1])
        done.set()

    def nothing() -> None:
        pass

    host = _Host()
    monkeypatch.setattr(seam, "_read", counted)
    seam._host = SpillHost(lambda: 1000, inject, host.report_dropped, nothing, nothing)
    seam.ready = True
    seam.kafka_ok = False
    seam._unread = True
    async with anyio.create_task_group() as tg:
        tg.start_soon(seam._replayer)
        with anyio.fail_after(5):
            await done.wait()
        tg.cancel_scope.cancel()
    assert (probes, injected) == (1, [b"after"])
    assert len(errors) == 1 and isinstance(errors[0], SpillDamagedError)
    assert f"{len(lost)} bytes at offset {len(SEGMENT_HEADER)}" in str(errors[0])
    assert errors[0].lost is None
    store.close()


async def test_a_dead_producers_records_read_back_leave_this_ones_backlog_spilling(
    tmp_path: Path, anyio_backend: str
) -> None:
    """Restarted during an outage: topic T has 64 records in the dead producer's
    directory, and 10 of this producer's own went to the disk after it. The probe
    reading the dead producer's frame took its 64 records off this producer's backlog
    of T (they were never on it), so T stopped spilling while its own 10 were still on
    disk, and T's new records went through memory, ahead of them."""
    dead = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    dead.open()
    dead.append([encode_frame("T", 0, [(b"k", b"old%d" % i, None, 1) for i in range(64)])])
    dead.close()  # its lock free, its segment left: as after a crash

    store = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    seam = SpillSeam(store, when_full="drop_newest", queue_limit=1000, replay_limit=1000)
    probe: list[FrameTicket] = []
    values: list[bytes] = []

    def inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
        probe.append(ticket)
        values.append(record[1])

    def nothing() -> None:
        pass

    host = SpillHost(lambda: 1000, inject, _Host().report_dropped, nothing, nothing)
    timed_out = DeliveryTimeoutError("timed out")
    seam.intercept("T", 0, [(b"k", b"new%d" % i, None, 2) for i in range(10)], None, timed_out)
    seam.begin_evacuation()
    seam.end_evacuation()
    assert not seam.kafka_ok and seam.spilling == {"T"}
    async with anyio.create_task_group() as tg:
        await tg.start(seam.run, host)
        assert await eventually(lambda: len(probe) >= 64, 5)  # the probe: the dead one's frame
        assert values == [b"old%d" % i for i in range(64)]
        for ticket in probe:
            ticket.event.set()  # Kafka answers: delivered
        assert seam.spilling == {"T"}, "T's own 10 records are still on disk"
        assert seam.takes("T", False)
        # Kafka back: T's own records are read next, and only then does T stop spilling.
        assert await eventually(lambda: len(values) >= 74, 5)
        assert values[64:] == [b"new%d" % i for i in range(10)]
        tg.cancel_scope.cancel()
    await seam.close(2)


@pytest.mark.parametrize("where", ["middle", "last"])
async def test_records_lost_to_damage_do_not_keep_their_topic_spilling(
    tmp_path: Path, anyio_backend: str, where: str
) -> None:
    """A record damaged on disk (a flipped byte) is lost and reported; the others are
    delivered. Its count stayed in the topic's backlog, which nothing took it off: the
    topic spilled for the rest of the process, every new record going through the
    disk instead of memory."""
    store = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    seam = SpillSeam(store, when_full="drop_newest", queue_limit=1000, replay_limit=1000)
    delivered: list[bytes] = []

    def inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
        delivered.append(record[1])
        ticket.event.set()

    def nothing() -> None:
        pass

    host = SpillHost(lambda: 1000, inject, _Host().report_dropped, nothing, nothing)
    async with anyio.create_task_group() as tg:
        await tg.start(seam.run, host)
        assert await eventually(lambda: seam.ready, 5)
        seam.kafka_ok = False
        seam._probe_at = float("inf")  # no probe: Kafka away until said otherwise
        values = [b"v%d" % i for i in range(10)]
        seam.intercept(
            "T", 0, [(b"k", v, None, 2) for v in values], None, DeliveryTimeoutError("x")
        )
        seam.begin_evacuation()
        seam.end_evacuation()
        assert seam.takes("T", False)
        damaged = b"v2" if where == "middle" else b"v9"
        path = store._segments[-1].path
        data = path.read_bytes()
        path.write_bytes(data.replace(damaged, b"X" + damaged[1:], 1))
        seam.kafka_ok = True  # Kafka back
        assert await eventually(lambda: seam.lost == 1 and len(delivered) == 9, 5)
        assert damaged not in delivered
        assert await eventually(lambda: not seam.takes("T", False), 5), seam._backlog
        assert seam.spilling == set()
        tg.cancel_scope.cancel()
    await seam.close(2)


def _refuse(
    monkeypatch: pytest.MonkeyPatch, owner: Any, names: list[str], target: Path, code: int
) -> None:
    """``owner.<name>`` (each of ``names``) raises OSError ``code`` for ``target`` (its
    first argument), for every caller: spill.py, and pathlib underneath it."""
    for name in names:
        real = getattr(owner, name)

        def refusing(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            first = args[0] if args else None
            if isinstance(first, (str, os.PathLike)) and Path(os.fspath(first)) == target:
                raise OSError(code, os.strerror(code), str(target))
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, refusing)


def _one_frame_per_segment(store: SpillStore, values: list[bytes]) -> None:
    for i, value in enumerate(values):
        assert store.append([encode_frame("t", i, [(b"k", value, None, TS)])]) == 1


def _two_dead_producers(root: Path) -> tuple[Path, Path]:
    """The directories of two dead producers: the older with a1, a2, a3 (a segment
    each), the newer with b1."""
    a = _store(root, segment_bytes=64)
    _one_frame_per_segment(a, [b"a1", b"a2", b"a3"])
    b = _store(root, segment_bytes=64)  # a is alive: not adopted
    _one_frame_per_segment(b, [b"b1"])
    assert a.own is not None and b.own is not None and len(a._segments) == 3
    a.close()
    b.close()  # both locks free, their segments left: as after a crash
    return a.own, b.own


def _acked_values(store: SpillStore) -> list[bytes | None]:
    """Read everything back, acknowledging it as delivered."""
    out: list[bytes | None] = []
    while True:
        r = store.read()
        if not r.frames and not r.damage and not r.unreadable:
            return out
        for seg, frame in r.frames:
            out += [rec[1] for rec in frame.records]
            store.ack(seg, frame.offset)


_UNREADABLE_AT_ADOPTION = [
    # (whose functions, which of them fail, for which entry of the older directory, errno)
    pytest.param(os, ["stat"], "000000000002.seg", errno.EACCES, id="a-segment-stat"),
    pytest.param(Path, ["read_bytes"], "000000000002.ack", errno.EIO, id="its-ack-file"),
    pytest.param(os, ["listdir", "scandir"], "", errno.EACCES, id="the-directory-listing"),
    pytest.param(os, ["stat"], "", errno.EIO, id="the-directory-stat"),
    pytest.param(os, ["open"], "LOCK", errno.EACCES, id="its-lock-file"),
]


@pytest.mark.parametrize(("owner", "names", "entry", "code"), _UNREADABLE_AT_ADOPTION)
def test_an_unreadable_entry_of_a_dead_producer_is_left_alone_and_the_rest_adopted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    names: list[str],
    entry: str,
    code: int,
) -> None:
    # A file or directory a dead producer left that this process cannot read (its
    # permissions, an I/O error) made open() raise, at every start: the spill was
    # unusable (records to spill reported failed) and nothing on disk was replayed.
    # A directory it may not list was passed over without a word.
    older, newer = _two_dead_producers(tmp_path)
    bad = older / entry if entry else older
    _refuse(monkeypatch, owner, names, bad, code)
    store = _store(tmp_path)
    whole_directory = bad == older or bad.name == "LOCK"
    assert [(p, e.errno) for p, e in store.left_alone] == [(bad, code)]
    assert str(bad) in str(store.left_alone[0][1])
    assert store.adopted == ([newer] if whole_directory else [older, newer])
    got = _acked_values(store)
    assert got == ([b"b1"] if whole_directory else [b"a1", b"a3", b"b1"])
    assert store.append([encode_frame("t", 0, [(b"k", b"own", None, TS)])]) == 1
    store.close()
    monkeypatch.undo()
    # Left where it was, with its ack file: the next producer that can read it sends
    # what it holds, and nothing already sent.
    after = _store(tmp_path)
    assert after.left_alone == []
    left = [b"a1", b"a2", b"a3"] if whole_directory else [b"a2"]
    assert _acked_values(after) == [*left, b"own"]
    after.close()
    assert list(tmp_path.iterdir()) == []


def test_a_segment_that_cannot_be_read_is_passed_over_and_left_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Replay stopped at a segment it could not open or read: read() raised at it
    # every time (the replayer retried each second), and nothing behind it was sent.
    store = _store(tmp_path, segment_bytes=64)
    _one_frame_per_segment(store, [b"v1", b"v2", b"v3"])
    bad = store._segments[1].path
    # Out of descriptors says nothing of the file: raised, read again later.
    _refuse(monkeypatch, builtins, ["open"], bad, errno.EMFILE)
    with pytest.raises(OSError, match="Too many open files"):
        _acked_values(store)
    monkeypatch.undo()
    _refuse(monkeypatch, builtins, ["open"], bad, errno.EIO)
    r = store.read()
    assert [(p, e.errno) for p, e in r.unreadable] == [(bad, errno.EIO)]
    assert [rec[1] for _, f in r.frames for rec in f.records] == [b"v3"]
    for seg, frame in r.frames:
        store.ack(seg, frame.offset)
    assert _acked_values(store) == []
    assert not store.has_unread()
    assert store.disk_bytes == 0
    assert bad.exists()  # its records are still there, not deleted as read
    store.close()
    monkeypatch.undo()
    after = _store(tmp_path)
    assert _acked_values(after) == [b"v2"]
    after.close()


def _delivering_host(delivered: list[bytes | None]) -> SpillHost:
    """A host that delivers every record read back at once."""

    def inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
        delivered.append(record[1])
        ticket.event.set()

    def nothing() -> None:
        pass

    return SpillHost(lambda: 1000, inject, _Host().report_dropped, nothing, nothing)


async def test_a_producer_starts_its_spill_past_an_unreadable_segment_of_a_dead_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    anyio_backend: str,
) -> None:
    """The seam's side of the above: the spill was "not usable" at every start; now
    the entry is reported (error_handle, the log, naming it and the error) and the
    rest replayed."""
    older, _ = _two_dead_producers(tmp_path)
    bad = older / "000000000002.seg"
    _refuse(monkeypatch, os, ["stat"], bad, errno.EACCES)
    errors: list[KafkaError] = []
    store = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    seam = SpillSeam(
        store, when_full="drop_newest", queue_limit=1000, replay_limit=1000, on_error=errors.append
    )
    delivered: list[bytes | None] = []
    async with anyio.create_task_group() as tg:
        await tg.start(seam.run, _delivering_host(delivered))
        assert await eventually(lambda: len(delivered) >= 3, 5), (delivered, errors)
        assert delivered == [b"a1", b"a3", b"b1"]
        tg.cancel_scope.cancel()
    await seam.close(2)
    monkeypatch.undo()
    assert seam.usable()
    assert len(errors) == 1 and isinstance(errors[0], SpillError)
    assert str(bad) in str(errors[0]) and "Permission denied" in str(errors[0])
    logged = [r.getMessage() for r in caplog.records if r.name == "kafka_asgi.producer"]
    assert any(str(bad) in m and "Permission denied" in m for m in logged)
    assert bad.exists()


async def test_replay_passes_over_a_segment_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Three frames of topic T in three segments, the second unreadable (EIO): the
    replayer retried it every second, reporting the same error, and never sent the
    third. It must report it once, send the third, and let T stop spilling."""
    store = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=64)
    errors: list[KafkaError] = []
    seam = SpillSeam(
        store, when_full="drop_newest", queue_limit=1000, replay_limit=1000, on_error=errors.append
    )
    delivered: list[bytes | None] = []
    async with anyio.create_task_group() as tg:
        await tg.start(seam.run, _delivering_host(delivered))
        assert await eventually(lambda: seam.ready, 5)
        seam.kafka_ok = False
        seam._probe_at = float("inf")  # no probe: Kafka away until said otherwise
        timed_out = DeliveryTimeoutError("timed out")
        for p in range(3):
            assert seam.intercept("T", p, [(b"k", b"v%d" % p, None, TS)], None, timed_out) is None
        seam.begin_evacuation()
        seam.end_evacuation()
        assert [s.seq for s in store._segments] == [1, 2, 3]
        bad = store._segments[1].path
        _refuse(monkeypatch, builtins, ["open"], bad, errno.EIO)
        seam.kafka_ok = True  # Kafka back
        assert await eventually(lambda: len(delivered) >= 2, 5), (delivered, errors)
        assert delivered == [b"v0", b"v2"]
        assert await eventually(lambda: not seam.takes("T", False), 5), seam._backlog
        tg.cancel_scope.cancel()
    await seam.close(2)
    (error,) = errors
    assert isinstance(error, SpillDamagedError)
    assert error.path == str(bad) and error.lost is None
    assert "Input/output error" in str(error)
    assert seam.lost == 0  # how many is not known: the segment could not be read
    monkeypatch.undo()
    after = _store(tmp_path)
    assert _acked_values(after) == [b"v1"]
    after.close()


class _TornWriteOs(_HookedOs):
    """os for spill.py: the first write of a frame stops half way (ENOSPC), and the
    ftruncate that would cut it back fails (EIO)."""

    def __init__(self) -> None:
        super().__init__(lambda name, args: None)
        self.torn = False

    def write(self, fd: int, data: Any) -> int:
        if self.torn:
            return os.write(fd, data)
        self.torn = True
        os.write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def ftruncate(self, fd: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_a_torn_write_that_cannot_be_cut_back_ends_its_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pinned (the code before did this already): a write failing part way is cut
    # back; if the cut fails too, the torn frame stays at the segment's end, and the
    # segment is sealed all the same, so nothing is appended behind the tear. Replay
    # yields every whole record before it (those of the torn frame's head too, which
    # the append reported as not spilled) and reports the tear as damage.
    store = _store(tmp_path)
    before = encode_frame("t", 0, [(b"k", b"before", None, TS)])
    assert store.append([before]) == 1
    (first,) = store._segments
    monkeypatch.setattr(spill, "os", _TornWriteOs())
    with pytest.raises(OSError) as failed:
        store.append([encode_frame("t", 0, _records(3))])
    monkeypatch.undo()
    assert failed.value.errno == errno.ENOSPC
    assert first.sealed and store._writing is None
    torn_at = len(SEGMENT_HEADER) + len(before)
    assert first.path.stat().st_size > torn_at  # the cut failed: the tear is there
    assert store.append([encode_frame("t", 0, [(b"k", b"after", None, TS)])]) == 1
    assert [s.seq for s in store._segments] == [1, 2]
    assert store._segments[1].fd is not None  # the new segment takes the writes
    damage: list[int] = []
    values: list[bytes | None] = []
    while True:
        r = store.read()
        if not r.frames and not r.damage:
            break
        damage += [d.offset for _, d in r.damage]
        values += [rec[1] for _, f in r.frames for rec in f.records]
    head = [r[1] for r in _records(3)][: len(values) - 2]
    assert values == [b"before", *head, b"after"]
    assert damage == [torn_at]  # the torn frame, its lost records counted
    store.close()


def test_a_segment_that_cannot_be_deleted_is_let_go_and_reading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory it may read but not write (an adopted one): the delete of a segment
    # read to its end and acknowledged raised out of read() and ack(), failing the read
    # that had handed frames out, which then never settled.
    store = _store(tmp_path, segment_bytes=64)
    _one_frame_per_segment(store, [b"v1", b"v2", b"v3"])
    stuck = store._segments[0].path
    _refuse(monkeypatch, os, ["unlink"], stuck, errno.EACCES)
    with caplog.at_level(logging.WARNING, logger="kafka_asgi.producer"):
        assert _acked_values(store) == [b"v1", b"v2", b"v3"]
    assert not store.has_unread() and store.disk_bytes == 0
    assert stuck.exists()
    assert [r for r in caplog.records if "cannot be deleted" in r.getMessage()]
    store.close()


async def test_a_frame_with_a_record_reported_is_not_read_again_whole(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A frame written by overflow (partition -1) read back: its records go to two
    partitions; partition 0's batch fails for good (reported by the producer, its
    ticket settled None), partition 1's times out. The frame was read again whole up
    to max_replays times, and the first record reported again at every read (4
    reports). Now only the record that timed out goes back to the disk."""
    store = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    seam = SpillSeam(store, when_full="drop_newest", queue_limit=1000, replay_limit=1000)
    read: list[tuple[int, Any, FrameTicket]] = []

    def inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
        read.append((partition, record, ticket))

    def nothing() -> None:
        pass

    host = _Host()
    reported: list[bytes | None] = []
    async with anyio.create_task_group() as tg:
        await tg.start(
            seam.run, SpillHost(lambda: 1000, inject, host.report_dropped, nothing, nothing)
        )
        assert await eventually(lambda: seam.ready, 5)
        seam.overflow("T", b"a", b"bad", None, None, 1)
        seam.overflow("T", b"b", b"good", None, None, 1)
        seam.begin_evacuation()
        seam.end_evacuation()
        assert await eventually(lambda: len(read) >= 2, 5)
        (_, bad, t0), (_, good, t1) = read
        assert (bad[1], good[1]) == (b"bad", b"good") and t0 is t1
        read.clear()
        # The producer's _report_failure, per partition's batch:
        kept = seam.intercept("T", 0, [bad], [(0, t0)], TopicAuthorizationFailedError("no"))
        assert kept is not None
        reported.extend(r[1] for r in kept[0])
        assert seam.intercept("T", 1, [good], [(0, t1)], DeliveryTimeoutError("t")) is None
        seam.begin_evacuation()  # the producer's, T having nothing left in memory
        seam.end_evacuation()
        seam.kafka_ok = True
        assert await eventually(lambda: len(read) >= 1, 5)
        await anyio.sleep(0.3)  # nothing else is read: the frame is settled for good
        assert [(p, r[1]) for p, r, _ in read] == [(1, b"good")]
        read[0][2].event.set()  # delivered
        assert await eventually(lambda: not seam.spilling, 5)
        tg.cancel_scope.cancel()
    await seam.close(2)
    assert reported == [b"bad"] and host.dropped == []
    assert not store.has_unread()
    store.close()


async def test_records_put_back_from_a_frame_keep_their_partitions(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A frame of partition -1 read back over three partitions: 0 and 1 time out, 2
    fails for good (reported). The two that timed out go back to the disk, each to
    the partition it was sent to: they went back both to the partition of the last
    batch answered (1), its key's records then split over two partitions."""
    store = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    seam = SpillSeam(store, when_full="drop_newest", queue_limit=1000, replay_limit=1000)
    read: list[tuple[int, Any, FrameTicket]] = []

    def inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
        read.append((partition, record, ticket))

    def nothing() -> None:
        pass

    host = SpillHost(lambda: 1000, inject, _Host().report_dropped, nothing, nothing)
    timed_out = DeliveryTimeoutError("timed out")
    async with anyio.create_task_group() as tg:
        await tg.start(seam.run, host)
        assert await eventually(lambda: seam.ready, 5)
        for value in (b"p0", b"p1", b"p2"):
            seam.overflow("T", value, value, None, None, 1)
        seam.begin_evacuation()
        seam.end_evacuation()
        assert await eventually(lambda: len(read) >= 3, 5)
        (_, r0, t), (_, r1, _), (_, r2, _) = read
        read.clear()
        assert seam.intercept("T", 0, [r0], [(0, t)], timed_out) is None
        assert seam.intercept("T", 1, [r1], [(0, t)], timed_out) is None
        assert seam.intercept("T", 2, [r2], [(0, t)], TopicAuthorizationFailedError("no"))
        seam.begin_evacuation()
        seam.end_evacuation()
        seam.kafka_ok = True
        assert await eventually(lambda: len(read) >= 2, 5)
        assert sorted((p, r[1]) for p, r, _ in read) == [(0, b"p0"), (1, b"p1")]
        tg.cancel_scope.cancel()
    await seam.close(2)
    store.close()


async def test_a_record_the_producer_refuses_on_replay_fails_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    """The producer raises (a bug) for the 4th of a frame's 10 records read back. The
    exception left the replayer: the frame was never settled, its 6 last records never
    handed over, its topic taken off the spilling ones with them still on disk, and
    its 10 records counted as replaying for good (with Kafka away, no probe again).
    Only that record must fail; it goes back to the disk, and is read again."""
    store = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    seam = SpillSeam(store, when_full="drop_newest", queue_limit=1000, replay_limit=1000)
    injected: list[bytes] = []
    tickets: list[FrameTicket] = []

    def inject(topic: str, partition: int, record: Any, ticket: FrameTicket) -> None:
        if record[1] == b"v3" and b"v3" not in injected and b"v9" not in injected:
            raise RuntimeError("a bug in the producer")
        injected.append(record[1])
        tickets.append(ticket)

    def nothing() -> None:
        pass

    reports = _Host()
    host = SpillHost(lambda: 1000, inject, reports.report_dropped, nothing, nothing)
    async with anyio.create_task_group() as tg:
        await tg.start(seam.run, host)
        assert await eventually(lambda: seam.ready, 5)
        for i in range(10):
            seam.overflow("T", b"k", b"v%d" % i, None, 0, TS)
        seam.begin_evacuation()
        seam.end_evacuation()
        assert await eventually(lambda: len(injected) >= 9, 5), injected
        assert injected == [b"v%d" % i for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
        assert seam.replaying == 10
        for ticket in tickets:
            ticket.event.set()  # delivered
        # v3 failed alone: back to the disk, its topic spilling behind it.
        assert seam.replaying == 0
        assert seam.takes("T", False)
        assert seam.evacuate == ["T"]
        seam.begin_evacuation()  # the producer's evacuation: nothing in memory
        seam.end_evacuation()
        assert await eventually(lambda: len(injected) >= 10, 5), injected
        assert injected[9] == b"v3"
        tickets[-1].event.set()
        assert await eventually(lambda: not seam.takes("T", False), 5), seam._backlog
        assert seam.replaying == 0
        tg.cancel_scope.cancel()
    await seam.close(2)
    assert reports.dropped == []
    assert any(r.exc_info and "a bug in the producer" in str(r.exc_info[1]) for r in caplog.records)


async def test_close_is_bounded_on_a_disk_that_stops_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """The disk stops answering at close (NFS, a dying device): the ack write waited
    for its thread past close's timeout, and closing the store had no bound at all
    (close(0.5) returned after both had: 6 s here; aclose() runs it shielded, so no
    caller's deadline cut it). Each must be left to its thread, and said."""
    store = _store(tmp_path)
    errors: list[KafkaError] = []
    seam = SpillSeam(
        store, when_full="drop_newest", queue_limit=1000, replay_limit=1000, on_error=errors.append
    )
    seam.ready = True
    assert store.append([encode_frame("t", 0, [(b"k", b"v", None, TS)])]) == 1
    ((seg, frame),) = store.read().frames
    seam._settle.append((seg, frame.offset, True))  # delivered: its ack to write
    answers = threading.Event()
    settle, close = store.settle, store.close

    def hung_settle(outcomes: list[Any]) -> None:
        answers.wait(3)
        settle(outcomes)

    def hung_close() -> None:
        answers.wait(3)
        close()

    monkeypatch.setattr(store, "settle", hung_settle)
    monkeypatch.setattr(store, "close", hung_close)
    began = time.monotonic()
    with anyio.CancelScope(shield=True):  # as aclose() calls it
        await seam.close(0.5)
    took = time.monotonic() - began
    answers.set()
    assert took < 0.5 + scaled(0.5), took
    assert [type(e) for e in errors] == [SpillError, SpillError], errors
    assert "outcomes of 1 frame(s)" in str(errors[0]) and "did not answer" in str(errors[0])
    assert "closing spill_dir did not finish within 0.5s" in str(errors[1])
    # The threads left behind finish once the disk answers: the ack written, the
    # store closed and its lock released.
    assert await eventually(lambda: store.closed and not store._locks, 5)
    assert seg.acked == {frame.offset}


async def test_a_restarted_producers_new_records_go_behind_a_dead_ones(
    tmp_path: Path, anyio_backend: str
) -> None:
    """Restarted after a crash, Kafka up: the dead producer left 640 records of key k
    on disk. Records read from its directory are in no topic's backlog, so T did not
    spill, and the new producer's first record of key k went through memory, ahead
    of most of them (after the first read's 192 here)."""
    dead = SpillStore(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    dead.open()
    old = [b"old%03d" % i for i in range(640)]
    frames = [
        encode_frame("T", -1, [(b"k", v, None, TS) for v in old[i : i + 64]])
        for i in range(0, 640, 64)
    ]
    assert dead.append(frames) == 10
    dead.close()  # its lock free, its segment left: as after a SIGKILL
    fake = FakeClient()
    fake.add_topic("T", 1)
    errors: list[Any] = []
    p = make(
        fake,
        None,
        error_handle=lambda *a: errors.append(a),
        spill_dir=tmp_path,
        flush_time=0.02,
        max_buffering=100,
    )
    async with p:
        spill = p._spill
        assert spill is not None
        assert await eventually(lambda: spill.ready, 5)
        p.send_nowait("T", b"NEW", key=b"k")
        assert await eventually(lambda: len(fake.records("T", 0)) >= 641, 10)
        assert [r.value for r in fake.records("T", 0)] == [*old, b"NEW"]
        # Once read back, T leaves the disk path again, and so does every topic.
        assert await eventually(lambda: not spill.takes("T", False), 5), spill._backlog
        assert not spill.takes("U", False)
    assert errors == []
