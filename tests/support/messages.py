"""Test helpers for the generated messages: hypothesis strategies and fixed examples
built from each class's FIELDS, and converters to kafka-python's independent classes."""

from __future__ import annotations

import importlib
import uuid
import warnings
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from kafka_asgi.protocol.messages import REQUEST_TYPES, RESPONSE_TYPES, FieldSpec, Message, Struct

ALL_MESSAGES: list[type[Message]] = [
    cls for key in sorted(REQUEST_TYPES) for cls in (REQUEST_TYPES[key], RESPONSE_TYPES[key])
]

ALL_VERSIONS: list[tuple[type[Message], int]] = [
    (cls, v) for cls in ALL_MESSAGES for v in range(cls.MIN_VERSION, cls.MAX_VERSION + 1)
]

INT_BOUNDS = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
}


def on_wire(spec: FieldSpec, version: int) -> bool:
    return spec.present(version)


# -- hypothesis strategies --------------------------------------------------------------


def _element(spec: FieldSpec, version: int) -> st.SearchStrategy[Any]:
    kind = spec.kind
    if kind in INT_BOUNDS:
        lo, hi = INT_BOUNDS[kind]
        return st.integers(lo, hi)
    if kind == "bool":
        return st.booleans()
    if kind == "float64":
        return st.floats(allow_nan=False)
    if kind == "string":
        return st.text(max_size=12)
    if kind in ("bytes", "records"):
        return st.binary(max_size=24)
    if kind == "uuid":
        return st.uuids()
    if kind == "struct":
        assert spec.struct is not None
        return struct_strategy(spec.struct, version)
    raise AssertionError(kind)


def struct_strategy(cls: type[Struct], version: int) -> st.SearchStrategy[Any]:
    """Instances of ``cls`` encodable at ``version``: fields absent from that version
    keep their defaults (which is what decoding yields), the others vary freely."""
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for spec in cls.FIELDS:
        if not on_wire(spec, version):
            continue
        elem = _element(spec, version)
        strategy = st.lists(elem, max_size=3) if spec.array else elem
        if spec.nullable_in(version):
            strategy = st.none() | strategy
        kwargs[spec.name] = strategy
    return st.builds(cls, **kwargs)


# -- deterministic examples ----------------------------------------------------------------


def example(cls: type[Struct], version: int, seed: int = 1) -> Any:
    """A fixed instance with every on-the-wire field set to a distinct non-default value."""
    kwargs: dict[str, Any] = {}
    for i, spec in enumerate(cls.FIELDS):
        if not on_wire(spec, version):
            continue
        n = seed * 10 + i + 1
        if spec.array:
            kwargs[spec.name] = [
                _example_value(spec, version, n),
                _example_value(spec, version, n + 5),
            ]
        else:
            kwargs[spec.name] = _example_value(spec, version, n)
    return cls(**kwargs)


def _example_value(spec: FieldSpec, version: int, n: int) -> Any:
    kind = spec.kind
    if kind in INT_BOUNDS:
        lo, hi = INT_BOUNDS[kind]
        return max(lo, min(hi, n if n % 2 else -n if lo < 0 else n))
    if kind == "bool":
        return True
    if kind == "float64":
        return n + 0.5
    if kind == "string":
        return f"{spec.name}-{n}"
    if kind in ("bytes", "records"):
        return bytes(range(n % 7, n % 7 + 5))
    if kind == "uuid":
        return uuid.UUID(int=(n << 64) | n)
    if kind == "struct":
        assert spec.struct is not None
        return example(spec.struct, version, n)
    raise AssertionError(kind)


# -- kafka-python (independent implementation) ------------------------------------------


_KP_MODULES = (
    "kafka.protocol.admin",
    "kafka.protocol.consumer",
    "kafka.protocol.metadata",
    "kafka.protocol.producer",
    "kafka.protocol.sasl",
)
_KP_CACHE: dict[str, ModuleType] = {}


def _kafka_python_module(name: str) -> ModuleType:
    """Import a kafka-python module; its import-time use of deprecated importlib
    resource functions is its own business, not a failure of ours."""
    if name not in _KP_CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            _KP_CACHE[name] = importlib.import_module(name)
    return _KP_CACHE[name]


def kafka_python_class(cls: type[Message]) -> Any:
    """kafka-python's JSON-driven class for the same message."""
    for name in _KP_MODULES:
        module = _kafka_python_module(name)
        found = getattr(module, cls.__name__, None)
        if found is not None:
            return found
    raise LookupError(cls.__name__)


def kafka_python_versions(kp_cls: Any) -> tuple[int, int]:
    lo, _, hi = kp_cls._json["validVersions"].partition("-")
    return int(lo), int(hi or lo)


def _kp_fields(kp_struct: Any, version: int) -> tuple[list[Any], dict[int, Any]]:
    untagged = [
        f for f in kp_struct._fields if f.for_version_q(version) and not f.tagged_field_q(version)
    ]
    tagged = {
        f._tag: f
        for f in kp_struct._fields
        if f.for_version_q(version) and f.tagged_field_q(version)
    }
    return untagged, tagged


def to_kafka_python_kwargs(obj: Struct, kp_struct: Any, version: int) -> dict[str, Any]:
    """Field values of ``obj`` keyed by kafka-python's names, matched by wire position
    (untagged fields in order, tagged fields by tag), so renamed fields still line up."""
    ours = [s for s in type(obj).FIELDS if on_wire(s, version)]
    our_untagged = [s for s in ours if s.tag is None]
    our_tagged = {s.tag: s for s in ours if s.tag is not None}
    kp_untagged, kp_tagged = _kp_fields(kp_struct, version)
    assert len(our_untagged) == len(kp_untagged), (
        type(obj).__name__,
        version,
        [s.name for s in our_untagged],
        [f.name for f in kp_untagged],
    )
    assert set(our_tagged) == set(kp_tagged), (type(obj).__name__, version)
    pairs = list(zip(our_untagged, kp_untagged, strict=True)) + [
        (our_tagged[t], kp_tagged[t]) for t in our_tagged
    ]
    kwargs: dict[str, Any] = {}
    for spec, kp_field in pairs:
        value = getattr(obj, spec.name)
        if spec.tag is not None and value == getattr(type(obj)(), spec.name):
            continue  # an unset tagged field is not written by either side
        kwargs[kp_field.name] = _to_kp_value(spec, kp_field, value, version)
    return kwargs


def _to_kp_value(spec: FieldSpec, kp_field: Any, value: Any, version: int) -> Any:
    if kp_field.type_str == "bitfield":
        # kafka-python models authorized-operations int32 bitfields as sets of bit numbers.
        return {bit for bit in range(32) if (value & 0xFFFFFFFF) >> bit & 1}
    if value is None or spec.kind != "struct":
        return value
    data_class = kp_field.data_class
    if spec.array:
        inner = kp_field.array_of
        return [data_class(**to_kafka_python_kwargs(v, inner, version)) for v in value]
    return data_class(**to_kafka_python_kwargs(value, kp_field, version))


def kafka_python_encode(obj: Message, version: int) -> bytes:
    kp_cls = kafka_python_class(type(obj))
    kwargs = to_kafka_python_kwargs(obj, kp_cls._struct, version)
    encoded: bytes = kp_cls(version=version, **kwargs).encode(version=version)
    return bytes(encoded)


def kafka_python_old_class(cls: type[Message], version: int) -> Any:
    """kafka-python's hand-written class (kafka.protocol.old) for an old version, if any."""
    module_names = {
        "Produce": "produce",
        "Fetch": "fetch",
        "ListOffsets": "list_offsets",
        "CreateTopics": "admin",
        "DeleteTopics": "admin",
        "Metadata": "metadata",
        "ApiVersions": "api_versions",
        "FindCoordinator": "find_coordinator",
        "InitProducerId": "init_producer_id",
        "SaslHandshake": "sasl_handshake",
        "SaslAuthenticate": "sasl_authenticate",
    }
    module = _kafka_python_module(f"kafka.protocol.old.{module_names[cls.API_NAME]}")
    return getattr(module, f"{cls.__name__}_v{version}", None)


def _to_old_values(obj: Struct, schema: Any, version: int) -> tuple[Any, ...]:
    types = _kafka_python_module("kafka.protocol.old.types")
    Array, Schema = types.Array, types.Schema

    ours = [s for s in type(obj).FIELDS if on_wire(s, version) and s.tag is None]
    assert len(ours) == len(schema.fields), (type(obj).__name__, version, schema.names)
    values = []
    for spec, field in zip(ours, schema.fields, strict=True):
        value = getattr(obj, spec.name)
        if isinstance(field, Array) and isinstance(field.array_of, Schema) and value is not None:
            value = [_to_old_values(item, field.array_of, version) for item in value]
        elif isinstance(field, Schema):
            value = _to_old_values(value, field, version)
        values.append(value)
    return tuple(values)


def kafka_python_old_encode(obj: Message, version: int) -> bytes:
    old_cls = kafka_python_old_class(type(obj), version)
    encoded: bytes = old_cls(*_to_old_values(obj, old_cls.SCHEMA, version)).encode()
    return bytes(encoded)
