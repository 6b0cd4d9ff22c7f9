"""KafkaLogHandler against a real broker, as the README shows it: a plain script (the
handler's own producer), and beside a Producer registered under the cluster name."""

from __future__ import annotations

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


def run_script(source: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plain_script_with_bootstrap_ships_every_record(
    kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic()
    done = run_script(
        """
        import logging, os
        from kafka_asgi.integrations.logging import KafkaLogHandler

        log = logging.getLogger("script")
        log.setLevel(logging.INFO)
        log.addHandler(KafkaLogHandler(os.environ["TOPIC"], bootstrap=os.environ["BOOTSTRAP"]))
        for i in range(100):
            log.info("record %d", i, extra={"n": i})
        # No close(), no flush: logging.shutdown at exit must ship them.
        """,
        tmp_path,
        TOPIC=topic,
        BOOTSTRAP=kafka.plaintext,
    )
    assert done.returncode == 0, done.stderr
    got = read_topic(kafka.plaintext, topic, expect=100, timeout=60)
    assert sorted(e["n"] for e in got) == list(range(100))
    assert all(e["logger"] == "script" and e["level"] == "INFO" for e in got)
    assert "could not ship" not in done.stderr


def test_beside_a_registered_producer(
    kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """Records logged before the producer started wait, then go out through it (no other
    record needed); records from the loop go straight to it."""
    topic = new_topic()
    done = run_script(
        """
        import logging, os
        import anyio
        from kafka_asgi import Producer
        from kafka_asgi.integrations.logging import KafkaLogHandler

        log = logging.getLogger("script")
        log.setLevel(logging.INFO)
        handler = KafkaLogHandler(os.environ["TOPIC"])
        log.addHandler(handler)
        for i in range(10):
            log.info("early %d", i, extra={"n": i})

        async def main():
            async with Producer(os.environ["BOOTSTRAP"], cluster_name="default"):
                for i in range(10, 100):
                    log.info("record %d", i, extra={"n": i})

        anyio.run(main)
        assert handler.sent == 100 and handler.dropped == 0, (handler.sent, handler.dropped)
        """,
        tmp_path,
        TOPIC=topic,
        BOOTSTRAP=kafka.plaintext,
    )
    assert done.returncode == 0, done.stderr
    got = read_topic(kafka.plaintext, topic, expect=100, timeout=60)
    assert sorted(e["n"] for e in got) == list(range(100))


def test_records_no_producer_took_are_counted_and_reported(tmp_path: Path) -> None:
    done = run_script(
        """
        import logging
        from kafka_asgi.integrations.logging import KafkaLogHandler

        log = logging.getLogger("script")
        log.setLevel(logging.INFO)
        handler = KafkaLogHandler("nowhere", cluster="nobody")
        log.addHandler(handler)
        for i in range(7):
            log.info("lost %d", i)
        handler.close()
        assert handler.dropped == 7 and handler.pending == 0, handler.dropped
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "could not ship 7 record(s)" in done.stderr
    assert "no producer ran for cluster 'nobody'" in done.stderr


def test_records_of_the_own_producers_thread_are_refused(
    kafka: KafkaCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """On the root logger with asyncio's debug mode, the producer's thread logs records of
    its own (asyncio's "Close <loop>" as its loop ends): shipped, they would feed the
    producer its own traffic; and at exit, where logging.shutdown holds the handler's lock
    around close() while close() waits for that thread, the thread would wait for the
    lock, and the final flush would stall until the join gave up."""
    topic = new_topic()
    done = run_script(
        """
        import logging, os
        from kafka_asgi.integrations.logging import KafkaLogHandler

        handler = KafkaLogHandler(
            os.environ["TOPIC"], bootstrap=os.environ["BOOTSTRAP"], close_timeout=2.0
        )
        stderr = logging.StreamHandler()
        stderr.setLevel(logging.WARNING)
        logging.basicConfig(level=logging.DEBUG, handlers=[handler, stderr])
        logging.getLogger("myapp").info("hello")
        """,
        tmp_path,
        TOPIC=topic,
        BOOTSTRAP=kafka.plaintext,
        PYTHONASYNCIODEBUG="1",
    )
    assert done.returncode == 0, done.stderr
    assert "still running after" not in done.stderr
    got = read_topic(kafka.plaintext, topic, expect=1, timeout=30)
    # basicConfig gave the handler its "LEVEL:name:message" formatter.
    assert [(e["logger"], e["message"]) for e in got] == [("myapp", "INFO:myapp:hello")]
