"""kafka-asgi run as a subprocess against the real broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tests.support.brokers import KafkaCluster, unique_name
from tests.support.readers import read_back
from tests.support.timing import eventually_sync, scaled

pytestmark = pytest.mark.broker

BACKENDS = ["asyncio", "trio"]


def cli(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kafka_asgi.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_produce_then_tail(
    kafka: KafkaCluster, new_topic: Callable[..., str], backend: str
) -> None:
    topic = new_topic()
    lines = ["first line", '{"user": "ada", "n": 1}', "", "caf\u00e9"]
    produced = cli(
        "produce",
        topic,
        "--key",
        "k1",
        "-b",
        kafka.plaintext,
        "--backend",
        backend,
        stdin="".join(f"{line}\n" for line in lines),
    )
    assert produced.returncode == 0, produced.stderr
    assert produced.stderr.strip() == f"produced 4 records to {topic}"

    tailed = cli(
        "--bootstrap",
        kafka.plaintext,
        "--backend",
        backend,
        "tail",
        topic,
        "--from-beginning",
        "--exit-at-end",
    )
    assert tailed.returncode == 0, tailed.stderr
    assert tailed.stdout.splitlines() == [f"[0:{i}] k1: {line}" for i, line in enumerate(lines)]

    as_json = cli(
        "tail",
        topic,
        "--from-beginning",
        "--max-records",
        "2",
        "--json",
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka.plaintext},
    )
    assert as_json.returncode == 0, as_json.stderr
    assert '\n  "value": {\n    "user": "ada",' in as_json.stdout
    decoder = json.JSONDecoder()
    text, objects = as_json.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        objects.append(obj)
        text = text[end:].lstrip()
    assert [(o["offset"], o["key"], o["value"]) for o in objects] == [
        (0, "k1", "first line"),
        (1, "k1", {"user": "ada", "n": 1}),
    ]


def test_tail_one_partition_of_many(kafka: KafkaCluster, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka.plaintext})
    for p in range(3):
        for i in range(2):
            producer.produce(topic, value=f"p{p}-{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    everything = cli("-b", kafka.plaintext, "tail", topic, "--from-beginning", "-e")
    assert everything.returncode == 0, everything.stderr
    assert sorted(everything.stdout.splitlines()) == sorted(
        f"[{p}:{i}] p{p}-{i}" for p in range(3) for i in range(2)
    )
    one = cli("-b", kafka.plaintext, "tail", topic, "--from-beginning", "-e", "--partition", "1")
    assert one.stdout.splitlines() == ["[1:0] p1-0", "[1:1] p1-1"]


def test_topics_and_create_topic(kafka: KafkaCluster) -> None:
    name = unique_name("cli-created")
    created = cli("-b", kafka.plaintext, "create-topic", name, "--partitions", "3")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"created topic {name} with 3 partitions"
    described = AdminClient({"bootstrap.servers": kafka.plaintext}).list_topics(name, timeout=30)
    assert len(described.topics[name].partitions) == 3

    listed = cli("-b", kafka.plaintext, "topics")
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout.splitlines()
    start = out.index(f"{name}\tpartitions=3")
    partition_lines = out[start + 1 : start + 4]
    host, port = kafka.plaintext.split(":")
    for p, line in enumerate(partition_lines):
        assert line.startswith(f"  partition {p}\tleader=")
        assert f"({host}:{port})" in line

    again = cli("-b", kafka.plaintext, "create-topic", name, "--partitions", "3")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "TOPIC_ALREADY_EXISTS" in again.stderr
    assert "Traceback" not in again.stderr


def test_sasl_ssl_options(kafka: KafkaCluster, new_topic: Callable[..., str]) -> None:
    kafka.require("sasl_ssl", "ca_file")
    assert kafka.sasl_ssl is not None and kafka.ca_file is not None
    topic = new_topic()
    listed = cli(
        "topics",
        "-b",
        kafka.sasl_ssl,
        "--ssl-cafile",
        kafka.ca_file,
        "--sasl-mechanism",
        "SCRAM-SHA-256",
        "--sasl-username",
        kafka.username,
        env={"KAFKA_SASL_PASSWORD": kafka.password},
    )
    assert listed.returncode == 0, listed.stderr
    assert f"{topic}\tpartitions=1" in listed.stdout.splitlines()
    wrong = cli(
        "topics",
        "-b",
        kafka.sasl_ssl,
        "--ssl-cafile",
        kafka.ca_file,
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-username",
        kafka.username,
        "--sasl-password",
        "not-the-password",
    )
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr
    assert "not-the-password" not in wrong.stderr
    # Each thing said once: the broker's address, and that authentication failed.
    assert wrong.stderr.count(kafka.sasl_ssl) == 1, wrong.stderr
    assert wrong.stderr.lower().count("authentication failed") == 1, wrong.stderr


@pytest.mark.parametrize("command", [["topics"], ["tail", "x"], ["create-topic", "x"]])
def test_dead_port_is_one_line_and_quick(command: list[str]) -> None:
    started = time.monotonic()
    result = cli("-b", "127.0.0.1:1", *command, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("kafka-asgi: cannot reach Kafka at 127.0.0.1:1")
    assert result.stderr.count("\n") == 1, result.stderr
    assert elapsed < scaled(15)


def test_produce_to_dead_port_fails(kafka: KafkaCluster) -> None:
    result = cli("-b", "127.0.0.1:1", "--connect-timeout", "1", "produce", "x", stdin="a\n")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_exits_130_without_traceback(
    kafka: KafkaCluster, new_topic: Callable[..., str], backend: str
) -> None:
    topic = new_topic()
    token = uuid.uuid4().hex
    producer = Producer({"bootstrap.servers": kafka.plaintext})
    producer.produce(topic, value=token.encode())
    assert producer.flush(30) == 0
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kafka_asgi.cli",
            "-b",
            kafka.plaintext,
            "--backend",
            backend,
            "tail",
            topic,
            "--from-beginning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # The record arriving proves tail is running and now waiting for more.
        assert proc.stdout.readline().strip() == f"[0:0] {token}"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err == ""
    assert out == ""


def waits_for_stdin(pid: int) -> bool:
    """Whether ``kafka-asgi produce`` (process ``pid``) is past its start: connected to
    the broker (a socket open) and its stdin reader thread started (a third thread,
    beside the main one and anyio's worker).  Linux /proc; elsewhere, after 5 s."""
    if not Path("/proc/self/fd").is_dir():
        time.sleep(5)
        return True
    try:
        fds = Path(f"/proc/{pid}/fd").iterdir()
        connected = any(os.readlink(fd).startswith("socket:") for fd in fds)
        return connected and len(list(Path(f"/proc/{pid}/task").iterdir())) >= 3
    except OSError:  # an fd closed while we looked
        return False


def test_ctrl_c_while_produce_waits_for_stdin(
    kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kafka_asgi.cli", "-b", kafka.plaintext, "produce", topic],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A condition, not a fixed sleep (which raced the imports on a loaded machine).
        assert eventually_sync(lambda: waits_for_stdin(proc.pid), 60), "produce never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err == ""


def test_produce_sends_the_bytes_of_each_line(
    kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    # A strict UTF-8 stdin and a line that is not UTF-8: the reading thread failed and
    # the command took it for the end of the input, printing "produced 1 record", exit
    # 0. stdin is read as bytes now: every line goes, as it is, less its line end.
    topic = new_topic()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    full_env["PYTHONIOENCODING"] = "utf-8:strict"
    lines = [b"first", b"x" * 10_000, b"\xff\xfe not utf-8", b"caf\xc3\xa9", b"last"]
    result = subprocess.run(
        [sys.executable, "-m", "kafka_asgi.cli", "-b", kafka.plaintext, "produce", topic],
        input=b"\r\n".join(lines[:2]) + b"\r\n" + b"\n".join(lines[2:]) + b"\n",
        capture_output=True,
        env=full_env,
        timeout=60,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert err == f"produced 5 records to {topic}\n"
    stored = read_back(kafka.plaintext, topic, 1, 5)
    assert [value for _, _, value, _ in stored[0]] == lines


def test_produce_to_a_missing_topic(kafka: KafkaCluster) -> None:
    missing = unique_name("missing")
    result = cli("-b", kafka.plaintext, "produce", missing, stdin="a\n")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "UNKNOWN_TOPIC_OR_PARTITION" in result.stderr and missing in result.stderr


def readme_transcript() -> list[tuple[str, list[str]]]:
    """(command, the output lines shown after it) for each ``$`` line of the README's
    ``kafka-asgi`` section."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The `kafka-asgi` command") :]
    block = section[section.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```")]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:].split("  #")[0].strip(), []))
        else:
            steps[-1][1].append(line)
    return steps


def test_the_readme_transcript_is_what_the_command_prints(kafka: KafkaCluster) -> None:
    # Run as a new user would copy it (on a fresh topic name): every command ends, and
    # prints what the README shows, timestamps aside.
    topic = unique_name("orders")
    steps = readme_transcript()
    assert len(steps) >= 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.plaintext
    cli_command = f"{sys.executable} -m kafka_asgi.cli"

    def masked(lines: list[str]) -> list[str]:
        return [re.sub(r'"timestamp": \d+', '"timestamp": T', line) for line in lines]

    for command, shown in steps:
        assert command.count("kafka-asgi") == 1, command
        run = subprocess.run(
            ["bash", "-c", command.replace("kafka-asgi", cli_command).replace("orders", topic)],
            capture_output=True,
            text=True,
            env=env,
            timeout=scaled(60),
        )
        assert run.returncode == 0, (command, run.stderr)
        if shown:
            printed = (run.stdout + run.stderr).replace(topic, "orders").splitlines()
            assert masked(printed) == masked(shown), command
