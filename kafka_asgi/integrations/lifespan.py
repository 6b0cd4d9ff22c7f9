"""The producer's lifespan: one producer per cluster name per worker process.

* :class:`LifespanOptions` - the lifespan's options and defaults, validated once, used
  by every front door (ASGI, Starlette/FastAPI, Django, WSGI, the background thread).
* :func:`producer_lifespan` - the async context manager every lifespan helper is built
  on: creates the producer for a cluster name *in the worker process* (servers fork
  before they run the lifespan, so nothing crosses a fork), registers it, and on exit
  flushes within a deadline and reports what could not be sent.
* :class:`KafkaLifespan` - a pure ASGI wrapper running that lifespan around any app,
  composed with the app's own lifespan (or none: Django's handler has none).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import anyio

from kafka_asgi.integrations.overrides import override_for
from kafka_asgi.integrations.producer_api import ProducerLike
from kafka_asgi.integrations.sender import ThreadSafeSender, register_sender, unregister_sender
from kafka_asgi.network.config import SECRET_OPTIONS
from kafka_asgi.producer import Producer, register_producer, unregister_producer
from kafka_asgi.protocol.errors import KafkaError

__all__ = [
    "PRODUCERS_STATE_KEY",
    "PRODUCER_STATE_KEY",
    "ASGIApp",
    "KafkaLifespan",
    "KafkaUnreachableError",
    "LifespanOptions",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "TopicCreationError",
    "producer_lifespan",
    "put_state",
    "run_producer",
]

logger = logging.getLogger("kafka_asgi.integrations")

Scope: TypeAlias = "MutableMapping[str, Any]"
Message: TypeAlias = "MutableMapping[str, Any]"
Receive: TypeAlias = "Callable[[], Awaitable[Message]]"
Send: TypeAlias = "Callable[[Message], Awaitable[None]]"
ASGIApp: TypeAlias = "Callable[[Scope, Receive, Send], Awaitable[None]]"

_ABSENT = object()

PRODUCER_STATE_KEY = "kafka_producer"  # lifespan state: the "default" cluster's producer
PRODUCERS_STATE_KEY = "kafka_producers"  # lifespan state: {cluster: producer}


class KafkaUnreachableError(KafkaError):
    """Kafka did not answer at startup and ``on_unreachable="fail"`` was chosen."""

    retriable = True


class TopicCreationError(KafkaError):
    """Kafka refused to create a topic of ``create_topics`` at startup (no permission,
    a controller timeout: the cause is chained) and ``on_unreachable="fail"`` was
    chosen. A topic that already exists is not an error."""


@dataclass(frozen=True, slots=True)
class LifespanOptions:
    """The options of :func:`producer_lifespan`, with their defaults, validated.

    ``cluster``: the name the producer is registered under. ``bootstrap`` and
    ``producer_options`` make a ``Producer`` unless ``producer_factory`` makes the
    producer. ``on_unreachable``: "buffer" (start anyway, buffering) or "fail" when
    Kafka does not answer within ``startup_timeout`` seconds. ``shutdown_timeout``
    bounds the whole shutdown: the final flush, then the producer's close.
    ``create_topics``: names, or ``(name, partitions)``, to create at startup (a
    refusal other than "already exists" is a warning under "buffer", fails startup
    under "fail"). ``thread_queue_size`` bounds the hand-off queue for events sent
    from other threads.
    """

    cluster: str = "default"
    bootstrap: str | Sequence[Any] | None = None
    producer_options: Mapping[str, Any] | None = None
    producer_factory: Callable[[], ProducerLike] | None = None
    on_unreachable: Literal["buffer", "fail"] = "buffer"
    startup_timeout: float = 5.0
    shutdown_timeout: float = 10.0
    create_topics: Sequence[str | tuple[str, int]] = field(default=())
    thread_queue_size: int = 10_000

    def __post_init__(self) -> None:
        cluster = self.cluster
        if not isinstance(cluster, str) or not cluster:
            raise ValueError(f"cluster must be a non-empty str, not {cluster!r}")
        if self.on_unreachable not in ("buffer", "fail"):
            raise ValueError(
                f"on_unreachable must be 'buffer' or 'fail', not {self.on_unreachable!r}"
            )
        for name in ("startup_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
        create_topics: object = self.create_topics
        if isinstance(create_topics, (str, bytes)):
            raise TypeError(
                f"create_topics must be a sequence of names, not a string: {create_topics!r}"
            )
        if not isinstance(create_topics, (list, tuple)):
            raise TypeError(f"create_topics must be a list or tuple, not {create_topics!r}")
        for t in create_topics:
            ok = isinstance(t, str) and bool(t)
            if isinstance(t, tuple) and len(t) == 2:
                topic, partitions = t
                ok = (
                    isinstance(topic, str)
                    and bool(topic)
                    and isinstance(partitions, int)
                    and partitions >= 1
                )
            if not ok:
                raise ValueError(
                    f"create_topics entries must be 'name' or ('name', partitions >= 1), not {t!r}"
                )
        size = self.thread_queue_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"thread_queue_size must be a positive int, not {size!r}")
        if self.producer_options is not None and not isinstance(self.producer_options, Mapping):
            # Its type only: it may hold a password.
            raise TypeError(
                f"producer_options must be a mapping, not {type(self.producer_options).__name__}"
            )
        if self.producer_factory is not None and not callable(self.producer_factory):
            raise TypeError(f"producer_factory must be callable, not {self.producer_factory!r}")
        if self.producer_factory is None and self.bootstrap is not None:
            # At the app's construction, not when the server starts it.
            _check_producer_options(self.bootstrap, dict(self.producer_options or {}))

    @classmethod
    def from_kwargs(cls, owner: str, options: Mapping[str, Any]) -> LifespanOptions:
        """Build from keyword options, naming ``owner`` and the unknown ones if any."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"{owner} got unknown options: {sorted(unknown)}")
        return cls(**options)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of :func:`producer_lifespan`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def differences(self, other: LifespanOptions) -> list[str]:
        """The names of the options that differ from ``other``'s (for a
        ``producer_options`` key: ``producer_options['key']``), never their values."""
        names: list[str] = []
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine == theirs:
                continue
            keys: list[str] = []
            if f.name == "producer_options":
                a, b = dict(mine or {}), dict(theirs or {})
                keys = sorted(
                    (k for k in a.keys() | b.keys() if a.get(k, _ABSENT) != b.get(k, _ABSENT)),
                    key=str,
                )
            names.extend([f"producer_options[{k!r}]" for k in keys] or [f.name])
        return names

    def __repr__(self) -> str:
        # The client options that carry credentials are masked (a repr ends up in
        # logs and error messages): the network layer's list of them.
        fields = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "producer_options" and value is not None:
                value = {k: "***" if k in SECRET_OPTIONS else v for k, v in value.items()}
            fields.append(f"{f.name}={value!r}")
        return f"LifespanOptions({', '.join(fields)})"


async def _check_reachable(producer: ProducerLike, client: Any, limit: float) -> None:
    """Raise if Kafka does not answer within ``limit`` seconds."""
    with anyio.fail_after(limit):
        if client is not None:
            # Brokers only: the cheapest request that proves a broker answers.
            await client.refresh(topics=[])
            return
        check = getattr(producer, "check_reachable", None)
        if check is not None:
            await check()


async def _create_topics(
    client: Any,
    topics: Sequence[str | tuple[str, int]],
    limit: float,
    cluster: str,
    on_unreachable: Literal["buffer", "fail"],
) -> None:
    """Create the topics that are missing.

    A refusal other than "already exists" (the app's principal may not create topics,
    the controller timed out) fails startup under ``on_unreachable="fail"``; under
    "buffer" it is a warning and startup goes on, as for a Kafka that does not answer:
    the topics may exist already, and a record sent to one that does not is reported
    (error_handle, on_delivery) as any record that cannot be delivered.
    """
    from kafka_asgi.protocol.errors import TopicAlreadyExistsError

    refused: dict[str, list[str]] = {}  # reason -> topics, in the order given
    # One deadline for them all: a controller timing out on each must not hold the
    # startup ``limit`` seconds per topic.
    deadline = anyio.current_time() + limit
    for topic in topics:
        spec = (topic, 1) if isinstance(topic, str) else topic
        try:
            left = deadline - anyio.current_time()
            if left <= 0:
                raise KafkaError(f"the {limit}s for create_topics at startup ran out first")
            await client.create_topics([spec], timeout=left)
        except TopicAlreadyExistsError:
            # Expected: every worker of the server tries, and the topic may predate us.
            continue
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            if on_unreachable == "fail":
                raise TopicCreationError(
                    f"create_topics at startup for cluster {cluster!r}: topic {spec[0]!r}"
                    f" ({spec[1]} partition(s)) not created: {reason} (on_unreachable='fail')"
                ) from exc
            refused.setdefault(reason, []).append(spec[0])
            continue
        logger.info("kafka_asgi: created topic %r (%d partition(s))", spec[0], spec[1])
    for reason, names in refused.items():
        logger.warning(
            "kafka_asgi: create_topics at startup for cluster %r: topic(s) %s not created"
            " (%s); starting anyway (on_unreachable='buffer'): records sent to a topic that"
            " does not exist are reported as undelivered",
            cluster,
            ", ".join(repr(name) for name in names),
            reason,
        )


@asynccontextmanager
async def producer_lifespan(
    *,
    cluster: str = "default",
    bootstrap: str | Sequence[Any] | None = None,
    producer_options: Mapping[str, Any] | None = None,
    producer_factory: Callable[[], ProducerLike] | None = None,
    on_unreachable: Literal["buffer", "fail"] = "buffer",
    startup_timeout: float = 5.0,
    shutdown_timeout: float = 10.0,
    create_topics: Sequence[str | tuple[str, int]] = (),
    thread_queue_size: int = 10_000,
) -> AsyncIterator[ProducerLike]:
    """Run one producer for ``cluster`` in this process, for the duration of the block.

    The producer comes from ``producer_factory()`` if given, else
    ``Producer(bootstrap, **producer_options)``; inside :func:`capture_events` it is the
    capturing in-memory producer. It is registered under ``cluster`` (so
    ``kafka_asgi.get_producer(cluster)`` finds it) together with a thread-safe sender
    for code on other threads.

    Kafka unreachable at startup (no answer within ``startup_timeout``):
    ``on_unreachable="buffer"`` (default) logs one warning and starts anyway, the
    producer buffering until Kafka is back; ``"fail"`` raises KafkaUnreachableError.
    ``create_topics`` names topics (or ``(name, partitions)``) to create at startup
    when missing; Kafka's ``auto.create.topics.enable`` is usually off. Kafka refusing
    one (no permission to create topics, a controller timeout) is a warning naming the
    topic and the error under "buffer" (startup goes on; a record sent to a topic that
    does not exist is reported as undelivered), TopicCreationError under "fail".

    On exit: events queued from other threads are handed over, then
    ``flush(timeout=shutdown_timeout)``, during which other threads may still send
    (their events are handed over as they come, and delivered by the producer's
    close); then the thread-safe sender is closed, what is still unsent is logged as
    a warning, and the producer is closed within what is left of ``shutdown_timeout``
    (a Producer's ``close_timeout`` cut to it), reporting what it could not deliver.
    """
    options = LifespanOptions(
        cluster=cluster,
        bootstrap=bootstrap,
        producer_options=producer_options,
        producer_factory=producer_factory,
        on_unreachable=on_unreachable,
        startup_timeout=startup_timeout,
        shutdown_timeout=shutdown_timeout,
        create_topics=create_topics,
        thread_queue_size=thread_queue_size,
    )
    async with run_producer(options, override_for(cluster)) as producer:
        yield producer


@asynccontextmanager
async def run_producer(
    options: LifespanOptions, override: ProducerLike | None
) -> AsyncIterator[ProducerLike]:
    """:func:`producer_lifespan` with ``override`` as the capture's producer (None:
    none), as the caller saw it: a background producer's thread starts after the
    request that asked for it, maybe once that request's capture has ended."""
    cluster = options.cluster
    bootstrap = options.bootstrap
    producer_options = options.producer_options
    producer_factory = options.producer_factory
    on_unreachable = options.on_unreachable
    startup_timeout = options.startup_timeout
    shutdown_timeout = options.shutdown_timeout
    create_topics = options.create_topics
    thread_queue_size = options.thread_queue_size
    client: Any = None
    if override is not None:
        producer: ProducerLike = override
    elif producer_factory is not None:
        producer = producer_factory()
    else:
        if bootstrap is None:
            raise ValueError(
                "producer_lifespan needs bootstrap= (e.g. '127.0.0.1:9092') or producer_factory="
            )
        client, producer = _make_producer(bootstrap, dict(producer_options or {}))
    owned = override is None
    sender = ThreadSafeSender(producer, max_queue=thread_queue_size)

    async with AsyncExitStack() as stack:
        if client is not None:
            # Ours, so the lifespan can ask it whether Kafka answers and create topics;
            # closed after the producer (exit stack: last in, first out).
            await client.start()
            stack.push_async_callback(_close_client, client)
        if owned:
            await producer.__aenter__()
        # Unregisters the producer and closes the sender after the final flush: see there.
        stack.push_async_callback(_shutdown, producer, cluster, shutdown_timeout, owned, sender)
        if owned:
            register_producer(cluster, producer)
        sender.bind()
        register_sender(cluster, sender)

        try:
            await _check_reachable(producer, client, startup_timeout)
        except Exception as exc:
            where = bootstrap if bootstrap is not None else type(producer).__name__
            reason = str(exc) or type(exc).__name__
            if on_unreachable == "fail":
                raise KafkaUnreachableError(
                    f"Kafka at {where} unreachable at startup within {startup_timeout}s: "
                    f"{reason} (on_unreachable='fail')"
                ) from exc
            logger.warning(
                "kafka_asgi: Kafka at %s unreachable at startup (%s); starting anyway and "
                "buffering events for cluster %r until it is back (on_unreachable='buffer')",
                where,
                reason,
                cluster,
            )
        else:
            if client is not None and create_topics:
                await _create_topics(
                    client, create_topics, max(startup_timeout, 10.0), cluster, on_unreachable
                )
        yield producer


async def _close_client(client: Any) -> None:
    # Bounded by the client itself (its tasks live in a host task: any scope is fine).
    await client.aclose()


def _stop_taking(
    producer: ProducerLike, cluster: str, owned: bool, sender: ThreadSafeSender
) -> None:
    # The producer is unregistered first, with no await between: a thread that no
    # longer finds the sender does not find the producer either (its event is dropped
    # and counted, as for a closed sender), never calls it directly.
    if owned:
        unregister_producer(cluster, producer)
    unregister_sender(cluster, sender)
    sender.close()


async def _close(producer: ProducerLike, deadline: float) -> None:
    """The producer's own close, within what is left before ``deadline``: a Producer's
    close would otherwise take up to its close_timeout on top of the flush (10 s for
    one from producer_factory), past a server's graceful timeout set above
    shutdown_timeout, which kills the worker with the records unreported. What the
    close cannot deliver in that time it reports (error_handle, on_delivery, the log),
    as every close does. Shielded and bounded by the Producer itself; another
    ProducerLike (a stand-in from producer_factory) bounds its own close."""
    if isinstance(producer, Producer):
        left = max(0.0, deadline - anyio.current_time())
        await producer.aclose(timeout=min(left, producer.options.close_timeout))
    else:
        await producer.__aexit__(None, None, None)


async def _shutdown(
    producer: ProducerLike, cluster: str, limit: float, owned: bool, sender: ThreadSafeSender
) -> None:
    # Shielded: a server cancelling the lifespan must not lose the final flush. The
    # whole shutdown, the flush and then the producer's close, is bounded by ``limit``.
    deadline = anyio.current_time() + limit
    try:
        with anyio.CancelScope(shield=True):
            # The sender stays registered through the flush: threads still logging
            # (sync endpoints finishing their requests) hand their events over on the
            # loop, for the producer's close to deliver. Closed before the flush, it
            # left them to find the producer itself and call it from their own thread.
            sender.drain()
            try:
                await producer.flush(timeout=limit)
            except Exception as exc:
                logger.warning("kafka_asgi: final flush for cluster %r failed: %s", cluster, exc)
    except BaseException:
        # A cancellation no shield holds (asyncio's Task.cancel(), from a server that
        # gave up waiting for the lifespan) ended the flush: the producer is still
        # closed, which reports what it holds, rather than left open with them.
        _stop_taking(producer, cluster, owned, sender)
        if owned:
            with anyio.CancelScope(shield=True):
                await _close(producer, deadline)
        raise
    _stop_taking(producer, cluster, owned, sender)
    stats = producer.stats()
    left = getattr(stats, "buffered", 0) + getattr(stats, "in_flight", 0)
    if left:
        logger.warning(
            "kafka_asgi: %d event(s) for cluster %r still unsent after the %.1fs "
            "shutdown deadline (delivered %d, failed %d, last error: %s)",
            left,
            cluster,
            limit,
            getattr(stats, "delivered", 0),
            getattr(stats, "failed", 0),
            getattr(stats, "last_error", None),
        )
    if not owned:
        return
    # Shielded by the producer itself (its tasks live in a host task of their own, so
    # no scope of ours is needed).
    await _close(producer, deadline)
    if not left:
        logger.info(
            "kafka_asgi: producer for cluster %r flushed and closed (pid %d, %d delivered)",
            cluster,
            os.getpid(),
            getattr(stats, "delivered", 0),
        )


# After the lifespan's own flush, what the producer's close may still spend delivering
# (within what is left of shutdown_timeout) before it reports the rest as undelivered.
_CLOSE_TIMEOUT = 2.0


def _check_producer_options(bootstrap: object, options: dict[str, Any]) -> None:
    """The bootstrap addresses, the client's options (SASL, TLS, timeouts) and the
    producer's own, checked as the client and the producer will be when they are made;
    TLS files are read then, not here (a build step importing the app may lack them)."""
    from kafka_asgi.cluster.options import check_client_options, parse_bootstrap
    from kafka_asgi.producer.options import ProducerOptions, split_producer_options

    parse_bootstrap(bootstrap)
    if "client" in options or "cluster_name" in options:
        bad = "client" if "client" in options else "cluster_name"
        raise TypeError(
            f"producer_options may not set {bad!r}: the lifespan makes the client and "
            "registers the producer under its cluster name"
        )
    client_options, producer_options = split_producer_options(options)
    ProducerOptions.from_options(producer_options)
    check_client_options(client_options)


def _make_producer(bootstrap: str | Sequence[Any], options: dict[str, Any]) -> tuple[Any, Any]:
    """A KafkaClient from the client options, and a Producer using it for the rest."""
    from kafka_asgi.cluster.client import KafkaClient
    from kafka_asgi.cluster.options import split_client_options
    from kafka_asgi.producer import Producer

    _check_producer_options(bootstrap, options)
    client_options, producer_only = split_client_options(options)
    producer_only.setdefault("close_timeout", _CLOSE_TIMEOUT)
    client = KafkaClient(bootstrap, **client_options)
    return client, Producer(client=client, **producer_only)


def put_state(state: dict[str, Any], cluster: str, producer: ProducerLike) -> None:
    """Put ``producer`` in a lifespan state dict, where the middleware looks first."""
    state.setdefault(PRODUCERS_STATE_KEY, {})[cluster] = producer
    if cluster == "default":
        state[PRODUCER_STATE_KEY] = producer


class KafkaLifespan:
    """Pure ASGI wrapper that runs :func:`producer_lifespan` in the server's lifespan.

    Works around any ASGI app; the app's own lifespan (if it has one) runs inside
    ours, so its startup code can already send events and its shutdown code still
    can. An app that does not speak lifespan (it raises, or returns, without
    answering the startup message) is simply run without one. Keyword options are
    those of :func:`producer_lifespan`. The producer is put in the lifespan state:
    ``state["kafka_producers"][cluster]`` (and ``state["kafka_producer"]`` for the
    "default" cluster).
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        # Validate now, at the call that received the bad value, not at server startup.
        self.lifespan_options = LifespanOptions.from_kwargs("KafkaLifespan", options)
        self.options = options
        self.cluster: str = self.lifespan_options.cluster

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - server bug
            raise RuntimeError(f"expected lifespan.startup, got {message['type']!r}")
        reply: Message | None = None
        async with AsyncExitStack() as stack:
            try:
                producer = await stack.enter_async_context(producer_lifespan(**self.options))
            except Exception as exc:
                logger.error("kafka_asgi: lifespan startup failed: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": f"kafka_asgi: {exc}"})
                return
            state = scope.get("state")
            if state is not None:
                put_state(state, self.cluster, producer)
            reply = await self._run_app_lifespan(scope, receive, send)
        # Only now, with the producer flushed and closed, may the server hear that
        # shutdown is complete and let the worker exit.
        if reply is not None:
            await send(reply)

    async def _run_app_lifespan(self, scope: Scope, receive: Receive, send: Send) -> Message | None:
        """Run the app's lifespan inside ours; return the shutdown reply still to send."""
        to_app_w, to_app_r = anyio.create_memory_object_stream[Message](1)
        from_app_w, from_app_r = anyio.create_memory_object_stream[Message](1)
        app_received = False
        app_error: BaseException | None = None

        async def app_receive() -> Message:
            nonlocal app_received
            app_received = True
            try:
                return await to_app_r.receive()
            except anyio.EndOfStream:
                # Nothing more will come: the server's lifespan is over.
                return {"type": "lifespan.shutdown"}

        async def app_send(msg: Message) -> None:
            await from_app_w.send(msg)

        async def run_app() -> None:
            nonlocal app_error
            async with from_app_w:
                try:
                    await self.app(scope, app_receive, app_send)
                except Exception as exc:
                    app_error = exc

        async with anyio.create_task_group() as tg, to_app_w, from_app_r, to_app_r:
            tg.start_soon(run_app)
            await to_app_w.send({"type": "lifespan.startup"})
            try:
                reply = await from_app_r.receive()
            except anyio.EndOfStream:
                if app_error is not None and app_received:
                    logger.error("kafka_asgi: the app's lifespan startup raised: %r", app_error)
                    await send({"type": "lifespan.startup.failed", "message": repr(app_error)})
                    return None
                # The app does not speak lifespan (Django's handler raises for the scope
                # type; others just return): run ours alone.
                await send({"type": "lifespan.startup.complete"})
                await receive()
                return {"type": "lifespan.shutdown.complete"}
            await send(reply)
            if reply["type"] != "lifespan.startup.complete":
                return None
            await to_app_w.send(await receive())
            try:
                reply = await from_app_r.receive()
                return reply
            except anyio.EndOfStream:
                pass
        if app_error is not None:
            return {"type": "lifespan.shutdown.failed", "message": repr(app_error)}
        return {"type": "lifespan.shutdown.complete"}
