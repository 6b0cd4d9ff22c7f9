"""The local broker harness: cold start under 60 s, every listener checked, nothing left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.brokers import kafka_local
from tests.support.ports import free_base_port
from tests.support.timing import scaled


def test_cold_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    if os.environ.get("KAFKA_ASGI_TEST_BOOTSTRAP"):
        pytest.skip("an external cluster was given; the local harness is not in use")
    port = free_base_port()
    broker = kafka_local.LocalKafka(state_dir=tmp_path / "state", base_port=port)
    t0 = time.monotonic()
    try:
        addr = broker.start(timeout=60.0)
        elapsed = time.monotonic() - t0
        assert elapsed < scaled(60.0)
        assert addr.plaintext == f"127.0.0.1:{port}"
        pid = broker.pid()
        assert pid is not None
        # start() already authenticated and verified the CA; check once more from outside.
        kafka_local.check_listeners(addr)
    finally:
        broker.stop(remove_data=True)
    assert broker.pid() is None
    assert (
        not Path(f"/proc/{pid}").exists()
        or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    )
    with pytest.raises(kafka_local.HarnessError):
        kafka_local.check_listeners(addr, timeout=1.0)


def test_failed_start_reports_log_tail(tmp_path: Path) -> None:
    if os.environ.get("KAFKA_ASGI_TEST_BOOTSTRAP"):
        pytest.skip("an external cluster was given; the local harness is not in use")
    import socket

    blocker = socket.socket()
    port = free_base_port()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    broker = kafka_local.LocalKafka(state_dir=tmp_path / "state", base_port=port)
    try:
        t0 = time.monotonic()
        with pytest.raises(kafka_local.HarnessError, match=str(port)):
            broker.start(timeout=60.0)
        assert time.monotonic() - t0 < scaled(60.0)
    finally:
        blocker.close()
        broker.stop(remove_data=True)


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage reads an id starting with "-" as an option and the start fails."""
    import uuid

    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(kafka_local.uuid, "uuid4", lambda: next(drawn))
    cluster_id = kafka_local.new_cluster_id()
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
