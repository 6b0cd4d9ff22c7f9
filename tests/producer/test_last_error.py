"""stats().last_error during an outage (issue 11, point 5, fifth defect).

While no broker can be reached the records wait (up to delivery_timeout) and
nothing is reported yet; the connection errors must show in stats().last_error
meanwhile, and in the lifespan's shutdown log, instead of "last error: None".
"""

from __future__ import annotations

import logging

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.integrations.lifespan import producer_lifespan
from kafka_asgi.network.errors import ConnectError
from kafka_asgi.producer import sender
from tests.support.fake_client import FakeClient
from tests.support.timing import eventually

pytestmark = pytest.mark.anyio

# Nothing listens there: every connection is refused.
NOBODY = "127.0.0.1:1"


def _down_client(known_topic: bool) -> FakeClient:
    """No broker reachable; topic "t" known to the metadata (produce) or not yet."""
    client = FakeClient()
    if known_topic:
        client.add_topic("t", 1)
    client.down = True
    return client


@pytest.mark.parametrize("known_topic", [True, False], ids=["produce", "metadata"])
async def test_last_error_during_an_outage(anyio_backend: str, known_topic: bool) -> None:
    client = _down_client(known_topic)
    async with Producer(client=client, delivery_timeout=60, close_timeout=0.5) as producer:
        producer.send_nowait("t", b"v")
        assert await eventually(lambda: producer.stats().last_error is not None, 5)
        stats = producer.stats()
        assert isinstance(stats.last_error, ConnectError)
        assert stats.failed == 0 and stats.enqueued == 1  # still waiting, not reported


async def test_last_error_with_a_real_client(anyio_backend: str) -> None:
    async with Producer(NOBODY, delivery_timeout=60, close_timeout=0.5) as producer:
        producer.send_nowait("t", b"v")
        assert await eventually(lambda: producer.stats().last_error is not None, 10)
        assert isinstance(producer.stats().last_error, ConnectError)
        assert producer.stats().failed == 0


async def test_lifespan_shutdown_log_names_the_connection_error(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kafka_asgi")
    async with producer_lifespan(
        bootstrap=NOBODY,
        startup_timeout=0.5,
        shutdown_timeout=1.0,
        producer_options={"delivery_timeout": 60, "close_timeout": 0.5},
    ) as producer:
        producer.send_nowait("t", b"v")
        assert await eventually(lambda: producer.stats().last_error is not None, 10)
    (warning,) = [r for r in caplog.records if "still unsent" in r.getMessage()]
    message = warning.getMessage()
    assert "last error: None" not in message
    assert "127.0.0.1:1" in message, message


@pytest.mark.parametrize("known_topic", [True, False], ids=["produce", "metadata"])
async def test_a_long_wait_is_logged_rate_limited(
    anyio_backend: str,
    known_topic: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records waiting for a broker show in a WARNING once they have waited long (5 s;
    0.2 here), then at most every 10 s (0.6 here), before delivery_timeout reports
    anything; delivered once the broker is back."""
    monkeypatch.setattr(sender, "_WAITING_LOG_AFTER", 0.2)
    monkeypatch.setattr(sender, "_WAITING_LOG_EVERY", 0.6)
    caplog.set_level(logging.WARNING, logger="kafka_asgi")
    client = _down_client(known_topic)
    async with Producer(client=client, delivery_timeout=60, retry_backoff=0.05) as producer:
        producer.send_nowait("t", b"v")
        await anyio.sleep(1.5)
        waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
        assert 1 <= len(waits) <= 3, waits  # 0.2 s in, then every 0.6 s at most
        assert "1 records held" in waits[0] and "delivery_timeout=60" in waits[0]
        assert "ConnectError" in waits[0] or "reachable" in waits[0], waits[0]
        assert producer.stats().failed == 0
        if not known_topic:
            client.add_topic("t", 1)
        client.down = False
        await producer.flush(timeout=5)
        assert producer.stats().delivered == 1
