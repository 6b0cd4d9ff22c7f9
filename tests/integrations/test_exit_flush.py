"""The final flush at exit of a process that never closes its producers: the WSGI
middleware's background producer and KafkaLogHandler's own, against a broker named by
host name, whose connection the flush itself must open."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.brokers import KafkaCluster
from tests.support.servers import REPO, read_topic

pytestmark = pytest.mark.broker

# Each background producer's thread waits for the first stop() (the exit flush) before
# it starts: the connection to the bootstrap broker is opened at exit, not before.
SCRIPT = """
import logging, os, threading
from kafka_asgi.integrations.background import BackgroundProducer

exiting = threading.Event()
stop, run = BackgroundProducer.stop, BackgroundProducer._run

def stop_at_exit(self, timeout=None):
    exiting.set()
    stop(self, timeout)

def run_at_exit(self):
    exiting.wait(30)
    run(self)

BackgroundProducer.stop, BackgroundProducer._run = stop_at_exit, run_at_exit

from wsgiref.util import setup_testing_defaults
from kafka_asgi.integrations.logging import KafkaLogHandler
from kafka_asgi.wsgi import AccessLogMiddleware

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

app = AccessLogMiddleware(
    hello, topic=os.environ["ACCESS_TOPIC"], bootstrap=os.environ["BOOTSTRAP"],
    cluster="exit-flush",
)
for i in range(3):
    environ = {"PATH_INFO": f"/{i}"}
    setup_testing_defaults(environ)
    app(environ, lambda status, headers, exc_info=None: None).close()

log = logging.getLogger("script")
log.setLevel(logging.INFO)
log.addHandler(KafkaLogHandler(os.environ["LOG_TOPIC"], bootstrap=os.environ["BOOTSTRAP"]))
for i in range(3):
    log.info("record %d", i, extra={"n": i})
assert not exiting.is_set()
# No close(): the exit hooks must flush both.
"""


def by_host_name(bootstrap: str) -> str:
    """``bootstrap`` with a loopback IP literal as ``localhost`` (the broker is then
    reached through a name resolution)."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bootstrap  # a name already
    if not ip.is_loopback:
        pytest.skip(f"the test broker {bootstrap} has no host name known here")
    return f"localhost:{port}"


def test_a_process_that_exits_without_closing_flushes_to_a_broker_named_by_host(
    kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    access_topic, log_topic = new_topic(), new_topic()
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "BOOTSTRAP": by_host_name(kafka.plaintext),
            "ACCESS_TOPIC": access_topic,
            "LOG_TOPIC": log_topic,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    access = read_topic(kafka.plaintext, access_topic, expect=3, timeout=30)
    assert sorted(e["path"] for e in access) == ["/0", "/1", "/2"]
    logged = read_topic(kafka.plaintext, log_topic, expect=3, timeout=30)
    assert sorted(e["n"] for e in logged) == [0, 1, 2]
    assert "not delivered" not in done.stderr
    assert "could not ship" not in done.stderr
