#!/usr/bin/env python3
"""The README's demo: the FastAPI example under uvicorn, its access log read back from Kafka.

1. starts the local broker (``scripts/kafka_local.py``) unless one already answers;
2. creates the demo topics (the broker does not auto-create topics);
3. runs ``examples/fastapi_app`` under uvicorn with 2 workers;
4. sends it some requests with httpx (item lookups, orders, a streamed CSV, a 404);
5. prints the access-log events (and the order events logged through the FastAPI
   dependency, with the same request ids) read back from Kafka with kafka_asgi's
   own consumer;
6. stops uvicorn, and the broker if this script started it.

Usage: ``python examples/demo.py [--requests N] [--bootstrap HOST:PORT] [--keep-broker]``
(after ``pip install -e .[dev]``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.consumer import EARLIEST, BasicConsumer
from kafka_asgi.errors import TopicAlreadyExistsError

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "scripts" / "kafka_local.py"


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def broker_answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def create_topics(bootstrap: str, topics: list[str]) -> None:
    async with KafkaClient(bootstrap) as client:
        for topic in topics:
            try:
                await client.create_topics([(topic, 2)])
            except TopicAlreadyExistsError:
                pass


async def read_back(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with BasicConsumer(bootstrap) as consumer:
        with anyio.move_on_after(30):
            async for record in consumer.follow(topic, offset=EARLIEST, max_records=count):
                if record.value is not None:
                    events.append(json.loads(record.value))
    return events


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("demo: uvicorn exited during startup (see its output above)")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"demo: uvicorn not ready within {timeout:.0f}s")


def send_requests(url: str, n: int) -> list[tuple[str, int, str]]:
    answers = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(n):
            if i == n - 1:
                r = client.get("/items/999")  # a 404 is logged like any response
            elif i % 5 == 0:
                r = client.post("/orders", json={"item_id": i % 100 + 1, "quantity": 1 + i % 3})
            elif i % 5 == 1:
                r = client.get("/export")
            else:
                r = client.get(f"/items/{i % 100 + 1}", params={"ref": "demo"})
            answers.append(
                (
                    f"{r.request.method} {r.request.url.path}",
                    r.status_code,
                    r.headers["x-request-id"],
                )
            )
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # The local harness honours KAFKA_LOCAL_BASE_PORT; so does the demo's default.
    local = f"127.0.0.1:{os.environ.get('KAFKA_LOCAL_BASE_PORT', '9092')}"
    parser.add_argument("--bootstrap", default=local)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument(
        "--keep-broker", action="store_true", help="leave a broker we started running"
    )
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    access_topic, events_topic = f"demo-access-log-{run_id}", f"demo-shop-events-{run_id}"

    started_broker = False
    if broker_answers(args.bootstrap):
        say(f"using the Kafka broker already running at {args.bootstrap}")
    else:
        if args.bootstrap != local:
            raise SystemExit(f"demo: no broker answers at {args.bootstrap}")
        say("starting a local Kafka broker (scripts/kafka_local.py start; first run fetches jars)")
        subprocess.run(
            [sys.executable, str(HARNESS), "start", "--timeout", "120"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        started_broker = True

    uvicorn: subprocess.Popen[bytes] | None = None
    try:
        anyio.run(create_topics, args.bootstrap, [access_topic, events_topic])
        say(f"created topics {access_topic} and {events_topic}")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": args.bootstrap,
            "ACCESS_LOG_TOPIC": access_topic,
            "EVENTS_TOPIC": events_topic,
            "KAFKA_FLUSH_TIME": "0.2",
        }
        say(f"running examples/fastapi_app under uvicorn (2 workers) on {url}")
        uvicorn = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app:app",
                "--workers",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=REPO / "examples" / "fastapi_app",
            env=env,
        )
        wait_ready(url, uvicorn)
        answers = send_requests(url, args.requests)
        say(f"sent {len(answers)} requests; reading the access log back from Kafka")
        events = anyio.run(read_back, args.bootstrap, access_topic, len(answers))
        orders = anyio.run(
            read_back, args.bootstrap, events_topic, sum(a[0].startswith("POST") for a in answers)
        )
        print()
        for event in sorted(events, key=lambda e: e["timestamp"]):
            print(json.dumps(event))
        print()
        for order in orders:
            print(json.dumps(order))
        print()
        by_id = {e["request_id"] for e in events}
        missing = [a for a in answers if a[2] not in by_id]
        say(
            f"{len(events)} access-log events for {len(answers)} requests; "
            f"{len(orders)} order events carrying their request's id"
        )
        if missing or len(events) != len(answers):
            say(f"MISSING events for: {missing}")
            return 1
        return 0
    finally:
        if uvicorn is not None and uvicorn.poll() is None:
            uvicorn.send_signal(signal.SIGTERM)  # workers flush their producers on the way out
            try:
                uvicorn.wait(30)
            except subprocess.TimeoutExpired:
                uvicorn.kill()
                uvicorn.wait()
        if started_broker and not args.keep_broker:
            say("stopping the broker this demo started")
            subprocess.run(
                [sys.executable, str(HARNESS), "stop"], check=False, stdout=subprocess.DEVNULL
            )


if __name__ == "__main__":
    sys.exit(main())
