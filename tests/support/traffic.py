"""HTTP traffic for the example apps (the same routes in every framework): requests
with what each answered, many of them over keep-alive clients, and timed runs."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int
    request_id: str
    size: int
    sent: int
    user_agent: str


def request(c: httpx.Client, i: int) -> Answer:
    if i % 10 == 0:
        body = b'{"item_id": %d, "quantity": 2}' % (i % 100 + 1)
        r = c.post("/orders", content=body, headers={"content-type": "application/json"})
        method, path, sent = "POST", "/orders", len(body)
    elif i % 10 == 1:
        r = c.get("/export")
        method, path, sent = "GET", "/export", 0
    else:
        path = f"/items/{i % 100 + 1}"
        r = c.get(path)
        method, sent = "GET", 0
    return Answer(
        method,
        path,
        r.status_code,
        r.headers["x-request-id"],
        len(r.content),
        sent,
        c.headers["user-agent"],
    )


def hammer(url: str, n: int, clients: int = 8, first: int = 0) -> list[Answer]:
    """``n`` requests over ``clients`` keep-alive connections (spread over the workers)."""

    def run(k: int) -> list[Answer]:
        with httpx.Client(base_url=url, timeout=30) as c:
            return [request(c, i) for i in range(first + k, first + n, clients)]

    with ThreadPoolExecutor(clients) as pool:
        return [a for part in pool.map(run, range(clients)) for a in part]


def env_for(bootstrap: str, access: str, events: str, **more: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ACCESS_LOG_TOPIC": access,
        "EVENTS_TOPIC": events,
        "KAFKA_FLUSH_TIME": "0.2",
        **more,
    }


def timed(url: str, n: int) -> tuple[list[int], float]:
    statuses: list[int] = []
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n):
            start = time.perf_counter()
            r = c.get(f"/items/{i % 100 + 1}")
            latencies.append(time.perf_counter() - start)
            statuses.append(r.status_code)
    return statuses, statistics.median(latencies)
