"""What the integrations need from a producer, as a structural type.

Every integration works with anything shaped like :class:`kafka_asgi.producer.Producer`
(the real one, or :class:`kafka_asgi.integrations.testing.InMemoryProducer` in an app's
tests), so they are typed against this Protocol rather than the concrete class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeAlias, runtime_checkable

Headers: TypeAlias = (
    "Mapping[str, bytes | str | None] | Sequence[tuple[str, bytes | str | None]] | None"
)


@runtime_checkable
class ProducerLike(Protocol):
    def send_nowait(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Any: ...

    async def send_buffered(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None: ...

    async def flush(self, timeout: float | None = None) -> None: ...

    def stats(self) -> Any: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


def producer_closed(producer: Any) -> bool:
    """Whether ``producer`` is closed, for the metrics integrations to let go of it: a
    Producer's state, an InMemoryProducer's flag (other stand-ins have neither: never
    closed)."""
    return (
        getattr(producer, "_state", None) == "closed" or getattr(producer, "closed", False) is True
    )
