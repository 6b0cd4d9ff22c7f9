"""The ``kafka-asgi`` command: tail and produce records, list and create topics.

    kafka-asgi [connection options] COMMAND ...
    kafka-asgi tail TOPIC [--from-beginning] [--partition N] [--json] [--max-records N]
                          [--exit-at-end]
    kafka-asgi produce TOPIC [--key K]          (one record per line of stdin)
    kafka-asgi topics
    kafka-asgi create-topic NAME --partitions N

Connection options may come before or after the command.  The bootstrap defaults to
``$KAFKA_BOOTSTRAP_SERVERS``, else 127.0.0.1:9092 (``-b`` or the variable given empty is
an error); the SASL password to ``$KAFKA_SASL_PASSWORD``; the OAuth client secret to
``$KAFKA_OAUTH_CLIENT_SECRET``.
``--sasl-mechanism OAUTHBEARER`` takes its token from an OIDC token endpoint
(``--oauth-token-url``, ``--oauth-client-id``, secret, ``--oauth-scope``) or from AWS
MSK IAM (``--msk-iam-region``, optionally ``--aws-profile`` or ``--aws-role-arn``).
A failure prints one line on stderr and exits 1; a command line that argparse rejects
(an unknown option, a bad number) exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TextIO

import anyio

from kafka_asgi.consumer.results import EARLIEST, LATEST, ConsumerRecord
from kafka_asgi.protocol.errors import KafkaError

__all__ = ["build_parser", "client_options", "format_record", "main"]

PROG = "kafka-asgi"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
_STDIN_QUEUE_SIZE = 1000  # lines read ahead of the producer


class CommandError(Exception):
    """A failure the command reports in one line (not a Kafka error)."""


# --- arguments ---------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _config_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _add_connection_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # The same options exist on the main parser and on every command so that they
    # may be written before or after the command.  On the commands they default to
    # SUPPRESS: an option left out there must not overwrite the main parser's value.
    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    group = parser.add_argument_group("connection options")
    group.add_argument(
        "--bootstrap",
        "-b",
        metavar="HOST:PORT[,...]",
        default=default(None),
        help=f"brokers (default: $KAFKA_BOOTSTRAP_SERVERS, else {DEFAULT_BOOTSTRAP})",
    )
    group.add_argument("--client-id", default=default("kafka-asgi-cli"), help="client id")
    group.add_argument(
        "--ssl", action="store_true", default=default(False), help="connect with TLS"
    )
    group.add_argument("--ssl-cafile", metavar="PEM", default=default(None), help="CA bundle")
    group.add_argument(
        "--ssl-certfile", metavar="PEM", default=default(None), help="client certificate"
    )
    group.add_argument(
        "--ssl-keyfile", metavar="PEM", default=default(None), help="client private key"
    )
    group.add_argument(
        "--no-ssl-check-hostname",
        dest="ssl_check_hostname",
        action="store_false",
        default=default(True),
        help="do not check that the broker's certificate names its host",
    )
    group.add_argument(
        "--sasl-mechanism",
        choices=SASL_MECHANISMS,
        type=str.upper,
        default=default(None),
        help="SASL mechanism",
    )
    group.add_argument("--sasl-username", metavar="USER", default=default(None))
    group.add_argument(
        "--sasl-password",
        metavar="PASSWORD",
        default=default(None),
        help="(default: $KAFKA_SASL_PASSWORD)",
    )
    group.add_argument("--oauth-token-url", metavar="URL", default=default(None))
    group.add_argument("--oauth-client-id", metavar="ID", default=default(None))
    group.add_argument(
        "--oauth-client-secret",
        metavar="SECRET",
        default=default(None),
        help="(default: $KAFKA_OAUTH_CLIENT_SECRET)",
    )
    group.add_argument("--oauth-scope", metavar="SCOPE", default=default(None))
    group.add_argument(
        "--oauth-extension",
        metavar="KEY=VALUE",
        action="append",
        default=default(None),
        help="SASL extension sent with the token (repeatable), e.g. logicalCluster=lkc-1",
    )
    group.add_argument(
        "--msk-iam-region", metavar="REGION", default=default(None), help="AWS MSK IAM tokens"
    )
    group.add_argument("--aws-profile", metavar="NAME", default=default(None))
    group.add_argument("--aws-role-arn", metavar="ARN", default=default(None))
    group.add_argument(
        "--connect-timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=default(5.0),
        help="time allowed to connect to a broker (default: 5)",
    )
    group.add_argument(
        "--request-timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=default(30.0),
        help="time allowed for a broker to answer (default: 30)",
    )
    group.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default=default("asyncio"),
        help="event loop to run on (default: asyncio)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tail and produce Kafka records, list and create topics.",
    )
    _add_connection_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _add_connection_options(sub, top_level=False)
        return sub

    tail = command("tail", "print the records of a topic as they arrive")
    tail.add_argument("topic")
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record (default: only records written from now on)",
    )
    start.add_argument(
        "--offset",
        type=_non_negative_int,
        metavar="N",
        help="start at this offset (in every partition followed)",
    )
    tail.add_argument(
        "--partition", "-p", type=_non_negative_int, metavar="N", help="only this partition"
    )
    tail.add_argument(
        "--json",
        action="store_true",
        help="print each record as a JSON object, JSON values pretty-printed",
    )
    tail.add_argument(
        "--max-records", "-n", type=_positive_int, metavar="N", help="stop after N records"
    )
    tail.add_argument(
        "--exit-at-end",
        "-e",
        action="store_true",
        help="stop at the end of the log as it was when tail started",
    )
    tail.add_argument(
        "--read-committed",
        action="store_true",
        help="leave out records of open and aborted transactions",
    )

    produce = command("produce", "send each line of stdin as one record")
    produce.add_argument("topic")
    produce.add_argument("--key", "-k", help="key of every record (default: none)")
    produce.add_argument(
        "--partition", "-p", type=_non_negative_int, metavar="N", help="send to this partition"
    )

    command("topics", "list the topics with their partitions and leaders")

    create = command("create-topic", "create a topic")
    create.add_argument("name")
    create.add_argument(
        "--partitions", type=_positive_int, default=1, metavar="N", help="(default: 1)"
    )
    create.add_argument(
        "--replication-factor", type=_positive_int, default=1, metavar="N", help="(default: 1)"
    )
    create.add_argument(
        "--config",
        type=_config_pair,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a topic configuration entry (repeatable)",
    )
    return parser


def _bootstrap(given: str | None, env: Mapping[str, str]) -> str:
    """``--bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else the default. Either one
    given empty is an error: ``-b "$BROKERS"`` with the variable unset in a script must
    not send its records to whatever listens on 127.0.0.1:9092."""
    if given is not None:
        if not given.replace(",", "").strip():
            raise CommandError(
                f"--bootstrap is empty ({given!r}): give HOST:PORT[,...], or leave it out"
                f" for $KAFKA_BOOTSTRAP_SERVERS, else {DEFAULT_BOOTSTRAP}"
            )
        return given
    value = env.get("KAFKA_BOOTSTRAP_SERVERS")
    if value is None:
        return DEFAULT_BOOTSTRAP
    if not value.replace(",", "").strip():
        raise CommandError(
            f"$KAFKA_BOOTSTRAP_SERVERS is set but empty ({value!r}): give HOST:PORT[,...],"
            f" or unset it for {DEFAULT_BOOTSTRAP}"
        )
    return value


def client_options(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """The bootstrap and the client options that ``args`` (and the environment) ask for."""
    env = os.environ if environ is None else environ
    bootstrap = _bootstrap(args.bootstrap, env)
    options: dict[str, Any] = {
        "client_id": args.client_id,
        "connect_timeout": args.connect_timeout,
        "request_timeout": args.request_timeout,
    }
    if args.ssl or args.ssl_cafile or args.ssl_certfile or args.ssl_keyfile:
        options["ssl"] = True
        options["ssl_cafile"] = args.ssl_cafile
        options["ssl_certfile"] = args.ssl_certfile
        options["ssl_keyfile"] = args.ssl_keyfile
        options["ssl_check_hostname"] = args.ssl_check_hostname
    oauth = _oauth_provider_settings(args, env)
    if oauth is not None or args.sasl_mechanism == "OAUTHBEARER":
        if args.sasl_mechanism not in (None, "OAUTHBEARER"):
            raise CommandError(
                f"the OAuth/MSK IAM options need --sasl-mechanism OAUTHBEARER, not"
                f" {args.sasl_mechanism}"
            )
        if oauth is None:
            raise CommandError(
                "--sasl-mechanism OAUTHBEARER needs --oauth-token-url (with"
                " --oauth-client-id and a secret) or --msk-iam-region"
            )
        if args.sasl_username or args.sasl_password:
            raise CommandError("--sasl-username/--sasl-password do not apply to OAUTHBEARER")
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = oauth
        if args.msk_iam_region and not options.get("ssl"):
            # MSK's IAM listeners are TLS only.
            options["ssl"] = True
            options["ssl_check_hostname"] = args.ssl_check_hostname
    elif args.sasl_mechanism:
        password = args.sasl_password
        if password is None:
            password = env.get("KAFKA_SASL_PASSWORD")
        if not args.sasl_username or password is None:
            raise CommandError(
                f"--sasl-mechanism {args.sasl_mechanism} needs --sasl-username and "
                "--sasl-password (or $KAFKA_SASL_PASSWORD)"
            )
        options["sasl_mechanism"] = args.sasl_mechanism
        options["sasl_username"] = args.sasl_username
        options["sasl_password"] = password
    elif args.sasl_username or args.sasl_password:
        raise CommandError("--sasl-username/--sasl-password need --sasl-mechanism")
    return bootstrap, options


def _oauth_provider_settings(args: argparse.Namespace, env: Any) -> dict[str, Any] | None:
    """The token provider's settings (kafka_asgi.oauth.provider_from_settings), if any."""
    oidc = [args.oauth_token_url, args.oauth_client_id, args.oauth_scope, args.oauth_extension]
    msk = [args.msk_iam_region, args.aws_profile, args.aws_role_arn]
    if any(v is not None for v in msk):
        if any(v is not None for v in oidc) or args.oauth_client_secret is not None:
            raise CommandError("--msk-iam-region and the --oauth-* options exclude each other")
        if not args.msk_iam_region:
            raise CommandError("--aws-profile/--aws-role-arn need --msk-iam-region")
        if args.aws_profile and args.aws_role_arn:
            raise CommandError("give --aws-profile or --aws-role-arn, not both")
        settings: dict[str, Any] = {"provider": "msk_iam", "region": args.msk_iam_region}
        if args.aws_profile:
            settings["profile"] = args.aws_profile
        if args.aws_role_arn:
            settings["role_arn"] = args.aws_role_arn
        return settings
    if all(v is None for v in oidc) and args.oauth_client_secret is None:
        return None
    secret = args.oauth_client_secret
    if secret is None:
        secret = env.get("KAFKA_OAUTH_CLIENT_SECRET")
    if not args.oauth_token_url or not args.oauth_client_id or not secret:
        raise CommandError(
            "OAuth needs --oauth-token-url, --oauth-client-id and --oauth-client-secret"
            " (or $KAFKA_OAUTH_CLIENT_SECRET)"
        )
    settings = {
        "provider": "oidc",
        "token_url": args.oauth_token_url,
        "client_id": args.oauth_client_id,
        "client_secret": secret,
    }
    if args.oauth_scope:
        settings["scope"] = args.oauth_scope
    if args.oauth_extension:
        extensions: dict[str, str] = {}
        for item in args.oauth_extension:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--oauth-extension wants KEY=VALUE, not {item!r}")
            extensions[key] = value
        settings["extensions"] = extensions
    return settings


# --- output ------------------------------------------------------------------


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def _json_value(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return _text(data)


def format_record(record: ConsumerRecord, *, as_json: bool = False) -> str:
    """One record as ``tail`` prints it.

    Plain: ``[partition:offset] key: value`` (no ``key:`` for a record without key).
    JSON: an indented object with topic, partition, offset, timestamp, key, headers
    and value; a value that parses as JSON is embedded as JSON, any other as a string.
    Bytes that are not UTF-8 appear as backslash escapes.
    """
    if as_json:
        obj = {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": None if record.key is None else _text(record.key),
            "headers": [[k, None if v is None else _text(v)] for k, v in record.headers],
            "value": _json_value(record.value),
        }
        return json.dumps(obj, indent=2, ensure_ascii=False)
    prefix = f"[{record.partition}:{record.offset}]"
    if record.key is not None:
        prefix = f"{prefix} {_text(record.key)}:"
    value = "(null)" if record.value is None else _text(record.value)
    return f"{prefix} {value}"


# --- commands ----------------------------------------------------------------


async def _tail(
    args: argparse.Namespace, bootstrap: str, options: dict[str, Any], out: TextIO
) -> int:
    from kafka_asgi.consumer import BasicConsumer

    start: int
    if args.offset is not None:
        start = args.offset
    else:
        start = EARLIEST if args.from_beginning else LATEST
    isolation = "read_committed" if args.read_committed else "read_uncommitted"
    async with BasicConsumer(bootstrap, isolation_level=isolation, **options) as consumer:
        async for record in consumer.follow(
            args.topic,
            args.partition,
            offset=start,
            stop_at_end=args.exit_at_end,
            max_records=args.max_records,
        ):
            out.write(format_record(record, as_json=args.json))
            out.write("\n")
            out.flush()
    return 0


Line = bytes | None | Exception
"""A line read, None at the end of the input, or why reading it failed."""


def _read_lines(source: TextIO, lines: queue.Queue[Line]) -> None:
    """The lines of ``source`` as the bytes it holds: read from its binary buffer when
    it has one (stdin), so no locale decodes them (or fails to); a text-only source
    (a test's StringIO) is encoded as UTF-8."""
    end: Line = None
    raw = getattr(source, "buffer", None)
    try:
        if raw is not None:
            for chunk in raw:
                lines.put(chunk)
        else:
            for line in source:
                lines.put(line.encode("utf-8", "surrogateescape"))
    except Exception as exc:  # an I/O error: not the end of the input
        end = exc
    finally:
        lines.put(end)


async def _next_line(lines: queue.Queue[Line]) -> Line:
    # The reader is a daemon thread (a blocked read of stdin must not keep the
    # process alive after Ctrl-C); each wait for it is bounded so that no worker
    # thread of anyio is left blocked either.
    while True:
        try:
            return await anyio.to_thread.run_sync(lines.get, True, 0.25)
        except queue.Empty:
            continue


async def _produce(
    args: argparse.Namespace,
    bootstrap: str,
    options: dict[str, Any],
    source: TextIO,
    err: TextIO,
) -> int:
    from kafka_asgi.cluster.client import KafkaClient
    from kafka_asgi.producer import Producer

    # The bytes the command line held: a key that is not UTF-8 reaches us with its
    # bytes as lone surrogates (PEP 383), which os.fsencode turns back.
    key = None if args.key is None else os.fsencode(args.key)
    count = 0
    async with KafkaClient(bootstrap, **options) as client:
        # Fail fast, before reading any input, when Kafka is unreachable or the topic
        # is missing: the producer itself would buffer and retry for delivery_timeout.
        metadata = await client.fetch_metadata(args.topic)
        if args.partition is not None and args.partition not in metadata.partitions:
            raise CommandError(
                f"topic {args.topic} has no partition {args.partition} "
                f"(it has {metadata.partition_count})"
            )
        lines: queue.Queue[Line] = queue.Queue(_STDIN_QUEUE_SIZE)
        threading.Thread(
            target=_read_lines, args=(source, lines), name="kafka-asgi stdin", daemon=True
        ).start()
        unread: Exception | None = None
        async with Producer(client=client) as producer:
            while (line := await _next_line(lines)) is not None:
                if isinstance(line, Exception):
                    unread = line
                    break
                # Without its line end (\n, or \r\n as text mode would read it).
                value = line[:-2] if line.endswith(b"\r\n") else line.removesuffix(b"\n")
                await producer.send_buffered(
                    args.topic,
                    value,
                    key=key,
                    partition=args.partition,
                )
                count += 1
            await producer.flush()
            stats = producer.stats()
    if stats.failed:
        raise CommandError(
            f"{stats.failed} of {count} records were not delivered to {args.topic}: "
            f"{stats.last_error}"
        )
    if unread is not None:
        # What was read before went out (flushed above); the rest of the input did not.
        raise CommandError(
            f"reading the input failed after {count} records (sent to {args.topic}): {unread}"
        )
    err.write(f"produced {count} record{'s' if count != 1 else ''} to {args.topic}\n")
    return 0


async def _topics(bootstrap: str, options: dict[str, Any], out: TextIO) -> int:
    from kafka_asgi.cluster.client import KafkaClient

    async with KafkaClient(bootstrap, **options) as client:
        cluster = await client.refresh()
    brokers = cluster.brokers
    for name in sorted(cluster.topics):
        topic = cluster.topics[name]
        out.write(f"{name}\tpartitions={topic.partition_count}\n")
        for index in sorted(topic.partitions):
            p = topic.partitions[index]
            broker = brokers.get(p.leader)
            where = f" ({broker.host}:{broker.port})" if broker is not None else ""
            replicas = ",".join(str(r) for r in p.replicas)
            isr = ",".join(str(r) for r in p.isr)
            out.write(
                f"  partition {p.partition}\tleader={p.leader}{where}\t"
                f"replicas={replicas}\tisr={isr}\n"
            )
    return 0


async def _create_topic(
    args: argparse.Namespace, bootstrap: str, options: dict[str, Any], out: TextIO
) -> int:
    from kafka_asgi.cluster.client import KafkaClient

    configs = dict(args.config) or None
    async with KafkaClient(bootstrap, **options) as client:
        await client.create_topics(
            [(args.name, args.partitions)],
            replication_factor=args.replication_factor,
            configs=configs,
        )
    plural = "s" if args.partitions != 1 else ""
    out.write(f"created topic {args.name} with {args.partitions} partition{plural}\n")
    return 0


# --- running -----------------------------------------------------------------


def _first_leaf(exc: BaseException) -> BaseException:
    """The exception to report out of possibly nested exception groups (task groups).

    Duck-typed: BaseExceptionGroup is a builtin only from Python 3.11."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not isinstance(inner, tuple) or not inner:
            return exc
        interrupts = [e for e in inner if isinstance(e, KeyboardInterrupt)]
        exc = interrupts[0] if interrupts else inner[0]


# A message that starts with the broker's address ("127.0.0.1:9092: SASL ...").
_NAMES_ITS_BROKER = re.compile(r"^\S+:\d+: ")
# The broker's own "Authentication failed..." after ours.
_SAID_TWICE = re.compile(r"authentication failed: authentication failed(:\s*|\s+)", re.I)


def _describe(exc: BaseException, command: str, bootstrap: str) -> str:
    from kafka_asgi.network.errors import AuthenticationError, NetworkError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, AuthenticationError):
        # The network layer's message names the broker and the mechanism already: say
        # each once ("authentication failed" too, which brokers also write).
        text = _SAID_TWICE.sub("authentication failed: ", text)
        if _NAMES_ITS_BROKER.match(text):
            return text
        return f"authentication with {bootstrap} failed: {text}"
    if isinstance(exc, NetworkError):
        return f"cannot reach Kafka at {bootstrap}: {text}"
    return f"{command}: {text}"


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); return the exit status."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    source = sys.stdin if stdin is None else stdin
    args = build_parser().parse_args(argv)
    try:
        bootstrap, options = client_options(args)
        # Checked as the command's client will check them, before it runs: a bad value
        # (a missing --ssl-cafile, a bootstrap without a port) is one line, not a
        # traceback.
        from kafka_asgi.cluster.options import ClientOptions, parse_bootstrap

        parse_bootstrap(bootstrap)
        ClientOptions.from_options(**options)
    except (CommandError, ValueError, TypeError) as exc:
        # Options argparse accepts but that do not go together (a SASL mechanism
        # without its password): a failure like any other, exit 1 as documented.
        err.write(f"{PROG}: {exc}\n")
        return EXIT_FAILURE

    run: Callable[[], Coroutine[Any, Any, int]]
    if args.command == "tail":
        run = lambda: _tail(args, bootstrap, options, out)  # noqa: E731
    elif args.command == "produce":
        run = lambda: _produce(args, bootstrap, options, source, err)  # noqa: E731
    elif args.command == "topics":
        run = lambda: _topics(bootstrap, options, out)  # noqa: E731
    else:
        run = lambda: _create_topic(args, bootstrap, options, out)  # noqa: E731

    try:
        return anyio.run(run, backend=args.backend)
    except BaseException as exc:
        failure = _first_leaf(exc)
        if isinstance(failure, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(failure, BrokenPipeError):
            # Whoever read our output went away (`kafka-asgi tail t | head`): stop
            # quietly, and keep the interpreter's last flush off the closed pipe.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return EXIT_FAILURE
        if isinstance(failure, CommandError):
            err.write(f"{PROG}: {failure}\n")
            return EXIT_FAILURE
        if isinstance(failure, KafkaError):
            err.write(f"{PROG}: {_describe(failure, args.command, bootstrap)}\n")
            return EXIT_FAILURE
        raise


if __name__ == "__main__":
    sys.exit(main())
