"""A scripted TCP peer for the few connection behaviours a real broker never shows.

A real Kafka broker never answers with the wrong correlation id, never sends a 2 GiB
frame and always knows our ApiVersions version; these tests need a peer that does.
Everything else in tests/network runs against the real broker.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from kafka_asgi.protocol.framing import response_header_version
from kafka_asgi.protocol.messages import (
    REQUEST_TYPES,
    ApiVersionsResponse,
    Message,
    MetadataResponse,
)
from kafka_asgi.protocol.messages.api_versions import ApiVersion
from kafka_asgi.protocol.messages.metadata import (
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)


class Peer:
    """One accepted connection, with helpers to read requests and write responses."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.rx = BufferedByteReceiveStream(stream)

    async def read_request(self) -> tuple[int, int, int]:
        """``(api_key, version, correlation_id)`` of the next request frame."""
        api_key, version, correlation_id, _ = await self.read_request_body()
        return api_key, version, correlation_id

    async def read_request_body(self) -> tuple[int, int, int, bytes]:
        """Like read_request, plus the body (for request header v1: no tagged fields)."""
        frame = await self.read_raw()
        api_key, version, correlation_id, client_id_length = struct.unpack_from(">hhih", frame)
        body = frame[10 + max(client_id_length, 0) :]
        return api_key, version, correlation_id, body

    async def read_raw(self) -> bytes:
        """One size-prefixed frame (a request, or a raw SASL token), without the size."""
        size = int.from_bytes(await self.rx.receive_exactly(4), "big")
        return await self.rx.receive_exactly(size)

    async def send_token(self, token: bytes) -> None:
        await self.stream.send(len(token).to_bytes(4, "big") + token)

    async def respond(self, correlation_id: int, body: Message, version: int) -> None:
        header = correlation_id.to_bytes(4, "big", signed=True)
        if response_header_version(body.API_KEY, version) >= 1:
            header += b"\x00"
        payload = header + body.encode(version)
        await self.stream.send(len(payload).to_bytes(4, "big") + payload)

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def answer_api_versions(self) -> None:
        _, version, correlation_id = await self.read_request()
        await self.respond(correlation_id, all_versions(), version)


def all_versions(
    overrides: dict[int, tuple[int, int] | None] | None = None,
) -> ApiVersionsResponse:
    """Every API we know at our full range; ``overrides`` narrows (or with None drops) some."""
    ranges: dict[int, tuple[int, int] | None] = {
        key: (cls.MIN_VERSION, cls.MAX_VERSION) for key, cls in REQUEST_TYPES.items()
    }
    ranges.update(overrides or {})
    return ApiVersionsResponse(
        api_keys=[
            ApiVersion(api_key=key, min_version=r[0], max_version=r[1])
            for key, r in ranges.items()
            if r is not None
        ]
    )


def one_broker_metadata(topic: str, port: int, partitions: int = 1) -> MetadataResponse:
    """Metadata of a one-broker cluster: node 0 at 127.0.0.1:``port``, leader of each of
    ``topic``'s ``partitions``."""
    return MetadataResponse(
        brokers=[MetadataResponseBroker(node_id=0, host="127.0.0.1", port=port)],
        cluster_id="fake",
        controller_id=0,
        topics=[
            MetadataResponseTopic(
                name=topic,
                partitions=[
                    MetadataResponsePartition(
                        partition_index=i, leader_id=0, replica_nodes=[0], isr_nodes=[0]
                    )
                    for i in range(partitions)
                ],
            )
        ],
    )


@asynccontextmanager
async def fake_broker(script: Callable[[Peer], Awaitable[None]]) -> AsyncIterator[int]:
    """Listen on 127.0.0.1; run ``script`` for each connection; yield the port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                await script(Peer(stream))
            except (
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
            ):
                pass

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()
