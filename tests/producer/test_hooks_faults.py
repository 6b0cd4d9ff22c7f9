"""Faults at the producer's edges to its observers and options (against the in-memory
FakeClient): removing hooks installed beside a CompositeHooks, header checks with
inject_trace_context=True, and a seconds option too large for a float."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from kafka_asgi.producer import Producer
from kafka_asgi.producer.hooks import CompositeHooks, ProducerHooks
from kafka_asgi.producer.options import ProducerOptions
from tests.support.fake_client import FakeClient
from tests.support.producers import running


class _Counting(ProducerHooks):
    def __init__(self) -> None:
        self.delivered = 0

    def batch_delivered(self, topic: str, partition: int, records: int, size: int) -> None:
        self.delivered += records


def _fake() -> FakeClient:
    fake = FakeClient()
    fake.add_topic("t", 1)
    return fake


async def _deliver_one(producer: Producer) -> None:
    producer.send_nowait("t", b"v")
    with anyio.fail_after(10):
        await producer.flush()


async def test_remove_hooks_takes_out_a_composite_installed_before_another(
    anyio_backend: str,
) -> None:
    # Before: the composite's members were flattened into the installed list, so it
    # was no longer there to remove, and its members kept being called.
    a, b, c = _Counting(), _Counting(), _Counting()
    mine = CompositeHooks([a, b])
    async with running(_fake(), flush_time=0.005) as producer:
        producer.add_hooks(mine)
        producer.add_hooks(c)
        producer.remove_hooks(mine)
        await _deliver_one(producer)
        assert (a.delivered, b.delivered, c.delivered) == (0, 0, 1)
        producer.remove_hooks(c)
        await _deliver_one(producer)
    assert (a.delivered, b.delivered, c.delivered) == (0, 0, 1)


async def test_remove_hooks_leaves_a_users_composite_whole(anyio_backend: str) -> None:
    # Before: removing a hook the producer was not given took it out of the user's
    # composite, which had been flattened into the installed list.
    a, b, c = _Counting(), _Counting(), _Counting()
    mine = CompositeHooks([a, b])
    async with running(_fake(), flush_time=0.005) as producer:
        producer.add_hooks(mine)
        producer.add_hooks(c)
        producer.remove_hooks(a)  # not installed: nothing to do
        await _deliver_one(producer)
        producer.remove_hooks(c)  # the composite alone is left, still whole
        await _deliver_one(producer)
        producer.add_hooks(c)
        await _deliver_one(producer)
    assert (a.delivered, b.delivered, c.delivered) == (3, 3, 2)
    assert mine.hooks == (a, b)


@pytest.fixture
def _span() -> Iterator[None]:
    """A sampled span current, so that there is a trace context to inject."""
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span = NonRecordingSpan(SpanContext(0x1234, 0x5678, False, TraceFlags(1)))
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


_BAD_HEADERS = {
    "three-tuple": [("a", b"1", "x")],
    "str item": ["ab"],
    "int": 5,
    "iterator": lambda: iter([("a", b"1")]),
    "set": {("a", b"1")},
    "bytes name": [(b"a", b"1")],
    "int value": [("a", 1)],
}


async def _refusals(inject: bool) -> dict[str, tuple[type[BaseException], str]]:
    got: dict[str, tuple[type[BaseException], str]] = {}
    fake = _fake()
    async with running(fake, flush_time=0.005, inject_trace_context=inject) as producer:
        for name, headers in _BAD_HEADERS.items():
            for send in ("send_nowait", "send"):
                h: Any = headers() if callable(headers) else headers
                with pytest.raises(Exception) as raised:
                    if send == "send":
                        await producer.send("t", b"v", headers=h)
                    else:
                        producer.send_nowait("t", b"v", headers=h)
                got[f"{send} {name}"] = (type(raised.value), str(raised.value))
        # Good headers still get the trace context.
        await producer.send("t", b"ok", headers=[("h", "1")])
    (stored,) = fake.records("t", 0)
    names = [k for k, _ in stored.headers]
    assert names == (["h", "traceparent"] if inject else ["h"])
    return got


@pytest.mark.usefixtures("_span")
async def test_inject_trace_context_refuses_bad_headers_as_without_it(
    anyio_backend: str,
) -> None:
    # Before: the headers went through the injector before being checked: a 3-tuple
    # raised ValueError (too many values to unpack), an int an unnamed TypeError, and an
    # iterator or a set of pairs was taken.
    without = await _refusals(inject=False)
    assert all(kind is TypeError for kind, _ in without.values()), without
    assert await _refusals(inject=True) == without


@pytest.mark.parametrize("option", ["flush_time", "delivery_timeout", "linger", "spill_fsync"])
@pytest.mark.parametrize(
    "value", [10**400, -(10**400), 10**6000], ids=["1e400", "-1e400", "beyond_str_digits"]
)
def test_a_seconds_option_too_large_for_a_float_is_refused_by_name(option: str, value: int) -> None:
    # Before: OverflowError (int too large to convert to float), naming no option.
    with pytest.raises(ValueError, match=rf"^{option}\b.*seconds.* not (1000|-1000|an int of)"):
        ProducerOptions.from_options({option: value})
    with pytest.raises(ValueError, match=rf"^{option}\b"):
        Producer(client=_fake(), **{option: value})
