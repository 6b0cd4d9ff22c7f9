"""Durability while spilling (FakeClient, no broker): a record accepted for a spilling
topic is in a segment file when send_nowait returns; the batches that must stay in
memory when a topic starts spilling (in flight) get a held copy on disk, which is
never sent while its batch can still be delivered, and is sent in its place if the
batch fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from kafka_asgi.network.errors import ConnectionClosedError
from kafka_asgi.protocol.spill import SEGMENT_HEADER, decode_frames
from tests.support.fake_client import FakeClient
from tests.support.producers import Reports, running
from tests.support.timing import eventually

pytestmark = pytest.mark.anyio


def on_disk(spill: Path) -> list[bytes | None]:
    """Values of every record in the segment files, in file order (oldest segment first)."""
    values: list[bytes | None] = []
    for seg in sorted(spill.glob("*/*.seg")):
        scan = decode_frames(seg.read_bytes()[len(SEGMENT_HEADER) :], base=len(SEGMENT_HEADER))
        assert not scan.damage
        values += [r[1] for f in scan.frames for r in f.records]
    return values


async def test_accepted_record_of_a_spilling_topic_is_on_disk_on_return(
    tmp_path: Path, anyio_backend: str
) -> None:
    fake = FakeClient()
    fake.add_topic("t", 2)
    fake.down = True
    spill = tmp_path / "spill"
    options: dict[str, Any] = {
        "spill_dir": str(spill),
        "delivery_timeout": 0.3,
        "max_buffering": 100,
        "spill_fsync": "never",
    }
    async with running(fake, Reports(), **options) as producer:
        for i in range(20):
            producer.send_nowait("t", b"old%02d" % i, key=b"k%d" % (i % 3))
        assert await eventually(lambda: producer.stats().spilled >= 20, 10), producer.stats()
        for i in range(200):
            value = b"new%03d" % i
            producer.send_nowait("t", value, key=b"k%d" % (i % 3))
            # No await in between: what a SIGKILL right now would leave.
            assert on_disk(spill)[-1] == value, i
            assert producer.stats().spill_queued == 0
        assert sorted(v for v in on_disk(spill) if v is not None) == sorted(
            [b"old%02d" % i for i in range(20)] + [b"new%03d" % i for i in range(200)]
        )
        fake.down = False
        assert await eventually(lambda: producer.stats().delivered == 220, 20), producer.stats()
    for p in range(2):
        for key in {s.key for s in fake.records("t", p)}:
            mine = [s.value for s in fake.records("t", p) if s.key == key]
            assert mine == sorted(mine, key=lambda v: (v[:3] == b"new", v)), key


async def test_record_accepted_while_a_probe_has_the_backlog_is_on_disk(
    tmp_path: Path, anyio_backend: str
) -> None:
    """While Kafka seems away the replayer probes it with the topic's oldest frame
    read back into memory (here its whole backlog): a record accepted meanwhile
    still goes to the disk, behind that frame, and order holds once Kafka is back."""
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.down = True
    spill = tmp_path / "spill"
    options: dict[str, Any] = {
        "spill_dir": str(spill),
        "delivery_timeout": 1.0,  # how long the probe's records stay in memory
        "spill_fsync": "never",
    }
    async with running(fake, Reports(), **options) as producer:
        for i in range(20):
            producer.send_nowait("t", b"old%02d" % i)
        assert await eventually(lambda: producer.stats().spilled >= 20, 10), producer.stats()
        # The probe (one frame, read back about a second later) takes the backlog.
        assert await eventually(lambda: producer.stats().replayed >= 20, 10), producer.stats()
        for i in range(50):
            value = b"new%03d" % i
            producer.send_nowait("t", value)
            assert on_disk(spill)[-1] == value, i
        assert producer.stats().replayed == 20  # still the probe's: it had not failed yet
        fake.down = False
        assert await eventually(lambda: producer.stats().delivered == 70, 20), producer.stats()
    assert [s.value for s in fake.records("t", 0)] == [b"old%02d" % i for i in range(20)] + [
        b"new%03d" % i for i in range(50)
    ]


@pytest.mark.parametrize("outcome", ["delivered", "failed"])
async def test_batch_in_flight_when_its_topic_starts_spilling_gets_a_held_copy(
    tmp_path: Path, anyio_backend: str, outcome: str
) -> None:
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.gate = anyio.Event()
    if outcome == "failed":
        # The request in flight fails unwritten when the gate opens; Kafka is gone.
        fake.gate_error = ConnectionClosedError("connection lost")
    spill = tmp_path / "spill"
    reports = Reports()
    options: dict[str, Any] = {
        "spill_dir": str(spill),
        "max_buffering": 30,
        "batch_num": 10,
        "delivery_timeout": 1.5,
        "spill_fsync": "never",
    }
    async with running(fake, reports, **options) as producer:
        for i in range(10):
            producer.send_nowait("t", b"a%02d" % i)
        assert await eventually(lambda: producer.stats().in_flight == 10, 10), producer.stats()
        # Fill the memory buffer: the topic starts spilling, its memory records move
        # to the disk behind a held copy of the batch in flight.
        i = 0
        while producer.stats().spilled == 0:
            producer.send_nowait("t", b"b%02d" % i)
            i += 1
        sent = [b"a%02d" % k for k in range(10)] + [b"b%02d" % k for k in range(i)]
        assert on_disk(spill) == sent
        await anyio.sleep(0.3)
        # The copy is held: nothing behind it was sent before its batch settled.
        written = [b"a%02d" % k for k in range(10)] if outcome == "delivered" else []
        assert fake.all_values("t") == written
        if outcome == "failed":
            fake.down = True
            fake.gate.set()
            # The batch fails (delivery_timeout): its copy is read back in its place.
            await anyio.sleep(2.0)
            assert fake.all_values("t") == []
            fake.gate_error = None
            fake.down = False
        else:
            fake.gate.set()
        assert await eventually(lambda: producer.stats().delivered == len(sent), 20), (
            producer.stats()
        )
        assert await eventually(lambda: not list(spill.glob("*/*.seg")), 10)
        # The copy was sent only when its batch had failed.
        assert producer.stats().replayed == (i if outcome == "delivered" else len(sent))
    # Every record once (the held copy was not sent when its batch was delivered),
    # in the order handed over.
    assert fake.all_values("t") == sent
    assert not reports.errors
