"""Runtime support shared by the generated message classes (this file is hand-written).

Every generated class carries ``FIELDS``, a tuple of :class:`FieldSpec` describing each
field as the JSON spec does: wire type, the versions it exists in, the versions in which
it may be null, its tag if it is a tagged field (KIP-482) and whether it is ignorable.
The encoders and decoders themselves are generated straight-line code; ``FIELDS`` serves
error messages (which field could not be encoded) and tests (strategies per version).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from kafka_asgi.protocol.errors import EncodeError, ProtocolError
from kafka_asgi.protocol.primitives import Reader

__all__ = ["FieldSpec", "Message", "Struct", "absent_field_error", "null_field_error"]

_M = TypeVar("_M", bound="Message")

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a message or struct, as declared in Kafka's JSON spec."""

    name: str
    """Python attribute name (snake_case of the JSON name)."""
    kind: str
    """Element wire type: int8, int16, uint16, int32, uint32, int64, float64, bool,
    string, bytes, records, uuid or struct."""
    array: bool
    versions: tuple[int, int] | None
    """Inclusive version range in which the field is on the wire; None if never."""
    nullable: tuple[int, int] | None
    """Inclusive version range in which the field may be null."""
    tag: int | None
    """Tag number for a tagged field, else None."""
    ignorable: bool
    """True if a non-default value may be silently dropped in versions without the field."""
    struct: type[Struct] | None = None

    def present(self, version: int) -> bool:
        return self.versions is not None and self.versions[0] <= version <= self.versions[1]

    def nullable_in(self, version: int) -> bool:
        return self.nullable is not None and self.nullable[0] <= version <= self.nullable[1]


class Struct:
    """Base of every generated dataclass (messages and their nested structs)."""

    __slots__ = ()

    FIELDS: ClassVar[tuple[FieldSpec, ...]] = ()

    def _write(self, out: list[bytes], version: int) -> None:
        raise NotImplementedError

    @classmethod
    def _read(cls, r: Reader, version: int) -> Struct:
        raise NotImplementedError


class Message(Struct):
    """Base of the generated ``<Name>Request`` / ``<Name>Response`` classes."""

    __slots__ = ()

    API_KEY: ClassVar[int]
    API_NAME: ClassVar[str]
    MIN_VERSION: ClassVar[int]
    MAX_VERSION: ClassVar[int]
    FLEXIBLE_VERSION: ClassVar[int | None]
    """First flexible version (KIP-482: compact encodings and tagged fields), or None."""

    def encode(self, version: int) -> bytes:
        """The message body at ``version`` (no header, no size prefix)."""
        return b"".join(self.encode_parts(version))

    def encode_parts(self, version: int) -> list[bytes]:
        """The message body at ``version`` as the pieces :meth:`encode` joins: a request
        frame joins them once with its header, so a Produce request's record batches
        (up to megabytes) are not copied twice more on the way to the socket."""
        cls = type(self)
        if not cls.MIN_VERSION <= version <= cls.MAX_VERSION:
            raise EncodeError(
                f"{cls.__name__} has no version {version!r} "
                f"(valid versions {cls.MIN_VERSION}-{cls.MAX_VERSION})"
            )
        out: list[bytes] = []
        try:
            self._write(out, version)
        except EncodeError:
            raise
        except (struct.error, TypeError, AttributeError, ValueError, OverflowError) as exc:
            problem = find_encode_problem(self, version, cls.__name__)
            raise EncodeError(f"{cls.__name__} v{version}: {problem or exc}") from exc
        return out

    @classmethod
    def decode(cls: type[_M], data: bytes | bytearray | memoryview, version: int) -> _M:
        """Parse a whole message body at ``version``; raises ProtocolError on bad bytes."""
        if not cls.MIN_VERSION <= version <= cls.MAX_VERSION:
            raise ProtocolError(
                f"cannot decode {cls.__name__} version {version!r} "
                f"(valid versions {cls.MIN_VERSION}-{cls.MAX_VERSION})"
            )
        r = Reader(data)
        obj = cls._read(r, version)
        if r.remaining:
            raise ProtocolError(
                f"{cls.__name__} v{version}: {r.remaining} unexpected bytes after the message"
            )
        return cast(_M, obj)


def absent_field_error(obj: Struct, name: str, version: int) -> EncodeError:
    """The error for a non-ignorable field set to a non-default value in a version
    that cannot carry it (Kafka's generated Java throws UnsupportedVersionException)."""
    return EncodeError(
        f"{type(obj).__name__}.{name} = {getattr(obj, name)!r} cannot be sent at "
        f"version {version}: the field does not exist in that version"
    )


def null_field_error(obj: Struct, name: str, version: int) -> EncodeError:
    return EncodeError(
        f"{type(obj).__name__}.{name} is None but the field is not nullable in version {version}"
    )


def find_encode_problem(obj: object, version: int, path: str) -> str | None:
    """Walk ``obj`` against its FIELDS and describe the first value that cannot be
    encoded at ``version``; used only after an encoder failed, to name the field."""
    fields: tuple[FieldSpec, ...] = getattr(type(obj), "FIELDS", ())
    defaults: Any = None
    for spec in fields:
        value = getattr(obj, spec.name)
        where = f"{path}.{spec.name}"
        if not spec.present(version):
            if not spec.ignorable:
                if defaults is None:
                    defaults = type(obj)()
                if value != getattr(defaults, spec.name):
                    return f"{where} = {value!r} does not exist in version {version}"
            continue
        if value is None:
            if not spec.nullable_in(version):
                return f"{where} is None but is not nullable in version {version}"
            continue
        if spec.array:
            if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
                return f"{where} must be a list, got {type(value).__name__}"
            for i, element in enumerate(value):
                problem = _element_problem(spec, element, version, f"{where}[{i}]")
                if problem:
                    return problem
        else:
            problem = _element_problem(spec, value, version, where)
            if problem:
                return problem
    return None


def _element_problem(spec: FieldSpec, value: object, version: int, where: str) -> str | None:
    kind = spec.kind
    if kind in _INT_RANGES:
        lo, hi = _INT_RANGES[kind]
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{where} must be an int ({kind}), got {value!r}"
        if not lo <= value <= hi:
            return f"{where} = {value!r} is out of range for {kind}"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else f"{where} must be a bool, got {value!r}"
    if kind == "float64":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"{where} must be a float, got {value!r}"
    if kind == "string":
        if not isinstance(value, str):
            return f"{where} must be a str, got {value!r}"
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return f"{where} is not encodable as UTF-8"
        return None if size <= 0x7FFF else f"{where} is {size} bytes, over 32767"
    if kind in ("bytes", "records"):
        ok = isinstance(value, (bytes, bytearray, memoryview))
        return None if ok else f"{where} must be bytes, got {type(value).__name__}"
    if kind == "uuid":
        ok = isinstance(value, uuid.UUID)
        return None if ok else f"{where} must be a uuid.UUID, got {value!r}"
    if kind == "struct":
        assert spec.struct is not None
        if not isinstance(value, spec.struct):
            return f"{where} must be a {spec.struct.__name__}, got {type(value).__name__}"
        return find_encode_problem(value, version, where)
    return f"{where}: unknown kind {kind}"  # pragma: no cover - generator emits known kinds
