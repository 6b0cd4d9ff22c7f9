"""Run the example apps under real uvicorn / gunicorn processes and read their events back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.timing import eventually_sync, scaled

REPO = Path(__file__).resolve().parents[2]
GUNICORN_READY = "Worker loaded the app"


@dataclass(frozen=True)
class AppSpec:
    name: str
    app_dir: Path
    ref: str
    item_route: str
    orders_route: str


APPS = {
    "fastapi": AppSpec(
        "fastapi", REPO / "examples" / "fastapi_app", "app:app", "/items/{item_id}", "/orders"
    ),
    "starlette": AppSpec(
        "starlette",
        REPO,
        "tests.integrations.apps.starlette_app:app",
        "/items/{item_id:int}",
        "/orders",
    ),
    "django": AppSpec(
        "django",
        REPO / "examples" / "django_app",
        "shopsite.asgi:application",
        "items/<int:item_id>",
        "orders",
    ),
    "litestar": AppSpec(
        "litestar",
        REPO,
        "tests.integrations.apps.litestar_app:app",
        "/items/{item_id}",
        "/orders",
    ),
    "flask": AppSpec(
        "flask", REPO / "examples" / "flask_app", "app:app", "/items/<int:item_id>", "/orders"
    ),
}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@contextmanager
def uvicorn(
    spec: AppSpec,
    env: dict[str, str],
    tmp: Path,
    workers: int = 2,
    startup_timeout: float = 60.0,
) -> Iterator[Server]:
    """A uvicorn process tree serving ``spec``; SIGTERM (then SIGKILL) on exit."""
    port = free_port()
    log = tmp / f"uvicorn-{spec.name}-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                spec.ref,
                "--app-dir",
                str(spec.app_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server, startup_timeout, workers)
        yield server
    finally:
        stop(server)


@contextmanager
def gunicorn(
    spec: AppSpec,
    env: dict[str, str],
    tmp: Path,
    workers: int = 2,
    worker_class: str = "sync",
    startup_timeout: float = 60.0,
) -> Iterator[Server]:
    """A gunicorn master and its workers serving ``spec`` with the example's
    gunicorn.conf.py (if it has one); SIGTERM (then SIGKILL) on exit.

    Ready means every worker has loaded the app ("Booting worker" is logged before the
    import): a worker still importing would leave all the first keep-alive connections
    to the other one."""
    example_conf = spec.app_dir / "gunicorn.conf.py"
    port = free_port()
    log = tmp / f"gunicorn-{spec.name}-{worker_class}-{port}.log"
    conf = tmp / f"gunicorn-{spec.name}-{worker_class}-{port}.conf.py"
    conf.write_text(
        (f"exec(open({str(example_conf)!r}).read())\n" if example_conf.exists() else "")
        + "def post_worker_init(worker):\n"
        + "    worker.log.info('%s (pid: %s)', READY, worker.pid)\n"
        + f"READY = {GUNICORN_READY!r}\n"
    )
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                spec.ref,
                "--config",
                str(conf),
                "--chdir",
                str(spec.app_dir),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                worker_class,
                "--threads",
                "4" if worker_class == "gthread" else "1",
                "--error-logfile",
                "-",
                "--no-control-socket",
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server, startup_timeout, workers, GUNICORN_READY)
        yield server
    finally:
        stop(server)


def wait_ready(
    server: Server, timeout: float, workers: int, marker: str = "Application startup complete"
) -> None:

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_text()}")
        if server.log.read_text(errors="replace").count(marker) < workers:
            return False
        try:
            return httpx.get(server.url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    if ready() or eventually_sync(ready, timeout, interval=0.2):
        return
    raise RuntimeError(f"server not ready within {timeout}s:\n{server.log_text()}")


def stop(server: Server, timeout: float = 60.0) -> int | None:
    """SIGTERM the server's parent (it stops its workers); SIGKILL the group if stuck."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # Workers left behind by a crashed parent.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.returncode


def read_topic(
    bootstrap: str,
    topic: str,
    expect: int,
    timeout: float = 60.0,
    settle: float = 2.0,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Every record of ``topic`` (values as JSON, with the Kafka headers under
    ``__headers__``), waiting until ``expect`` arrived (or ``until(records)`` holds),
    then ``settle`` more seconds for any extra one."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + scaled(timeout)
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if settle_until is None and (len(out) >= expect or (until is not None and until(out))):
                settle_until = now + settle
            if (settle_until is not None and now > settle_until) or now > deadline:
                return out
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    continue
                event = json.loads(message.value())
                event["__headers__"] = dict(message.headers() or [])
                out.append(event)
    finally:
        consumer.close()


def create_topics(bootstrap: str, *names: str, partitions: int = 2) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        operation_timeout=30,
    )
    for f in futures.values():
        f.result(timeout=30)
