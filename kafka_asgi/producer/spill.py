"""The spill store: segment files on local disk for records Kafka cannot take now.

Layout under ``spill_dir``::

    spill_dir/
      g<generation>-<pid>-<random>/
                                one directory per live producer (worker)
        LOCK                    held with fcntl.flock while that producer lives
        000000000001.seg        frames (kafka_asgi.protocol.spill), oldest first
        000000000001.ack        offsets of the frames acknowledged so far

A producer creates its own directory and locks it, so two live processes never
write one directory (it is made and locked under a name starting ``.making-``, then
renamed: a directory another producer lists is locked already; one left behind by a
process killed in between is removed by the next producer to open, a minute later
at the earliest, once its lock is free).  On open it also
tries the lock of every other directory: a lock it gets belongs to a dead producer,
whose segments it adopts (keeping the lock, so no other live producer adopts them
too) and replays before its own.  What of them it cannot read (a directory, a
segment or its ack file: permissions, an I/O error) it leaves where it is, in
:attr:`SpillStore.left_alone` for the caller to report, and adopts the rest: a
later open tries it again.  The dead producers' directories are replayed
oldest first, by their generation: one more than the highest in ``spill_dir`` when
the directory was made, so a producer that adopted another's records (and spilled
newer ones after them) comes after it, whatever the pids (a container's worker often
has the same pid at every start) or the clock say.  Directories named by earlier
versions (``w<pid>-<random>``) come first, by their oldest segment's modification
time.

Segments are rolled at ``segment_bytes`` and read back only once sealed (the
reader seals the segment being written when it is the oldest left).  A segment is
deleted when it is sealed, read to its end and every frame handed out was
acknowledged (:meth:`SpillStore.ack`: delivered, or reported as failed).  One that
cannot be read is passed over and left on disk (:meth:`SpillStore.read`).  Frames
already in the ack file (a previous owner acknowledged them) are not handed out
again; frames acknowledged after the last ack write reached the disk are shipped
again (at-least-once).

This class does plain blocking file I/O and is thread-safe.  The producer calls
:meth:`SpillStore.append` and :meth:`SpillStore.append_held` from the event loop
(a record accepted while its topic spills is in the page cache, so it survives a
SIGKILL, before ``send_nowait`` returns: those calls only ``write``); fsync
(:meth:`SpillStore.background_sync`), reads and acks run in worker threads
(``anyio.to_thread``).  Errors are ``OSError`` (the caller reports them) and full
budgets are return values.

A *held* frame (:meth:`SpillStore.append_held`) is a copy of records that are
also in memory, in a batch the producer may still deliver (one in flight when its
topic started spilling): the reader stops in front of it until it is settled,
acknowledged if the batch was delivered (the copy is never sent), or given back
(the batch failed) and then read and sent in its place, before the frames after
it.  A process killed meanwhile leaves it on disk for the next one to send
(at-least-once: a second copy if the batch had been written).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kafka_asgi.protocol.spill import (
    ACK_SIZE,
    SEGMENT_HEADER,
    Damage,
    SegmentScan,
    SpillFrame,
    decode_acks,
    decode_frames,
    encode_ack,
)

__all__ = ["FSYNC_POLICIES", "ReadResult", "Segment", "SpillStore"]

FSYNC_POLICIES = ("segment", "never")
"""Named fsync policies; a number instead means "at most every that many seconds"."""
_LOCK = "LOCK"
# Prefix of a directory being made (see SpillStore.open); left behind (empty but for
# its LOCK) only by a process killed between its mkdir and its rename.
logger = logging.getLogger("kafka_asgi.producer")

_MAKING = ".making-"
# How old such a directory must be, unlocked, before a producer opening removes it: a
# live producer holds one for the microseconds between its mkdir and its rename.
_MAKING_GRACE = 60.0
_SEG = ".seg"
_ACK = ".ack"
# Read errors that say nothing of the file (the process is out of descriptors or
# memory): the read is retried later, rather than passing over every segment.
_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


@dataclass(eq=False)
class Segment:
    """One segment file and what is known of its frames."""

    directory: Path
    seq: int
    size: int = 0
    sealed: bool = False
    read_pos: int = len(SEGMENT_HEADER)
    read_done: bool = False
    out: set[int] = field(default_factory=set)
    """Offsets of the frames handed out by :meth:`SpillStore.read`, not settled yet."""
    acked: set[int] = field(default_factory=set)
    """Offsets of the frames acknowledged (by us, or an earlier owner's ack file)."""
    held: set[int] = field(default_factory=set)
    """Offsets of the frames written by :meth:`SpillStore.append_held`, not settled yet
    (also in ``out``): the reader does not go past them."""
    damaged: set[int] = field(default_factory=set)
    """Offsets of the damage already reported (a segment can be read twice)."""
    unreadable: OSError | None = None
    """Why the last read of it failed: it is left on disk (see :meth:`SpillStore.read`)."""
    fd: int | None = None
    ack_fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / f"{self.seq:012d}{_SEG}"

    @property
    def ack_path(self) -> Path:
        return self.directory / f"{self.seq:012d}{_ACK}"


@dataclass
class ReadResult:
    """Frames read back (with their segment, for :meth:`SpillStore.ack`) and damage."""

    frames: list[tuple[Segment, SpillFrame]] = field(default_factory=list)
    damage: list[tuple[Path, Damage]] = field(default_factory=list)
    more: bool = False
    """Frames are left to read."""
    blocked: bool = False
    """The reader stopped in front of a held frame."""
    unreadable: list[tuple[Path, OSError]] = field(default_factory=list)
    """Segments that could not be read, passed over (left on disk)."""


class _PartialAppendError(OSError):
    """:meth:`SpillStore.append` failed after ``written`` of its frames were written:
    those are on disk (they will be replayed), the others are not.  Internal (the
    seam turns it into the SpillError it reports), so not in kafka_asgi.errors."""

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(*cause.args)
        if cause.filename is not None:
            self.filename = cause.filename
        self.written = written


def _flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _generation(name: str) -> int:
    """The generation a producer's directory name says (see the module docstring);
    0 for any other name (an earlier version's directory)."""
    if name.startswith("g"):
        generation, _, _ = name[1:].partition("-")
        if generation.isdigit():
            return int(generation)
    return 0


def _age(directory: Path) -> tuple[int, float, str]:
    """Sort key of a producer's directory, oldest first: its generation; an earlier
    version's directory is generation 0, dated by its oldest segment."""
    name = directory.name
    generation = _generation(name)
    if generation:
        return generation, 0.0, name
    try:
        made = min((p.stat().st_mtime for p in directory.glob(f"*{_SEG}")), default=0.0)
    except OSError:  # removed meanwhile (its producer emptied it)
        made = 0.0
    return 0, made, name


class SpillStore:
    """Segments of one producer (its own directory and any it adopted)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: str | float = "segment",
        read_bytes: int = 1 << 20,
    ) -> None:
        self.root = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.read_bytes = read_bytes
        self.own: Path | None = None
        self.adopted: list[Path] = []
        self.left_alone: list[tuple[Path, OSError]] = []
        """What :meth:`open` could not read in spill_dir and passed over (for the
        caller to report): a directory, segment or ack file, and the error."""
        self._locks: dict[Path, int] = {}
        self._segments: list[Segment] = []  # oldest first: adopted ones, then own
        self._writing: Segment | None = None
        self._next_seq = 1
        self._last_sync = time.monotonic()
        self._unsynced: list[int] = []  # descriptors of sealed segments, to fsync and close
        self._dirty = False  # written since the last periodic fsync
        self._lock = threading.Lock()
        self.disk_bytes = 0
        self.closed = False

    # ------------------------------------------------------------------ open/close

    def open(self) -> None:
        """Create and lock this producer's directory; adopt the dead ones' (blocking).
        Refused once closed (a producer closed while its store was still to open)."""
        with self._lock:
            if self.closed:
                raise OSError("the spill store is closed")
            self.root.mkdir(parents=True, exist_ok=True)
            self._reclaim_making()
            others: list[Path] = []
            top = 0  # the highest generation in spill_dir
            for d in self.root.iterdir():
                if d.name.startswith(_MAKING):
                    continue
                try:
                    if not d.is_dir():
                        continue
                except OSError as exc:
                    # Perhaps a dead producer's directory: left for a later open, and
                    # counted below, so ours still replays after it once it is adopted.
                    self._leave(d, exc)
                    top = max(top, _generation(d.name))
                    continue
                others.append(d)
            others.sort(key=_age)  # oldest first: their records go before newer ones
            if others:
                top = max(top, _age(others[-1])[0])
            generation = top + 1
            name = f"g{generation:010d}-{os.getpid()}-{secrets.token_hex(4)}"
            own = self.root / name
            # Made and locked under a name other producers pass over, then renamed:
            # a producer starting alongside that listed the directory before its lock
            # was held would take the lock itself, find no segments and remove it.
            making = self.root / f"{_MAKING}{name}"
            making.mkdir()
            fd = os.open(making / _LOCK, os.O_CREAT | os.O_RDWR, 0o644)
            if not _flock(fd):  # a fresh random name: cannot be held
                os.close(fd)
                raise OSError(f"cannot lock {making / _LOCK}")
            try:
                making.rename(own)
            except OSError:
                os.close(fd)
                raise
            self._locks[own] = fd
            self.own = own
            for other in others:
                self._adopt(other)

    def _reclaim_making(self) -> None:
        """Remove the directories producers killed while making theirs left behind
        (each holds at most a LOCK file): those older than a minute whose
        lock nobody holds.  One that cannot be removed is left for the next open."""
        limit = time.time() - _MAKING_GRACE
        for making in self.root.glob(f"{_MAKING}*"):
            try:
                if not making.is_dir() or making.stat().st_mtime > limit:
                    continue
                try:
                    fd = os.open(making / _LOCK, os.O_RDWR)
                except FileNotFoundError:  # killed before it made the lock
                    making.rmdir()
                    continue
                if not _flock(fd):
                    os.close(fd)  # its producer is alive (and stopped, or slow)
                    continue
                self._remove_dir(making, fd)
            except OSError:
                continue  # renamed or removed meanwhile, or not empty: left alone

    def _leave(self, path: Path, error: OSError) -> None:
        """Pass over an entry of spill_dir that cannot be read (its permissions, an
        I/O error): it stays where it is, for a later open to try again, and is
        reported, rather than keeping every producer from starting its spill."""
        self.left_alone.append((path, error))

    def _adopt(self, directory: Path) -> None:
        lock = directory / _LOCK
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            self._leave(lock, exc)
            return
        try:
            if not _flock(fd):
                os.close(fd)  # its producer is alive
                return
        except OSError as exc:
            os.close(fd)
            self._leave(lock, exc)
            return
        try:
            # Not glob(): it passes over a directory it may not list, without a word.
            names = sorted(os.listdir(directory))
        except OSError as exc:
            os.close(fd)
            self._leave(directory, exc)
            return
        segments = []
        for name in names:
            if not name.endswith(_SEG):
                continue
            try:
                seq = int(name[: -len(_SEG)])
            except ValueError:
                continue
            path = directory / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._leave(path, exc)
                continue
            seg = Segment(directory, seq, size=size, sealed=True)
            if seg.size <= len(SEGMENT_HEADER):
                # Killed between creating a segment and its first frame: nothing in it.
                try:
                    path.unlink(missing_ok=True)
                    seg.ack_path.unlink(missing_ok=True)
                except OSError:
                    pass  # nothing to replay in it: it only keeps the directory
                continue
            try:
                seg.acked = decode_acks(seg.ack_path.read_bytes())
            except FileNotFoundError:
                pass
            except OSError as exc:
                # Replayed without its acks it would send again what was delivered
                # (and its acks could not be written either): left with them.
                self._leave(seg.ack_path, exc)
                continue
            segments.append(seg)
        if not segments:
            self._remove_dir(directory, fd)
            return
        self._locks[directory] = fd
        self.adopted.append(directory)
        self._segments.extend(segments)
        self.disk_bytes += sum(s.size for s in segments)

    def _remove_dir(self, directory: Path, fd: int) -> None:
        """Remove a directory with nothing left to replay, and release its lock.  A
        segment left in it (one that could not be read) keeps it, with its acks."""
        try:
            for leftover in directory.glob(f"*{_ACK}"):
                if not leftover.with_suffix(_SEG).exists():
                    leftover.unlink(missing_ok=True)
            (directory / _LOCK).unlink(missing_ok=True)
        except OSError:
            pass  # left as it is, for a later open
        finally:
            os.close(fd)
        try:
            directory.rmdir()
        except OSError:
            pass  # something else in it: leave it

    def close(self) -> None:
        """Sync and close the files and release the locks (segments stay on disk)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            # A failed fsync (EIO, a full disk on NFS) is raised, but only once every
            # file is closed and every lock released: closed is set, so nothing would
            # close them later, and the directories would stay locked to this process.
            failed: OSError | None = None
            try:
                self._sync_sealed()
            except OSError as exc:
                failed = exc
            for seg in [s for s in self._segments if s.size <= len(SEGMENT_HEADER)]:
                self._drop(seg)  # rolled, never written to: nothing to replay
            for seg in self._segments:
                try:
                    self._close_fds(seg, sync=self.fsync != "never")
                except OSError as exc:
                    failed = failed or exc
            for directory, fd in list(self._locks.items()):
                if directory != self.own and not any(
                    s.directory == directory for s in self._segments
                ):
                    self._remove_dir(directory, fd)
                else:
                    os.close(fd)
            self._locks.clear()
            own = self.own
            if own is not None and not any(s.directory == own for s in self._segments):
                # Nothing left to replay: leave no empty directory behind.
                (own / _LOCK).unlink(missing_ok=True)
                try:
                    own.rmdir()
                except OSError:
                    pass
            if failed is not None:
                raise failed

    @staticmethod
    def _close_fds(seg: Segment, sync: bool) -> None:
        for name in ("fd", "ack_fd"):
            fd = getattr(seg, name)
            if fd is not None:
                setattr(seg, name, None)
                try:
                    if sync:
                        os.fsync(fd)
                finally:
                    os.close(fd)

    # ------------------------------------------------------------------ writing

    def room(self) -> int:
        """Bytes the budget still allows."""
        return self.max_bytes - self.disk_bytes

    def append(self, frames: list[bytes]) -> int:
        """Write frames in order; return how many fit the budget (the rest were not
        written).  Raises OSError (disk full, I/O error): the frames of the write that
        failed are not in the segment (a partial write is cut off again), nor any
        after them.  Frames written before it stay on disk, whole, and are replayed
        (a call that filled a segment, then failed to roll to the next or to write
        there): the error is then a :class:`_PartialAppendError` saying how many."""
        with self._lock:
            if self.closed or self.own is None:
                raise OSError("the spill store is closed")
            written = 0
            i = 0
            n = len(frames)
            try:
                while i < n:
                    seg = self._writing
                    if seg is None or (
                        seg.size > len(SEGMENT_HEADER)
                        and seg.size + len(frames[i]) > self.segment_bytes
                    ):
                        seg = self._roll()
                    # As many frames as fit the segment (at least one) and the budget.
                    room = self.max_bytes - self.disk_bytes
                    take: list[bytes] = []
                    size = 0
                    while i < n:
                        f = frames[i]
                        if size + len(f) > room:
                            break
                        if take and seg.size + size + len(f) > self.segment_bytes:
                            break
                        take.append(f)
                        size += len(f)
                        i += 1
                    if not take:
                        break
                    self._write(seg, b"".join(take))
                    written += len(take)
                    if i < n and size + len(frames[i]) > room:
                        break
            except OSError as exc:
                if written:
                    # Cutting those back too would need more I/O that can fail as
                    # well; kept, they are exactly what the caller counts as spilled.
                    raise _PartialAppendError(written, exc) from exc
                raise
            return written

    def append_held(self, frame: bytes) -> tuple[Segment, int] | None:
        """Write one frame that the reader must not hand out until it is settled
        (see the module docstring); its segment and offset, or None when the budget
        has no room for it.  Raises OSError as :meth:`append`."""
        with self._lock:
            if self.closed or self.own is None:
                raise OSError("the spill store is closed")
            if len(frame) > self.max_bytes - self.disk_bytes:
                return None
            seg = self._writing
            if seg is None or (
                seg.size > len(SEGMENT_HEADER) and seg.size + len(frame) > self.segment_bytes
            ):
                seg = self._roll()
            offset = seg.size
            self._write(seg, frame)
            seg.out.add(offset)
            seg.held.add(offset)
            return seg, offset

    def sync_due(self) -> bool:
        """:meth:`background_sync` has work: sealed segments, or the policy's period."""
        if self._unsynced:
            return True
        policy = self.fsync
        return (
            not isinstance(policy, str)
            and self._dirty
            and time.monotonic() - self._last_sync >= policy
        )

    def background_sync(self) -> None:
        """fsync (in a worker thread) what the policy asks: sealed segments, and
        every ``fsync`` seconds (a number policy) what was written since."""
        with self._lock:
            self._sync_sealed()
            if self.closed:
                return
            self._maybe_sync()

    def _roll(self) -> Segment:
        old = self._writing
        if old is not None:
            self._seal(old)
        assert self.own is not None
        seg = Segment(self.own, self._next_seq)
        self._next_seq += 1
        seg.fd = os.open(seg.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o644)
        self._segments.append(seg)
        self._writing = seg
        try:
            self._write(seg, SEGMENT_HEADER)
        except OSError:
            self._drop(seg)
            raise
        return seg

    def _write(self, seg: Segment, data: bytes) -> None:
        assert seg.fd is not None
        view = memoryview(data)
        done = 0
        self._dirty = True
        try:
            while done < len(view):
                done += os.write(seg.fd, view[done:])
        except OSError:
            if done:
                # Leave no torn frame behind: the records are reported as not spilled.
                try:
                    os.ftruncate(seg.fd, seg.size)
                except OSError:
                    pass
            self._seal(seg)
            raise
        seg.size += len(data)
        self.disk_bytes += len(data)

    def _seal(self, seg: Segment) -> None:
        if seg.sealed:
            return
        seg.sealed = True
        if self._writing is seg:
            self._writing = None
        fd, seg.fd = seg.fd, None
        if fd is not None:
            if self.fsync == "never":
                os.close(fd)
            else:
                # Sealed while appending from the event loop: fsync'ed by
                # background_sync in a worker thread, not here.
                self._unsynced.append(fd)

    def _sync_sealed(self) -> None:
        fds, self._unsynced = self._unsynced, []
        for i, fd in enumerate(fds):
            try:
                os.fsync(fd)
            except OSError:
                for rest in fds[i:]:
                    os.close(rest)
                raise
            os.close(fd)

    def _maybe_sync(self) -> None:
        policy = self.fsync
        if isinstance(policy, str):
            return
        now = time.monotonic()
        if now - self._last_sync < policy:
            return
        self._last_sync = now
        self._dirty = False
        seg = self._writing
        if seg is not None and seg.fd is not None:
            os.fsync(seg.fd)
        for s in self._segments:
            if s.ack_fd is not None:
                os.fsync(s.ack_fd)

    def sync(self) -> None:
        """fsync everything written."""
        with self._lock:
            self._sync_sealed()
            for s in self._segments:
                for fd in (s.fd, s.ack_fd):
                    if fd is not None:
                        os.fsync(fd)
            self._last_sync = time.monotonic()

    # ------------------------------------------------------------------ reading

    @property
    def backlog_bytes(self) -> int:
        """Bytes of segments not read back yet."""
        return sum(max(0, s.size - s.read_pos) for s in self._segments if not s.read_done)

    def has_unread(self) -> bool:
        return any(not s.read_done for s in self._segments)

    def adopted_unread(self) -> bool:
        """Segments of dead producers' directories are left to read (they are read
        before this producer's own)."""
        own = self.own
        return any(not s.read_done and s.directory != own for s in self._segments)

    def read(self, max_bytes: int | None = None) -> ReadResult:
        """The next frames not read yet, oldest first (about ``max_bytes`` of them,
        default ``read_bytes``).

        Seals the segment being written when it is the oldest left to read.  A
        segment that cannot be read (an OSError other than a lack of descriptors or
        memory) is passed over, in ``result.unreadable``, and left on disk, with its
        ack file, for the next producer that opens spill_dir: retried here, it would
        hold up every segment after it.
        """
        with self._lock:
            result = ReadResult()
            for seg in self._segments:
                if seg.read_done:
                    continue
                if not seg.sealed:
                    self._seal(seg)
                try:
                    self._read_segment(seg, result, max_bytes or self.read_bytes)
                except OSError as exc:
                    if exc.errno in _TRANSIENT:
                        raise
                    seg.unreadable = exc
                    seg.read_done = True
                    result.unreadable.append((seg.path, exc))
                    continue
                seg.unreadable = None  # read again (a frame given back), this time whole
                if result.frames or result.blocked:
                    break
            self._collect()
            result.more = result.blocked or any(not s.read_done for s in self._segments)
            return result

    def _read_segment(self, seg: Segment, result: ReadResult, want: int) -> None:
        """Read ``seg`` on from ``read_pos`` until frames to hand out (those of about
        ``want`` bytes), a held frame or the segment's end.  A damaged region is read
        whole, in chunks growing past ``want``, and reported once: a probe (``want``
        of 1) that stopped at each chunk's damage would cross 29 bytes of it a read."""
        with open(seg.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # The last damage of this call: a chunk may start with more of it.
            tail: Damage | None = None
            if seg.read_pos == len(SEGMENT_HEADER):
                head = f.read(len(SEGMENT_HEADER))
                if head != SEGMENT_HEADER:
                    # Not our file header: read on, the frames carry their own checks.
                    tail = Damage(0, len(head), None, "bad segment file header")
                    if 0 not in seg.damaged:
                        seg.damaged.add(0)
                        result.damage.append((seg.path, tail))
            found = len(result.frames)
            chunk_size = want
            while True:
                f.seek(seg.read_pos)
                chunk = f.read(chunk_size)
                eof = seg.read_pos + len(chunk) >= size
                scan = decode_frames(chunk, base=seg.read_pos, at_eof=eof)
                skipping = bool(scan.damage) and not scan.frames
                grown = chunk_size > want
                if scan.frames and grown:
                    # A chunk grown to get past damage: its frames are read again from
                    # the first, in chunks of ``want`` (a probe's one frame, the room).
                    first = scan.frames[0].offset
                    scan = SegmentScan(
                        damage=[d for d in scan.damage if d.offset < first],
                        consumed=first - seg.read_pos,
                    )
                    eof = False
                elif scan.frames and not eof:
                    # Damage after the last frame may go on past the chunk: the next
                    # read takes it whole.
                    last = scan.frames[-1].end
                    scan.damage = [d for d in scan.damage if d.offset < last]
                    scan.consumed = last - seg.read_pos
                seg.read_pos += scan.consumed
                for d in scan.damage:
                    if (
                        tail is not None
                        and d.records is None
                        and d.offset == tail.offset + tail.length
                    ):
                        # More of the region the last chunk ended in: one report.
                        merged = Damage(tail.offset, tail.length + d.length, None, tail.reason)
                        if result.damage and result.damage[-1][1] is tail:
                            result.damage[-1] = (seg.path, merged)
                        tail = merged
                        continue
                    tail = d
                    if d.offset not in seg.damaged:
                        seg.damaged.add(d.offset)
                        result.damage.append((seg.path, d))
                for frame in scan.frames:
                    if frame.offset in seg.held:
                        # Its batch may still be delivered: nothing after it goes first.
                        seg.read_pos = frame.offset
                        result.blocked = True
                        return
                    if frame.offset in seg.acked or frame.offset in seg.out:
                        continue
                    seg.out.add(frame.offset)
                    result.frames.append((seg, frame))
                if eof:
                    seg.read_done = True
                    return
                if len(result.frames) > found:
                    return
                # Nothing to hand out yet (damage, or frames settled or out already:
                # held copies delivered, say): read on here. Returning empty-handed
                # would let read() hand out the next segment's frames ahead of this
                # one's, or end a probe with damage and no frame.
                if grown and not skipping:
                    chunk_size = want  # past the damage
                elif not scan.consumed:
                    want = chunk_size = want * 2  # a frame larger than the chunk
                elif skipping:
                    # Within a damaged region: longer chunks (bounded), so a region
                    # takes a number of chunks that grows with its size only past
                    # ``read_bytes``.
                    chunk_size = min(chunk_size * 2, max(want, self.read_bytes))
                else:
                    chunk_size = want

    # ------------------------------------------------------------------ acks

    def ack(self, seg: Segment, offset: int) -> None:
        """Record that every record of the frame at ``offset`` was delivered or reported."""
        self.settle([(seg, offset, True)])

    def settle(self, outcomes: list[tuple[Segment, int, bool]]) -> None:
        """Acknowledge (True) or give back for another read (False) frames handed out."""
        with self._lock:
            # An ack that cannot be written (a full disk) is raised after every outcome
            # is taken: the frame stays acknowledged in this process (a crash before
            # its segment is deleted sends it again: at-least-once), and the outcomes
            # after it are not lost (a given-back frame read again in its place, a
            # segment whose frames are all acknowledged deleted, freeing the disk).
            failed: OSError | None = None
            for seg, offset, ok in outcomes:
                if offset not in seg.out:
                    continue
                seg.out.discard(offset)
                seg.held.discard(offset)
                if not ok:
                    # Read again, before anything after it.
                    seg.read_pos = min(seg.read_pos, offset)
                    seg.read_done = False
                    continue
                seg.acked.add(offset)
                if seg.sealed and seg.read_done and not seg.out and seg.unreadable is None:
                    continue  # the whole segment goes below: no ack to write
                try:
                    if seg.ack_fd is None:
                        seg.ack_fd = self._open_acks(seg)
                    os.write(seg.ack_fd, encode_ack(offset))
                except OSError as exc:
                    failed = failed or exc
            self._collect()
            self._maybe_sync()
            if failed is not None:
                raise failed

    @staticmethod
    def _open_acks(seg: Segment) -> int:
        fd = os.open(seg.ack_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        try:
            # A previous owner killed in the middle of an entry left a torn one at
            # the end: entries appended after it would be read misaligned (as
            # garbage), and the frames they name sent again after another crash.
            size = os.fstat(fd).st_size
            if size % ACK_SIZE:
                os.ftruncate(fd, size - size % ACK_SIZE)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _collect(self) -> None:
        """Delete the segments whose every frame was acknowledged; let go of those
        that could not be read (left on disk, see :meth:`read`)."""
        done = [s for s in self._segments if s.sealed and s.read_done and not s.out]
        for seg in done:
            if seg.unreadable is None:
                self._drop(seg)
            else:
                self._let_go(seg)
        keep = self._segments
        for directory in list(self.adopted):
            if not any(s.directory == directory for s in keep):
                self.adopted.remove(directory)
                fd = self._locks.pop(directory, None)
                if fd is not None:
                    self._remove_dir(directory, fd)

    def _drop(self, seg: Segment) -> None:
        self._close_fds(seg, sync=False)
        for path in (seg.path, seg.ack_path):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                # A directory it may read but not write (a dead producer's, adopted):
                # raised here, it failed the read that had handed frames out, which
                # then never settled. Left on disk with its acks: every record in it
                # was delivered or reported, and a producer adopting the directory
                # later sends those its acks do not cover again (at-least-once).
                logger.warning(
                    "kafka_asgi: spill segment %s cannot be deleted (%s): left on disk;"
                    " a producer adopting %s later sends its records again",
                    path,
                    exc,
                    seg.directory,
                )
                break
        self._let_go(seg)

    def _let_go(self, seg: Segment) -> None:
        """Take ``seg`` out of the store (its files, if still there, stay)."""
        self._close_fds(seg, sync=False)
        self.disk_bytes -= seg.size
        seg.size = 0
        if seg in self._segments:
            self._segments.remove(seg)
        if self._writing is seg:
            self._writing = None
