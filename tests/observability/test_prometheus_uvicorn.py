"""The FastAPI example under uvicorn with 2 workers, in prometheus-client's
multiprocess mode: a scrape of /metrics (served by either worker) counts every access
event both workers delivered to Kafka."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import APPS, read_topic, uvicorn
from tests.support.timing import eventually_sync
from tests.support.traffic import env_for, hammer

pytestmark = pytest.mark.broker


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_scrape_counts_every_delivered_access_event(
    kafka: Any, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    access, events = new_topic(partitions=2), new_topic()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = env_for(kafka.plaintext, access, events, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    n = 1000
    with uvicorn(APPS["fastapi"], env, tmp_path, workers=2) as server:
        answers = hammer(server.url, n, clients=8)
        assert all(a.status < 500 for a in answers)
        scraped: dict[str, str] = {}

        def delivered() -> bool:
            r = httpx.get(server.url + "/metrics", timeout=10)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            scraped["text"] = r.text
            sent = metric(r.text, "kafka_asgi_producer_records_sent_total", topic=access)
            # The workers copy the middleware's counts into their files every second.
            emitted = metric(r.text, "kafka_asgi_access_log_events_emitted_total")
            return sent >= n and emitted >= n

        assert eventually_sync(delivered, within=60, interval=0.5), scraped.get("text", "")[-3000:]
        text = scraped["text"]
        # Exactly n: /metrics and /health are excluded from the access log.
        assert metric(text, "kafka_asgi_producer_records_sent_total", topic=access) == n
        assert metric(text, "kafka_asgi_producer_records_failed_total") == 0
        assert metric(text, "kafka_asgi_access_log_events_emitted_total") == n
        assert metric(text, "kafka_asgi_access_log_events_dropped_total") == 0
        orders = sum(1 for a in answers if a.method == "POST")
        assert metric(text, "kafka_asgi_producer_records_sent_total", topic=events) == orders
        assert metric(text, "kafka_asgi_producer_batches_sent_total", topic=access) >= 2
        assert metric(text, "kafka_asgi_producer_request_duration_seconds_count") >= 2
        assert metric(text, "kafka_asgi_producer_buffer_limit_records") == 2 * 50_000
        # Both workers wrote their own files: the sum covers them.
        assert len(list(multiproc.glob("counter_*.db"))) == 2
    assert len(read_topic(kafka.plaintext, access, expect=n, timeout=30)) == n
