#!/usr/bin/env python3
"""Generate kafka_asgi/protocol/messages/ from Kafka's JSON message definitions.

Usage: python scripts/gen_messages.py [MESSAGES_DIR] [--out OUT_DIR]

MESSAGES_DIR defaults to spec/kafka-messages in the repository (Kafka's own files, vendored);
OUT_DIR defaults to kafka_asgi/protocol/messages in the repository. The output is
deterministic: tests/protocol/test_messages_generated.py regenerates into a temporary
folder and fails on any difference from the committed files.

The generated code is straight-line Python with version conditions, in the shape of
Kafka's own Java MessageDataGenerator output: one ``_write``/``_read`` pair per struct.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPEC_DIR = REPO / "spec" / "kafka-messages"
DEFAULT_OUT_DIR = REPO / "kafka_asgi" / "protocol" / "messages"

# API name (JSON "name" without Request/Response) -> module name, in api-key order of use.
APIS = (
    "ApiVersions",
    "Metadata",
    "Produce",
    "Fetch",
    "ListOffsets",
    "SaslHandshake",
    "SaslAuthenticate",
    "InitProducerId",
    "CreateTopics",
    "DeleteTopics",
    "FindCoordinator",
    "CreatePartitions",
    "ElectLeaders",
    "DescribeProducers",
)

MAX_VERSION = 0x7FFF  # "N+" ranges are open-ended; int16 bounds every api version.

Range = tuple[int, int]

INT_TYPES = {
    "int8": ("pack_int8", "int8", 1),
    "int16": ("pack_int16", "int16", 2),
    "uint16": ("pack_uint16", "uint16", 2),
    "int32": ("pack_int32", "int32", 4),
    "uint32": ("pack_uint32", "uint32", 4),
    "int64": ("pack_int64", "int64", 8),
}
SCALAR_TYPES = {*INT_TYPES, "float64", "bool", "string", "bytes", "records", "uuid"}
PY_TYPES = {
    **{k: "int" for k in INT_TYPES},
    "float64": "float",
    "bool": "bool",
    "string": "str",
    "bytes": "bytes",
    "records": "bytes",
    "uuid": "uuid.UUID",
}
VARIABLE_TYPES = {"string", "bytes", "records"}
# Fixed-size element arrays are packed/unpacked with one struct call.
BULK_ARRAYS = {"int8", "int16", "int32", "int64"}


class SpecError(Exception):
    pass


# -- parsing -------------------------------------------------------------------------------


def strip_comments(text: str) -> str:
    """Kafka's JSON files carry // comments; drop them outside of strings."""
    out = []
    for line in text.splitlines():
        in_str = False
        i = 0
        cut = len(line)
        while i < len(line):
            ch = line[i]
            if ch == "\\" and in_str:
                i += 2
                continue
            if ch == '"':
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


def parse_versions(text: str | None) -> Range | None:
    if text is None:
        raise SpecError("missing versions")
    text = text.strip()
    if text == "none":
        return None
    if text.endswith("+"):
        return (int(text[:-1]), MAX_VERSION)
    if "-" in text:
        lo, hi = text.split("-")
        return (int(lo), int(hi))
    return (int(text), int(text))


def intersect(a: Range | None, b: Range | None) -> Range | None:
    if a is None or b is None:
        return None
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo <= hi else None


def snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


@dataclass
class FieldDef:
    name: str
    py: str
    type: str
    array: bool
    elem: str  # element type name (scalar kind or struct name)
    versions: Range | None
    nullable: Range | None
    tag: int | None
    tagged: Range | None
    ignorable: bool
    default: Any
    flexible_override: Range | str | None  # "inherit" or a range (None = never flexible)
    struct: StructDef | None = None


@dataclass
class StructDef:
    name: str
    versions: Range  # effective range (intersected with parents)
    fields: list[FieldDef] = field(default_factory=list)


@dataclass
class MessageDef:
    name: str
    api_key: int
    kind: str  # request | response
    valid: Range
    flexible: Range | None
    root: StructDef
    structs: list[StructDef]  # post-order: children before parents, root last


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(strip_comments(path.read_text(encoding="utf-8")))
    return data


def build_message(spec: dict[str, Any]) -> MessageDef:
    valid = parse_versions(spec["validVersions"])
    if valid is None:
        raise SpecError(f"{spec['name']}: no valid versions")
    flexible = intersect(parse_versions(spec.get("flexibleVersions", "none")), valid)
    common = {c["name"]: c for c in spec.get("commonStructs", [])}
    structs: list[StructDef] = []
    seen: dict[str, StructDef] = {}

    def build_struct(name: str, raw_fields: list[dict[str, Any]], rng: Range) -> StructDef:
        sd = StructDef(name=name, versions=rng)
        for raw in raw_fields:
            sd.fields.append(build_field(raw, rng, name))
        if name in seen:
            raise SpecError(f"{spec['name']}: struct {name} defined twice")
        seen[name] = sd
        structs.append(sd)
        return sd

    def build_field(raw: dict[str, Any], parent: Range, owner: str) -> FieldDef:
        fname = raw["name"]
        ftype: str = raw["type"]
        array = ftype.startswith("[]")
        elem = ftype[2:] if array else ftype
        versions = intersect(parse_versions(raw["versions"]), parent)
        nullable = intersect(parse_versions(raw.get("nullableVersions", "none")), versions)
        tag = raw.get("tag")
        tagged = None
        if tag is not None:
            tagged = intersect(parse_versions(raw["taggedVersions"]), versions)
            if tagged != versions:
                raise SpecError(f"{owner}.{fname}: tagged in only some of its versions")
        flex_override: Range | str | None = "inherit"
        if "flexibleVersions" in raw:
            flex_override = parse_versions(raw["flexibleVersions"])
        fd = FieldDef(
            name=fname,
            py=snake(fname),
            type=ftype,
            array=array,
            elem=elem,
            versions=versions,
            nullable=nullable,
            tag=tag,
            tagged=tagged,
            ignorable=bool(raw.get("ignorable", False)),
            default=raw.get("default"),
            flexible_override=flex_override,
        )
        if elem not in SCALAR_TYPES:
            sub_range = versions if versions is not None else parent
            if "fields" in raw:
                fd.struct = build_struct(elem, raw["fields"], sub_range)
            elif elem in common:
                if elem in seen:
                    fd.struct = seen[elem]
                else:
                    fd.struct = build_struct(elem, common[elem]["fields"], valid)
            else:
                raise SpecError(f"{owner}.{fname}: unknown type {ftype}")
            if not array and nullable is not None:
                raise SpecError(f"{owner}.{fname}: nullable structs are not supported")
        elif elem == "records" and array:
            raise SpecError(f"{owner}.{fname}: arrays of records")
        return fd

    root = StructDef(name=spec["name"], versions=valid)
    for raw in spec["fields"]:
        root.fields.append(build_field(raw, valid, spec["name"]))
    structs.append(root)
    return MessageDef(
        name=spec["name"],
        api_key=int(spec["apiKey"]),
        kind=spec["type"],
        valid=valid,
        flexible=flexible,
        root=root,
        structs=structs,
    )


# -- code emission helpers -----------------------------------------------------------------


def cond(rng: Range, parent: Range) -> str | None:
    """Python condition on ``version`` selecting ``rng`` within ``parent`` (None: always)."""
    parts = []
    if rng[0] > parent[0]:
        parts.append(f"version >= {rng[0]}")
    if rng[1] < parent[1]:
        parts.append(f"version <= {rng[1]}")
    if not parts:
        return None
    if len(parts) == 2:
        if rng[0] == rng[1]:
            return f"version == {rng[0]}"
        return f"{rng[0]} <= version <= {rng[1]}"
    return parts[0]


def in_range(v: int, rng: Range | None) -> bool:
    return rng is not None and rng[0] <= v <= rng[1]


class Emitter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, indent: int, text: str = "") -> None:
        self.lines.append(("    " * indent + text) if text else "")


@dataclass
class Variant:
    rng: Range
    flexible: bool
    nullable: bool


def variants(fd: FieldDef, rng: Range, flex: Range | None) -> list[Variant]:
    """Split ``rng`` into sub-ranges with a constant (flexible, nullable) encoding."""
    if fd.flexible_override != "inherit":
        flex = fd.flexible_override  # type: ignore[assignment]
    if not fd.array and (fd.struct is not None or fd.elem not in VARIABLE_TYPES):
        # Fixed-size values and nested structs are written the same way in every version.
        return [Variant(rng, False, False)]
    points = {rng[0]}
    for r in (flex, fd.nullable):
        if r is not None:
            points.update(p for p in (r[0], r[1] + 1) if rng[0] < p <= rng[1])
    starts = sorted(points)
    out: list[Variant] = []
    for i, lo in enumerate(starts):
        hi = starts[i + 1] - 1 if i + 1 < len(starts) else rng[1]
        key = (in_range(lo, flex), in_range(lo, fd.nullable))
        if out and (out[-1].flexible, out[-1].nullable) == key:
            out[-1].rng = (out[-1].rng[0], hi)
        else:
            out.append(Variant((lo, hi), *key))
    return out


def py_type(fd: FieldDef) -> str:
    elem = fd.struct.name if fd.struct is not None else PY_TYPES[fd.elem]
    t = f"list[{elem}]" if fd.array else elem
    if fd.nullable is not None or (fd.elem == "records"):
        t += " | None"
    return t


def default_expr(fd: FieldDef) -> str:
    """Python expression for the field's default (Kafka's generated-Java defaults)."""
    d = fd.default
    if fd.array:
        if d == "null":
            if fd.nullable is None:
                raise SpecError(f"{fd.name}: null default but not nullable")
            return "None"
        if d not in (None, ""):
            raise SpecError(f"{fd.name}: unsupported array default {d!r}")
        return "[]"
    if fd.struct is not None:
        if immutable(fd.struct):
            # Frozen and list-free, so one shared instance serves every default.
            return f"_DEFAULT_{fd.struct.name}"
        return f"{fd.struct.name}()"
    kind = fd.elem
    if kind in INT_TYPES:
        if d is None or d == "":
            return "0"
        value = d if isinstance(d, int) else int(str(d), 0)
        return str(value)
    if kind == "float64":
        return repr(float(d)) if d not in (None, "") else "0.0"
    if kind == "bool":
        if d is None or d == "":
            return "False"
        if isinstance(d, bool):
            return repr(d)
        if str(d).lower() not in ("true", "false"):
            raise SpecError(f"{fd.name}: bad bool default {d!r}")
        return "True" if str(d).lower() == "true" else "False"
    if kind == "string":
        if d == "null":
            if fd.nullable is None:
                raise SpecError(f"{fd.name}: null default but not nullable")
            return "None"
        return q(d if d is not None else "")
    if kind == "bytes":
        if d == "null":
            return "None"
        return 'b""'
    if kind == "records":
        return "None"
    if kind == "uuid":
        if d in (None, ""):
            return "ZERO_UUID"
        raw = base64.urlsafe_b64decode(str(d) + "==")
        return f"uuid.UUID(bytes={raw!r})"
    raise SpecError(f"{fd.name}: no default for {kind}")


def immutable(sd: StructDef) -> bool:
    """True when instances hold no lists (directly or in nested structs)."""
    return all(not f.array and (f.struct is None or immutable(f.struct)) for f in sd.fields)


FIXED_CODES = {
    "int8": "b",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "float64": "d",
}


def fixed_runs(fields: list[FieldDef]) -> list[list[FieldDef]]:
    """Group consecutive fixed-width fields with the same versions, to be packed and
    unpacked by one precompiled struct.Struct call instead of one call per field."""
    runs: list[list[FieldDef]] = []
    for fd in fields:
        groupable = not fd.array and fd.struct is None and fd.elem in FIXED_CODES
        last = runs[-1] if runs else None
        if (
            groupable
            and last is not None
            and last[0].struct is None
            and not last[0].array
            and last[0].elem in FIXED_CODES
            and last[0].versions == fd.versions
        ):
            last.append(fd)
        else:
            runs.append([fd])
    return runs


def struct_const(fields: list[FieldDef], consts: dict[str, str]) -> str:
    fmt = "".join(FIXED_CODES[f.elem] for f in fields)
    name = f"_S_{fmt}"
    consts[name] = f'struct.Struct(">{fmt}")'
    return name


def differs(expr: str, fd: FieldDef) -> str:
    """Condition true when ``expr`` is not the field's default."""
    d = default_expr(fd)
    if d == "None":
        return f"{expr} is not None"
    if d == "True":
        return f"not {expr}"
    if d == "False":
        return expr
    return f"{expr} != {d}"


def q(text: str) -> str:
    """A double-quoted Python string literal."""
    return json.dumps(text)


def dataclass_default(fd: FieldDef) -> str:
    expr = default_expr(fd)
    if expr == "[]":
        return "dataclasses.field(default_factory=list)"
    if fd.struct is not None and not fd.array:
        return f"dataclasses.field(default_factory={fd.struct.name})"
    return expr


# -- per-type code -----------------------------------------------------------------------


def write_scalar(kind: str, flexible: bool, nullable: bool, expr: str, out: str) -> str:
    """One statement appending the encoding of a scalar ``expr`` to list ``out``."""
    if kind in INT_TYPES:
        return f"{out}.append({INT_TYPES[kind][0]}({expr}))"
    if kind == "float64":
        return f"{out}.append(pack_float64({expr}))"
    if kind == "bool":
        return f"{out}.append(pack_bool({expr}))"
    if kind == "uuid":
        return f"{out}.append({expr}.bytes)"
    if kind == "string":
        fn = {
            (False, False): "encode_string",
            (False, True): "encode_nullable_string",
            (True, False): "encode_compact_string",
            (True, True): "encode_compact_nullable_string",
        }[(flexible, nullable)]
        return f"{out}.append({fn}({expr}))"
    if kind in ("bytes", "records"):
        fn = {
            (False, False): "write_bytes",
            (False, True): "write_nullable_bytes",
            (True, False): "write_compact_bytes",
            (True, True): "write_compact_nullable_bytes",
        }[(flexible, nullable)]
        return f"{fn}({out}, {expr})"
    raise SpecError(kind)


def read_scalar(kind: str, flexible: bool, nullable: bool) -> str:
    if kind in INT_TYPES:
        return f"r.{INT_TYPES[kind][1]}()"
    if kind == "float64":
        return "r.float64()"
    if kind == "bool":
        return "r.boolean()"
    if kind == "uuid":
        return "r.uuid()"
    if kind == "string":
        base = "compact_" if flexible else ""
        return f"r.{base}{'nullable_' if nullable else ''}string()"
    if kind in ("bytes", "records"):
        if flexible:
            return f"r.compact_{'nullable_' if nullable else ''}bytes()"
        return f"r.{'nullable_bytes' if nullable else 'bytes_'}()"
    raise SpecError(kind)


def elem_min_size(fd: FieldDef, flexible: bool) -> int:
    if fd.struct is not None:
        return 1
    return {
        "int8": 1,
        "int16": 2,
        "uint16": 2,
        "int32": 4,
        "uint32": 4,
        "int64": 8,
        "float64": 8,
        "bool": 1,
        "uuid": 16,
        "string": 1 if flexible else 2,
        "bytes": 1 if flexible else 4,
    }[fd.elem]


def emit_write_value(e: Emitter, ind: int, fd: FieldDef, var: Variant, expr: str, out: str) -> None:
    """Statements writing ``expr`` (the field's value) for one variant."""
    flexible, nullable = var.flexible, var.nullable
    if not nullable and (fd.nullable is not None or fd.elem == "records"):
        # The attribute is typed Optional (null in other versions): refuse None here.
        e(ind, f"if {expr} is None:")
        e(ind + 1, f"raise null_field_error(self, {q(fd.py)}, version)")
    if not fd.array:
        if fd.struct is not None:
            e(ind, f"{expr}._write({out}, version)")
        else:
            e(ind, write_scalar(fd.elem, flexible, nullable, expr, out))
        return
    if nullable:
        e(ind, f"if {expr} is None:")
        e(ind + 1, f"{out}.append({'ZERO_BYTE' if flexible else 'NULL_INT32'})")
        e(ind, "else:")
        ind += 1
    length = f"encode_uvarint(len({expr}) + 1)" if flexible else f"pack_int32(len({expr}))"
    e(ind, f"{out}.append({length})")
    if fd.struct is not None:
        e(ind, f"for {fd.py}_item in {expr}:")
        e(ind + 1, f"{fd.py}_item._write({out}, version)")
    elif fd.elem in BULK_ARRAYS:
        e(ind, f"{out}.append(pack_{fd.elem}_array({expr}))")
    else:
        e(ind, f"for {fd.py}_item in {expr}:")
        e(ind + 1, write_scalar(fd.elem, flexible, False, f"{fd.py}_item", out))


def read_value_expr(fd: FieldDef, var: Variant) -> tuple[list[str], str]:
    """(setup statements, expression) reading the field for one variant."""
    flexible, nullable = var.flexible, var.nullable
    if not fd.array:
        if fd.struct is not None:
            return [], f"{fd.struct.name}._read(r, version)"
        return [], read_scalar(fd.elem, flexible, nullable)
    size = elem_min_size(fd, flexible)
    prefix = "compact_" if flexible else ""
    if fd.struct is not None:
        if not nullable:
            return [f"n = r.{prefix}array_length({size})"], (
                f"r.items({fd.struct.name}._read, version, n)"
            )
        return [f"n = r.{prefix}nullable_array_length({size})"], (
            f"r.nullable_items({fd.struct.name}._read, version, n)"
        )
    if fd.elem not in BULK_ARRAYS:
        item = read_scalar(fd.elem, flexible, False)
    else:
        item = ""
    if not nullable:
        count = f"r.{prefix}array_length({size})"
        if item:
            return [], f"[{item} for _ in range({count})]"
        return [], f"r.{fd.elem}_array({count})"
    setup = [f"n = r.{prefix}nullable_array_length({size})"]
    if item:
        return setup, f"None if n < 0 else [{item} for _ in range(n)]"
    return setup, f"None if n < 0 else r.{fd.elem}_array(n)"


def emit_variants(e: Emitter, ind: int, variants: list[Variant], rng: Range, body: Any) -> None:
    """if/elif/else over variants (conditions relative to ``rng``)."""
    if len(variants) == 1:
        body(ind, variants[0])
        return
    for i, var in enumerate(variants):
        if i == len(variants) - 1:
            e(ind, "else:")
        else:
            c = cond((rng[0], var.rng[1]), rng)
            e(ind, f"{'if' if i == 0 else 'elif'} {c}:")
        body(ind + 1, var)


# -- struct emission -------------------------------------------------------------------------


def emit_struct(
    e: Emitter,
    sd: StructDef,
    msg: MessageDef,
    is_root: bool,
    consts: dict[str, str],
    shared_defaults: set[str],
) -> None:
    flex = intersect(msg.flexible, sd.versions)
    rng = sd.versions
    base = "Message" if is_root else "Struct"
    e(0, "@dataclass(frozen=True, slots=True)")
    e(0, f"class {sd.name}({base}):")
    if not sd.fields:
        pass
    for fd in sd.fields:
        e(1, f"{fd.py}: {py_type(fd)} = {dataclass_default(fd)}")
    e(0)
    if is_root:
        e(1, f"API_KEY: ClassVar[int] = {msg.api_key}")
        e(1, f"API_NAME: ClassVar[str] = {q(msg.name[: -len(msg.kind)])}")
        e(1, f"MIN_VERSION: ClassVar[int] = {msg.valid[0]}")
        e(1, f"MAX_VERSION: ClassVar[int] = {msg.valid[1]}")
        first_flex = msg.flexible[0] if msg.flexible else None
        e(1, f"FLEXIBLE_VERSION: ClassVar[int | None] = {first_flex}")
    e(1, "FIELDS: ClassVar[tuple[FieldSpec, ...]] = (")
    for fd in sd.fields:
        kind = "struct" if fd.struct is not None else fd.elem
        struct_arg = f", {fd.struct.name}" if fd.struct is not None else ""
        args = (
            f"{q(fd.py)}, {q(kind)}, {fd.array}, {fd.versions}, {fd.nullable}, "
            f"{fd.tag}, {fd.ignorable}{struct_arg}"
        )
        if len(args) + 20 <= 100:
            e(2, f"FieldSpec({args}),")
        else:
            e(2, "FieldSpec(")
            e(3, f"{q(fd.py)}, {q(kind)}, {fd.array}, {fd.versions}, {fd.nullable},")
            e(3, f"{fd.tag}, {fd.ignorable}{struct_arg},")
            e(2, "),")
    e(1, ")")
    e(0)

    regular = [f for f in sd.fields if f.tag is None]
    tagged = sorted((f for f in sd.fields if f.tag is not None), key=lambda f: f.tag or 0)

    # ---- _write
    e(1, "def _write(self, out: list[bytes], version: int) -> None:")
    body_start = len(e.lines)
    for run in fixed_runs(regular):
        fd = run[0]
        if fd.versions is None:
            for fd in run:
                if not fd.ignorable:
                    e(2, f"if {differs('self.' + fd.py, fd)}:")
                    e(3, f"raise absent_field_error(self, {q(fd.py)}, version)")
            continue
        c = cond(fd.versions, rng)
        if len(run) > 1:
            ind = 2
            if c:
                e(2, f"if {c}:")
                ind = 3
            codec = struct_const(run, consts)
            e(ind, f"out.append({codec}.pack(")
            for f in run:
                e(ind + 1, f"self.{f.py},")
            e(ind, "))")
            checks = [f for f in run if not f.ignorable]
            if c and checks:
                e(2, "else:")
                for f in checks:
                    e(3, f"if {differs('self.' + f.py, f)}:")
                    e(4, f"raise absent_field_error(self, {q(f.py)}, version)")
            continue
        ind = 2
        if c:
            e(2, f"if {c}:")
            ind = 3
        vs = variants(fd, fd.versions, flex)

        def wbody(i: int, var: Variant, fd: FieldDef = fd) -> None:
            emit_write_value(e, i, fd, var, f"self.{fd.py}", "out")

        emit_variants(e, ind, vs, fd.versions, wbody)
        if c and not fd.ignorable:
            e(2, f"elif {differs('self.' + fd.py, fd)}:")
            e(3, f"raise absent_field_error(self, {q(fd.py)}, version)")
    for fd in tagged:
        if not fd.ignorable and fd.versions is not None and cond(fd.versions, rng):
            e(2, f"if not ({cond(fd.versions, rng)}) and {differs('self.' + fd.py, fd)}:")
            e(3, f"raise absent_field_error(self, {q(fd.py)}, version)")
    if flex is not None:
        fc = cond(flex, rng)
        ind = 2
        if fc:
            e(2, f"if {fc}:")
            ind = 3
        if not tagged:
            e(ind, 'out.append(b"\\x00")')
        else:
            e(ind, "tagged: list[bytes] = []")
            first_tag = True
            for fd in tagged:
                assert fd.versions is not None and fd.tag is not None
                tc = cond(fd.versions, flex)
                test = differs(f"self.{fd.py}", fd)
                if tc:
                    test = f"{tc} and {test}"
                e(ind, f"if {test}:")
                e(ind + 1, "buf: list[bytes] = []" if first_tag else "buf = []")
                first_tag = False
                var = Variant(fd.versions, True, False)
                vs = variants(fd, fd.versions, (0, MAX_VERSION))

                def tbody(i: int, var: Variant, fd: FieldDef = fd) -> None:
                    emit_write_value(e, i, fd, var, f"self.{fd.py}", "buf")

                emit_variants(e, ind + 1, vs, fd.versions, tbody)
                del var
                e(ind + 1, 'data = b"".join(buf)')
                e(ind + 1, f"tagged += ({tag_bytes(fd.tag)}, encode_uvarint(len(data)), data)")
            e(ind, "out.append(encode_uvarint(len(tagged) // 3))")
            e(ind, "out += tagged")
    if len(e.lines) == body_start:
        e(2, "return")
    e(0)

    # ---- _read
    e(1, "@classmethod")
    e(1, f"def _read(cls, r: Reader, version: int) -> {sd.name}:")
    body_start = len(e.lines)
    for run in fixed_runs(regular):
        fd = run[0]
        if fd.versions is None:
            continue
        c = cond(fd.versions, rng)
        if len(run) > 1:
            codec = struct_const(run, consts)
            names = ", ".join(f.py for f in run)
            ind = 2
            if c:
                for f in run:
                    e(2, f"{f.py}: {py_type(f)} = {default_expr(f)}")
                e(2, f"if {c}:")
                ind = 3
            if 4 * ind + len(names) + len(codec) + 13 <= 100:
                e(ind, f"{names} = r.fixed({codec})")
            else:
                # One name a line, as ruff formats a long unpacking.
                e(ind, "(")
                for f in run:
                    e(ind + 1, f"{f.py},")
                e(ind, f") = r.fixed({codec})")
            continue
        vs = variants(fd, fd.versions, flex)
        ind = 2
        if c:
            e(2, f"{fd.py}: {py_type(fd)} = {default_expr(fd)}")
            e(2, f"if {c}:")
            ind = 3
        elif len(vs) > 1:
            e(2, f"{fd.py}: {py_type(fd)}")

        def rbody(i: int, var: Variant, fd: FieldDef = fd) -> None:
            setup, expr = read_value_expr(fd, var)
            for s in setup:
                e(i, s)
            e(i, f"{fd.py} = {expr}")

        emit_variants(e, ind, vs, fd.versions, rbody)
    if flex is not None:
        for fd in tagged:
            e(2, f"{fd.py}: {py_type(fd)} = {default_expr(fd)}")
        fc = cond(flex, rng)
        ind = 2
        if fc:
            e(2, f"if {fc}:")
            ind = 3
        if not tagged:
            e(ind, "r.skip_tagged_fields()")
        else:
            e(ind, "for _ in range(r.tag_count()):")
            e(ind + 1, "tag, size = r.tag_header()")
            first = True
            for fd in tagged:
                assert fd.versions is not None
                tc = cond(fd.versions, flex)
                test = f"tag == {fd.tag}"
                if tc:
                    test += f" and {tc}"
                e(ind + 1, f"{'if' if first else 'elif'} {test}:")
                first = False
                e(ind + 2, "end = r.pos + size")
                vs = variants(fd, fd.versions, (0, MAX_VERSION))

                def tread(i: int, var: Variant, fd: FieldDef = fd) -> None:
                    setup, expr = read_value_expr(fd, var)
                    for s in setup:
                        e(i, s)
                    e(i, f"{fd.py} = {expr}")

                emit_variants(e, ind + 2, vs, fd.versions, tread)
                e(ind + 2, f"r.expect_end(end, {q(sd.name + '.' + fd.py)})")
            e(ind + 1, "else:")
            e(ind + 2, "r.pos += size")
    args = []
    for fd in sd.fields:
        present = fd.versions is not None and (fd.tag is None or flex is not None)
        args.append(fd.py if present else default_expr(fd))
    if not args:
        e(2, "return cls()")
    elif len(", ".join(args)) < 60:
        e(2, f"return cls({', '.join(args)})")
    else:
        e(2, "return cls(")
        for a in args:
            e(3, f"{a},")
        e(2, ")")
    del body_start
    e(0)
    if not is_root and immutable(sd) and sd.name in shared_defaults:
        e(0)
        e(0, f"_DEFAULT_{sd.name} = {sd.name}()")


def isort_key(name: str) -> tuple[int, list[Any]]:
    """isort's order-by-type (CONSTANTS, Classes, functions), numbers in natural order."""
    natural = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    if name.isupper():
        return (0, natural)
    if name[0].isupper():
        return (1, natural)
    return (2, natural)


def tag_bytes(tag: int) -> str:
    return f"encode_uvarint({tag})"


HEADER = '''"""{doc}

GENERATED by scripts/gen_messages.py from Kafka's {files}.
Do not edit by hand: change the generator and regenerate.
"""
'''


def emit_module(api: str, req: MessageDef, resp: MessageDef) -> str:
    e = Emitter()
    names: dict[str, StructDef] = {}
    for msg in (req, resp):
        for sd in msg.structs:
            if sd.name in names:
                raise SpecError(f"{api}: struct name {sd.name} used in request and response")
            names[sd.name] = sd
    doc = f"{api} API (key {req.api_key}): request versions {req.valid[0]}-{req.valid[1]}"
    e.lines.append(
        HEADER.format(doc=doc, files=f"{req.name}.json\nand {resp.name}.json").rstrip("\n")
    )
    body = Emitter()
    consts: dict[str, str] = {}
    shared_defaults = {
        f.struct.name
        for msg in (req, resp)
        for sd in msg.structs
        for f in sd.fields
        if f.struct is not None and not f.array
    }
    for msg in (req, resp):
        for sd in msg.structs:
            emit_struct(body, sd, msg, sd is msg.root, consts, shared_defaults)
            body(0)
    code = "\n".join(body.lines)
    if consts:
        code = "\n".join(f"{n} = {consts[n]}" for n in sorted(consts)) + "\n\n\n" + code
    imports = ["from __future__ import annotations", ""]
    if "dataclasses.field" in code:
        imports.append("import dataclasses")
    if consts:
        imports.append("import struct")
    if "uuid." in code:
        imports.append("import uuid")
    imports.append("from dataclasses import dataclass")
    imports.append("from typing import ClassVar")
    imports.append("")
    base_names = ["FieldSpec", "Message", "Struct"]
    for helper in ("absent_field_error", "null_field_error"):
        if helper in code:
            base_names.append(helper)
    if "(Struct)" not in code:
        base_names.remove("Struct")
    imports.append("from kafka_asgi.protocol.messages._base import (")
    imports.extend(f"    {n}," for n in sorted(base_names, key=isort_key))
    imports.append(")")
    prim = sorted(
        (
            n
            for n in (
                "NULL_INT32",
                "ZERO_BYTE",
                "ZERO_UUID",
                "Reader",
                "encode_compact_nullable_string",
                "encode_compact_string",
                "encode_nullable_string",
                "encode_string",
                "encode_uvarint",
                "pack_bool",
                "pack_float64",
                "pack_int8",
                "pack_int8_array",
                "pack_int16",
                "pack_int16_array",
                "pack_int32",
                "pack_int32_array",
                "pack_int64",
                "pack_int64_array",
                "pack_uint16",
                "pack_uint32",
                "write_bytes",
                "write_compact_bytes",
                "write_compact_nullable_bytes",
                "write_nullable_bytes",
            )
            if re.search(rf"\b{n}\b", code)
        ),
        key=isort_key,
    )
    imports.append("from kafka_asgi.protocol.primitives import (")
    for n in prim:
        imports.append(f"    {n},")
    imports.append(")")
    all_names = sorted(names)
    e.lines.append("")
    e.lines.extend(imports)
    e.lines.append("")
    e.lines.append("__all__ = [")
    for n in all_names:
        e.lines.append(f"    {n!r},".replace("'", '"'))
    e.lines.append("]")
    e.lines.append("")
    e.lines.append("")
    text = "\n".join(e.lines) + "\n" + code
    text = re.sub(r"\n{3,}", "\n\n\n", text).rstrip("\n") + "\n"
    # Between methods one blank line is the style; collapse the extra one emitted there.
    text = re.sub(r"\n\n\n(    )", r"\n\n\1", text)
    return text


def emit_init(modules: list[tuple[str, MessageDef, MessageDef]], table: list[Any]) -> str:
    lines = [
        '"""Kafka request/response messages, generated from the JSON spec.',
        "",
        "GENERATED by scripts/gen_messages.py. Do not edit by hand.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from kafka_asgi.protocol.messages._base import FieldSpec, Message, Struct",
    ]
    exported: list[str] = []
    for mod, req, resp in sorted(modules, key=lambda m: m[0]):
        lines.append(f"from kafka_asgi.protocol.messages.{mod} import (")
        lines.append(f"    {req.name},")
        lines.append(f"    {resp.name},")
        lines.append(")")
        exported += [req.name, resp.name]
    lines.append("")
    lines.append("__all__ = [")
    names = [*exported, "FieldSpec", "Message", "Struct"]
    names += ["API_VERSIONS_SPEC", "REQUEST_TYPES", "RESPONSE_TYPES"]
    for n in sorted(names, key=isort_key):
        lines.append(f'    "{n}",')
    lines.append("]")
    lines.append("")
    lines.append("REQUEST_TYPES: dict[int, type[Message]] = {")
    for _mod, req, _resp in sorted(modules, key=lambda m: m[1].api_key):
        lines.append(f"    {req.api_key}: {req.name},")
    lines.append("}")
    lines.append("")
    lines.append("RESPONSE_TYPES: dict[int, type[Message]] = {")
    for _mod, _req, resp in sorted(modules, key=lambda m: m[1].api_key):
        lines.append(f"    {resp.api_key}: {resp.name},")
    lines.append("}")
    lines.append("")
    lines.append("# Every API in the spec: api key -> (name, min version, max version,")
    lines.append("# first flexible request version, first flexible response version).")
    lines.append("# Header versions depend on these even for APIs without generated classes.")
    lines.append("API_VERSIONS_SPEC: dict[int, tuple[str, int, int, int | None, int | None]] = {")
    for row in table:
        lines.append(f"    {row[0]}: {tuple(row[1:])!r},".replace("'", '"'))
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate(spec_dir: Path) -> dict[str, str]:
    """All generated files: name -> content."""
    files: dict[str, str] = {}
    modules = []
    for api in APIS:
        req = build_message(load_json(spec_dir / f"{api}Request.json"))
        resp = build_message(load_json(spec_dir / f"{api}Response.json"))
        if req.api_key != resp.api_key:
            raise SpecError(f"{api}: request and response api keys differ")
        mod = snake(api)
        files[f"{mod}.py"] = emit_module(api, req, resp)
        modules.append((mod, req, resp))
    table = []
    by_key: dict[int, dict[str, Any]] = {}
    for path in sorted(spec_dir.glob("*.json")):
        spec = load_json(path)
        if spec.get("type") not in ("request", "response") or "apiKey" not in spec:
            continue
        entry = by_key.setdefault(int(spec["apiKey"]), {})
        entry[spec["type"]] = spec
    for key in sorted(by_key):
        entry = by_key[key]
        if "request" not in entry or "response" not in entry:
            continue
        rq, rs = entry["request"], entry["response"]
        valid = parse_versions(rq["validVersions"])
        assert valid is not None
        rq_flex = intersect(parse_versions(rq.get("flexibleVersions", "none")), valid)
        rs_valid = parse_versions(rs["validVersions"])
        rs_flex = intersect(parse_versions(rs.get("flexibleVersions", "none")), rs_valid)
        table.append(
            (
                key,
                rq["name"][: -len("Request")],
                valid[0],
                valid[1],
                rq_flex[0] if rq_flex else None,
                rs_flex[0] if rs_flex else None,
            )
        )
    files["__init__.py"] = emit_init(modules, table)
    for name, content in files.items():
        for lineno, line in enumerate(content.splitlines(), 1):
            if len(line) > 100:
                raise SpecError(f"{name}:{lineno}: generated line over 100 characters: {line}")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec_dir", nargs="?", type=Path, default=DEFAULT_SPEC_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    try:
        files = generate(args.spec_dir)
    except (SpecError, OSError, KeyError, ValueError) as exc:
        print(f"gen_messages: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).write_text(content, encoding="utf-8")
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
