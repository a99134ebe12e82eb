"""Confluent-framed Protobuf record values -> Arrow columns, bad records isolated.

Framing: magic byte 0, a 4-byte big-endian schema id, the message-index list (a zigzag varint
count, then that many zigzag varint indexes; a count of 0 means [0]), then the payload. The
index path picks the message type: the first index counts the schema file's top-level messages
in declaration order, each further one the nested messages of the one before (map fields'
entry types included, as Confluent's serializers count them).

Schemas are the registry's .proto texts, compiled by grpc_tools' protoc (in a subprocess, once
per schema id) into one descriptor pool per id, so two versions may define the same names.
google/protobuf/*.proto come with protoc; google/type/{date,decimal}.proto and
confluent/{meta,type/decimal}.proto, which Confluent serializers do not register as references,
are built in.

Records are decoded by veltrix_codec's ProtobufDecoder (Rust) from a plan made here of the
compiled descriptors: every message type the schema reaches, its fields, and per message-index
path each column's operation. Schemas that reach a type the plan does not cover (Any,
FieldMask, other google.protobuf types than Timestamp, Duration, the wrappers, Empty and
Struct/Value/ListValue; proto2 groups), or a missing extension, take the Python path, logged:
records parsed one by one with upb, columns then filled field by field over the parsed
messages. Both paths give the same arrays and the same errors (tests run both).

Presence: proto3 scalars without ``optional`` read their default (0, "") - never null;
``optional`` and oneof scalars, message fields (wrappers, Timestamp, ...) and fields the
writer's message lacks are null when absent, and a record with a null for a non-nullable column
is an error. Repeated and map fields are never null (``[]``, ``{}``).

Trailing bytes: a Protobuf payload has no end marker, so bytes after a message are read as more
fields. If they parse (as unknown fields, or a later value of a known field, which wins, as
protobuf's merge rules say) the record is good; if they do not (bad wire type, field number 0,
a truncated varint or length) the record is an error. Unknown fields are accepted: a writer may
be newer than the columns.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gc
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from inspect import signature
from operator import attrgetter
from typing import Any

import msgspec
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal.type_checkers import ToShortestFloat
from google.protobuf.message import DecodeError, Message

from veltrix_ray.batch.native import codec
from veltrix_ray.batch.schema import from_buffers

veltrix_codec = codec()  # None: the Python (upb) path decodes everything
log = logging.getLogger(__name__)

ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "json": pa.string(),
    "bytes": pa.binary(),
    "uuid": pa.string(),
    "decimal": pa.string(),
}

# Imports Confluent serializers resolve themselves (not registered as references).
_BUILTIN_PROTOS = {
    "google/type/date.proto": 'syntax = "proto3"; package google.type; '
    "message Date { int32 year = 1; int32 month = 2; int32 day = 3; }",
    "google/type/decimal.proto": 'syntax = "proto3"; package google.type; '
    "message Decimal { string value = 1; }",
    "confluent/type/decimal.proto": 'syntax = "proto3"; package confluent.type; '
    "message Decimal { bytes value = 1; uint32 precision = 2; int32 scale = 3; }",
    "confluent/meta.proto": 'syntax = "proto3"; package confluent; '
    'import "google/protobuf/descriptor.proto"; '
    "message Meta { string doc = 1; map<string, string> params = 2; repeated string tags = 3; } "
    "extend google.protobuf.FileOptions { Meta file_meta = 1088; } "
    "extend google.protobuf.MessageOptions { Meta message_meta = 1088; } "
    "extend google.protobuf.FieldOptions { Meta field_meta = 1088; } "
    "extend google.protobuf.EnumOptions { Meta enum_meta = 1088; } "
    "extend google.protobuf.EnumValueOptions { Meta enum_value_meta = 1088; }",
}

_T = FieldDescriptor
_INTS = frozenset({_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_SINT32,
                   _T.TYPE_SINT64, _T.TYPE_FIXED32, _T.TYPE_FIXED64, _T.TYPE_SFIXED32,
                   _T.TYPE_SFIXED64})
_UNSIGNED_64 = frozenset({_T.TYPE_UINT64, _T.TYPE_FIXED64})
_FLOATS = frozenset({_T.TYPE_FLOAT, _T.TYPE_DOUBLE})
_SCALAR_KINDS = {  # the kinds a scalar field may go into; json takes anything
    **dict.fromkeys(_INTS, ("int64", "float64", "decimal")),
    _T.TYPE_FLOAT: ("float64",), _T.TYPE_DOUBLE: ("float64",),
    _T.TYPE_STRING: ("string", "uuid", "decimal"), _T.TYPE_ENUM: ("string",),
    _T.TYPE_BOOL: ("bool",), _T.TYPE_BYTES: ("bytes",),
}
_NATURAL_KIND = {**dict.fromkeys(_INTS, "int64"), _T.TYPE_FLOAT: "float64",
                 _T.TYPE_DOUBLE: "float64", _T.TYPE_STRING: "string", _T.TYPE_ENUM: "string",
                 _T.TYPE_BOOL: "bool", _T.TYPE_BYTES: "bytes"}
_WRAPPERS = frozenset(f"google.protobuf.{t}Value" for t in
                      ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String",
                       "Bytes"))
_TIMESTAMP = "google.protobuf.Timestamp"
_DATE = "google.type.Date"
_DECIMALS = frozenset({"google.type.Decimal", "confluent.type.Decimal"})
_STRUCTS = frozenset({"google.protobuf.Struct", "google.protobuf.Value",
                      "google.protobuf.ListValue"})
# google.protobuf types the Rust plan covers (others, such as Any, take the Python path)
_NATIVE_WKT = _WRAPPERS | _STRUCTS | {_TIMESTAMP, "google.protobuf.Duration",
                                       "google.protobuf.Empty"}
_INT64_MAX = 2**63 - 1
_TS_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 .. 9999-12-31, as protobuf says
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_NONFINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
_NUL_ESCAPE = r"(?:^|[^\\])(?:\\\\)*\\u0000"  # the escape, not an escaped backslash + "u0000"
# protobuf >= 5.29: int64 values within 2**53 stay JSON numbers (jsonb can then compare them)
_TO_DICT: dict[str, Any] = {"preserving_proto_field_name": True}
if "unquote_int64_if_possible" in signature(json_format.MessageToDict).parameters:
    _TO_DICT["unquote_int64_if_possible"] = True

Errors = list[tuple[int, str]]
Extract = Callable[[list[Any]], tuple[list[Any], Errors]]
"""One column's values from a group's parsed messages, and (row, message) for rows that fail."""


def message_indexes(value: bytes) -> tuple[tuple[int, ...], int]:
    """The message-index path of a Confluent Protobuf value and where its payload starts."""
    why = header_error(value)
    if why is not None:
        raise ValueError(why)
    count, at = _zigzag(value, 5)
    if count < 0:
        raise ValueError(f"bad message-index list: negative count {count}")
    if count > len(value) - at:
        raise ValueError(f"bad message-index list: {count} indexes in {len(value) - at} bytes")
    if count == 0:
        return (0,), at
    path = []
    for _ in range(count):
        index, at = _zigzag(value, at)
        if index < 0:
            raise ValueError(f"bad message-index list: negative index {index}")
        path.append(index)
    return tuple(path), at


def _zigzag(value: bytes, at: int) -> tuple[int, int]:
    """A zigzag varint of at most 5 bytes (a Java int) at ``at``, and the offset after it."""
    n = 0
    for shift in range(0, 35, 7):
        if at >= len(value):
            raise ValueError("bad message-index list: truncated")
        byte = value[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (n >> 1) ^ -(n & 1), at
    raise ValueError("bad message-index list: a varint longer than 5 bytes")


def header_error(value: bytes) -> str | None:
    """Why a value is not in the Confluent wire format (magic byte 0, 4-byte schema id), if it
    is not: worded as native/src/lib.rs words it for both codecs."""
    if value[:1] == b"\x01":
        return ("wrong magic byte 0x01: schema ids in record headers are not supported yet (the "
                "Confluent wire format starts with magic byte 0)")
    if value and value[0] != 0:
        json = "; the value looks like JSON" if value[:1] == b"{" else ""
        return (f"wrong magic byte {value[0]:#04x}: not the Confluent wire format (magic byte "
                f"0){json}")
    if len(value) < 5:
        return (f"too short for the Confluent wire format: {len(value)} bytes (needs 5: magic "
                "byte 0 and a 4-byte schema id)")
    return None


@dataclass
class _Plan:
    """How to decode one message type into the columns."""

    parse: Callable[[bytes], Message]
    name: str
    extractors: list[Extract]


@dataclass
class _Group:
    """The records of one batch with the same plan."""

    plan: _Plan
    msgs: list[Message] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


@dataclass
class _Schema:
    file: Any  # the main FileDescriptor
    top: list[Descriptor]


class ProtobufDecoder:
    """Decodes Confluent Protobuf values into one Arrow array per column; ``native=False``
    keeps every schema on the Python path (for comparisons)."""

    def __init__(self, columns: Sequence[tuple[str, str, bool]], native: bool = True) -> None:
        self.columns = [(str(n), str(k), bool(null)) for n, k, null in columns]
        for name, kind, _ in self.columns:
            if kind not in ARROW_TYPES:
                raise ValueError(f"column {name!r}: unknown kind {kind!r}")
        self._schemas: dict[int, _Schema] = {}
        self._plans: dict[tuple[int, tuple[int, ...]], _Plan | str] = {}
        self._native = (veltrix_codec.ProtobufDecoder(self.columns)
                        if native and veltrix_codec is not None else None)
        self._python_ids: set[int] = set()  # schemas the native decoder does not take
        if native and veltrix_codec is None:
            log.warning("veltrix_codec is not installed: Protobuf records are decoded in "
                        "Python, several times slower (run `make` or `pip install ./native`)")

    def add_schema(self, schema_id: int, proto_text: str,
                   references: dict[str, str] | None = None) -> None:
        """Compile a schema (``references``: imported files' texts by import name) and check
        that its first message fits the columns; raises ValueError naming the field."""
        if schema_id in self._schemas:
            return
        schema = _compile(schema_id, proto_text, references or {})
        if not schema.top:
            raise ValueError(f"schema id {schema_id} defines no message")
        plan = _plan(schema.top[0], self.columns)  # raises for a field that does not fit
        if self._native is not None:
            try:
                self._native.add_schema(schema_id, *_native_plan(schema_id, schema,
                                                                 self.columns))
            except _Unsupported as e:
                log.info("schema id %s: decoded in Python (%s)", schema_id, e)
                self._python_ids.add(schema_id)
        self._schemas[schema_id] = schema
        self._plans[schema_id, (0,)] = plan

    def has(self, schema_id: int) -> bool:
        return schema_id in self._schemas

    def native(self, schema_id: int) -> bool:
        """Whether records of the schema are decoded by veltrix_codec (Rust)."""
        return self._native is not None and schema_id not in self._python_ids

    def fields(self, schema_id: int,
               index_path: tuple[int, ...] = (0,)) -> list[tuple[str, str, bool]]:
        """(name, kind, nullable) of each field of a message type, as a column would take it."""
        desc = _resolve(self._schemas[schema_id], index_path)
        if desc is None:
            raise ValueError(f"message index path {list(index_path)} names no message in "
                             f"schema id {schema_id}")
        return [(f.name, _natural_kind(f), _nullable(f)) for f in desc.fields]

    def decode(self, values: Sequence[bytes | None]) -> tuple[list[int], Errors, list[pa.Array]]:
        """(positions decoded, in order; (position, error) per bad record; one array per
        column, of the decoded records)."""
        if self._native is None:
            return self._decode_python(values)
        if not self._python_ids:
            return self._decode_native(values)
        python_ids = self._python_ids
        ids = veltrix_codec.schema_ids(values)
        mine = [i for i, schema_id in enumerate(ids) if schema_id in python_ids]
        if not mine:
            return self._decode_native(values)
        mine_set = set(mine)
        rest = [i for i in range(len(values)) if i not in mine_set]
        parts = [(part, decode([values[i] for i in part]))
                 for part, decode in ((mine, self._decode_python), (rest, self._decode_native))]
        positions = [part[i] for part, (ok, _, _) in parts for i in ok]
        errors = sorted((part[i], e) for part, (_, errs, _) in parts for i, e in errs)
        order = pa.array(sorted(range(len(positions)), key=positions.__getitem__), pa.int64())
        arrays = [pa.concat_arrays([a, b]).take(order)
                  for a, b in zip(parts[0][1][2], parts[1][1][2], strict=True)]
        return sorted(positions), errors, arrays

    def _decode_native(self, values: Sequence[bytes | None]
                       ) -> tuple[list[int], Errors, list[pa.Array]]:
        assert self._native is not None
        ok, errors, buffers = self._native.decode(values)
        return ok, errors, from_buffers([kind for _, kind, _ in self.columns], len(ok), buffers)

    def _decode_python(self, values: Sequence[bytes | None]
                       ) -> tuple[list[int], Errors, list[pa.Array]]:
        collecting = gc.isenabled()
        gc.disable()  # parsed messages hold no cycles; passes over them cost a third again
        try:
            return self._decode(values)
        finally:
            if collecting:
                gc.enable()

    def _decode(self, values: Sequence[bytes | None]) -> tuple[list[int], Errors, list[pa.Array]]:
        errors: Errors = []
        groups: dict[Any, _Group] = {}  # by 6-byte header (index [0]) or by (schema id, path)
        known = groups.get
        for pos, value in enumerate(values):
            group = known(value[:6]) if value is not None else None
            start = 6
            if group is None:
                located = self._locate(value, groups)
                if isinstance(located, str):
                    errors.append((pos, located))
                    continue
                group, start = located
            try:
                group.msgs.append(group.plan.parse(value[start:]))  # type: ignore[index]
            except DecodeError as e:
                errors.append((pos, f"payload does not parse as {group.plan.name}: {e}"))
                continue
            group.positions.append(pos)
        done = {id(g): g for g in groups.values()}.values()
        columns: list[list[Any]] = [[] for _ in self.columns]
        positions: list[int] = []
        for group in done:
            cols, group_errors = _extract(group)
            errors.extend(group_errors)
            if len(done) == 1:
                positions, columns = group.positions, cols
            else:
                positions.extend(group.positions)
                for whole, part in zip(columns, cols, strict=True):
                    whole.extend(part)
        if len(done) > 1:
            order = sorted(range(len(positions)), key=positions.__getitem__)
            positions = [positions[i] for i in order]
            columns = [[col[i] for i in order] for col in columns]
        errors.sort()
        arrays = [pa.array(col, type=ARROW_TYPES[kind])
                  for col, (_, kind, _) in zip(columns, self.columns, strict=True)]
        return positions, errors, arrays

    def _locate(self, value: bytes | None, groups: dict[Any, _Group]) -> tuple[_Group, int] | str:
        """The group of a record whose header is not a known 6-byte one, or its error (a value
        not in the Confluent wire format among them)."""
        if value is None:
            return "no value (a tombstone)"
        try:
            path, start = message_indexes(value)
        except ValueError as e:
            return str(e)
        schema_id = int.from_bytes(value[1:5], "big")
        group = groups.get((schema_id, path))
        if group is None:
            plan = self._plan(schema_id, path)
            if isinstance(plan, str):
                return plan
            group = groups[schema_id, path] = _Group(plan)
        if start == 6:
            groups[value[:6]] = group
        return group, start

    def _plan(self, schema_id: int, path: tuple[int, ...]) -> _Plan | str:
        plan = self._plans.get((schema_id, path))
        if plan is None:
            schema = self._schemas.get(schema_id)
            if schema is None:
                return f"unknown schema id {schema_id}"
            desc = _resolve(schema, path)
            if desc is None:
                plan = f"message index path {list(path)} names no message in schema id {schema_id}"
            else:
                try:
                    plan = _plan(desc, self.columns)
                except ValueError as e:
                    plan = f"schema id {schema_id}, message index path {list(path)}: {e}"
            self._plans[schema_id, path] = plan
        return plan


def _extract(group: _Group) -> tuple[list[list[Any]], Errors]:
    """The group's columns; rows that fail a column are dropped from all of them."""
    cols: list[list[Any]] = []
    bad: dict[int, str] = {}
    for extract in group.plan.extractors:
        values, errs = extract(group.msgs)
        cols.append(values)
        for row, message in errs:
            bad.setdefault(row, message)
    if not bad:
        return cols, []
    keep = [i for i in range(len(group.positions)) if i not in bad]
    errors = [(group.positions[row], message) for row, message in bad.items()]
    group.positions = [group.positions[i] for i in keep]
    return [[col[i] for i in keep] for col in cols], errors


def _compile(schema_id: int, text: str, references: dict[str, str]) -> _Schema:
    """Compile with protoc into a descriptor pool of the schema's own."""
    main = f"veltrix_schema_{schema_id}.proto"
    files = {**_BUILTIN_PROTOS, **references, main: text}
    with tempfile.TemporaryDirectory(prefix="veltrix-proto-") as tmp:
        for name, content in files.items():
            if name.startswith("google/protobuf/"):
                continue  # protoc's own copies
            path = os.path.normpath(os.path.join(tmp, name))
            if not path.startswith(tmp + os.sep):
                raise ValueError(f"schema id {schema_id}: reference name {name!r} is not a "
                                 "relative import path")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
        out = os.path.join(tmp, "set.pb")
        import grpc_tools

        wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"-I{wkt}",
             f"--descriptor_set_out={out}", "--include_imports", main],
            cwd=tmp, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = done.stderr.strip().replace(tmp + os.sep, "") or f"exit {done.returncode}"
            raise ValueError(f"schema id {schema_id} does not compile: {detail}")
        with open(out, "rb") as f:
            files_set = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for proto in files_set.file:
        pool.AddSerializedFile(proto.SerializeToString())
    file = pool.FindFileByName(main)
    main_proto = next(p for p in files_set.file if p.name == main)
    prefix = f"{main_proto.package}." if main_proto.package else ""
    top = [pool.FindMessageTypeByName(prefix + m.name) for m in main_proto.message_type]
    return _Schema(file, top)


def _resolve(schema: _Schema, path: tuple[int, ...]) -> Descriptor | None:
    if not path or not 0 <= path[0] < len(schema.top):
        return None
    desc = schema.top[path[0]]
    for i in path[1:]:
        nested = desc.nested_types
        if not 0 <= i < len(nested):
            return None
        desc = nested[i]
    return desc


def _message_name(f: FieldDescriptor) -> str | None:
    return f.message_type.full_name if f.cpp_type == _T.CPPTYPE_MESSAGE else None


def _is_repeated(f: FieldDescriptor) -> bool:
    try:
        return bool(f.is_repeated)
    except AttributeError:  # protobuf < 6
        return bool(f.label == _T.LABEL_REPEATED)


def _natural_kind(f: FieldDescriptor) -> str:
    if _is_repeated(f):
        return "json"
    if f.cpp_type != _T.CPPTYPE_MESSAGE:
        return _NATURAL_KIND[f.type]
    name = f.message_type.full_name
    if name in _WRAPPERS:
        return _NATURAL_KIND[f.message_type.fields_by_name["value"].type]
    if name in _DECIMALS:
        return "decimal"
    return {_TIMESTAMP: "timestamp", _DATE: "date"}.get(name, "json")


def _nullable(f: FieldDescriptor) -> bool:
    return not _is_repeated(f) and bool(f.has_presence)


def _plan(desc: Descriptor, columns: list[tuple[str, str, bool]]) -> _Plan:
    cls = message_factory.GetMessageClass(desc)
    extractors = []
    for name, kind, nullable in columns:
        f = desc.fields_by_name.get(name)
        if f is None:
            extractors.append(_missing(name, nullable, desc.full_name))
        else:
            extractors.append(_column(f, name, kind, nullable))
    return _Plan(cls.FromString, desc.full_name, extractors)


def _missing(column: str, nullable: bool, message: str) -> Extract:
    def extract(msgs: list[Any]) -> tuple[list[Any], Errors]:
        if nullable:
            return [None] * len(msgs), []
        return [None] * len(msgs), [
            (i, f"column {column}: not nullable, and message {message} has no such field")
            for i in range(len(msgs))]
    return extract


def _op(f: FieldDescriptor, column: str, kind: str) -> str:
    """How a column takes field ``f``: json, scalar, wrapper, timestamp, date or decimal;
    ValueError if the field cannot go there."""
    where = f"field {f.containing_type.full_name}.{f.name}"
    if _is_repeated(f) or kind == "json":
        if kind != "json":
            raise ValueError(f"{where} ({_describe(f)}) cannot go into column {column} ({kind}): "
                             "a repeated or map field goes into a json column")
        return "json"
    msg_name = _message_name(f)
    if msg_name is None:
        _scalar_fits(f, column, kind, where)
        return "scalar"
    if msg_name in _WRAPPERS:
        _scalar_fits(f.message_type.fields_by_name["value"], column, kind, where)
        return "wrapper"
    for op, names in (("timestamp", {_TIMESTAMP}), ("date", {_DATE}), ("decimal", _DECIMALS)):
        if kind == op and msg_name in names:
            return op
    raise ValueError(f"{where} ({_describe(f)}) cannot go into column {column} ({kind})")


def _scalar_fits(f: FieldDescriptor, column: str, kind: str, where: str) -> None:
    if kind not in _SCALAR_KINDS[f.type]:
        raise ValueError(f"{where} ({_describe(f)}) cannot go into column {column} ({kind})")


def _column(f: FieldDescriptor, column: str, kind: str, nullable: bool) -> Extract:
    """The extractor of a column from field ``f``, or ValueError if the field cannot go there."""
    op = _op(f, column, kind)
    where = f"field {f.containing_type.full_name}.{f.name}"
    get = attrgetter(f.name)
    name = f.name
    absent = f"column {column}: {where} is absent and the column is not nullable"

    def nulls(values: list[Any], null_rows: list[int]) -> Errors:
        for i in null_rows:
            values[i] = None
        return [] if nullable else [(i, absent) for i in null_rows]

    if op == "json":
        return _json_column(f, column, nulls)
    if op == "scalar":
        convert = _converter(f, column, kind, where)
        default = f.default_value
        present = f.has_presence

        def scalar(msgs: list[Any]) -> tuple[list[Any], Errors]:
            values = list(map(get, msgs))
            errors: Errors = []
            if present and default in values:
                errors = nulls(values, [i for i, v in enumerate(values)
                                        if v == default and not msgs[i].HasField(name)])
            return values, errors + convert(values)
        return scalar
    if op == "wrapper":
        sub = f.message_type.fields_by_name["value"]
        convert = _converter(sub, column, kind, where)
        inner = attrgetter(f"{name}.value")
        inner_default = sub.default_value

        def wrapper(msgs: list[Any]) -> tuple[list[Any], Errors]:
            values = list(map(inner, msgs))
            errors: Errors = []
            if inner_default in values:
                errors = nulls(values, [i for i, v in enumerate(values)
                                        if v == inner_default and not msgs[i].HasField(name)])
            return values, errors + convert(values)
        return wrapper
    if op == "timestamp":
        return _timestamp_column(f, column, nulls)
    if op == "date":
        return _date_column(f, column, nulls)
    return _decimal_message_column(f, column, nulls)


class _Unsupported(Exception):
    """A schema the native plan does not cover: its records take the Python path."""


Plan = tuple[list[Any], list[Any], list[Any]]
"""veltrix_codec.ProtobufDecoder.add_schema's arguments after the schema id."""


def _native_plan(schema_id: int, schema: _Schema, columns: list[tuple[str, str, bool]]) -> Plan:
    """The plan of veltrix_codec's decoder: every message type reachable from the schema's
    messages, its enums, and per message-index path the column operations (or the error every
    record with that path gets)."""
    messages: list[Any] = []
    enums: list[Any] = []
    msg_index: dict[str, int] = {}
    enum_index: dict[str, int] = {}

    def enum(e: Any) -> int:
        if e.full_name not in enum_index:
            enum_index[e.full_name] = len(enums)
            enums.append((e.full_name, [(v.number, v.name) for v in e.values],
                          bool(getattr(e, "is_closed", False))))
        return enum_index[e.full_name]

    def message(desc: Descriptor) -> int:
        name = desc.full_name
        if name in msg_index:
            return msg_index[name]
        outer = desc
        while outer.containing_type is not None:  # Struct.FieldsEntry: as Struct
            outer = outer.containing_type
        if desc.file.package == "google.protobuf" and outer.full_name not in _NATIVE_WKT:
            raise _Unsupported(f"it uses {name}")
        msg_index[name] = len(messages)
        messages.append(None)
        fields = []
        for f in desc.fields:
            if f.type == _T.TYPE_GROUP:
                raise _Unsupported(f"field {name}.{f.name} is a group")
            oneof = f.containing_oneof
            fields.append((
                f.number, f.name, f.type, _is_repeated(f), bool(f.has_presence),
                -1 if oneof is None else oneof.index,
                message(f.message_type) if f.cpp_type == _T.CPPTYPE_MESSAGE else -1,
                enum(f.enum_type) if f.type == _T.TYPE_ENUM else -1))
        messages[msg_index[name]] = (name, bool(desc.GetOptions().map_entry), fields)
        return msg_index[name]

    targets: list[Any] = []
    paths: list[tuple[tuple[int, ...], Descriptor]] = [((i,), d) for i, d in enumerate(schema.top)]
    while paths:
        path, desc = paths.pop()
        paths.extend((path + (i,), d) for i, d in enumerate(desc.nested_types))
        ops: list[tuple[str, int, str]] = []
        try:
            for column, kind, _ in columns:
                f = desc.fields_by_name.get(column)
                if f is None:
                    ops.append(("missing", -1, ""))
                else:
                    ops.append((_op(f, column, kind), f.index,
                                f"field {desc.full_name}.{f.name}"))
        except ValueError as e:
            targets.append((list(path), -1, [], f"schema id {schema_id}, message index path "
                                                 f"{list(path)}: {e}"))
            continue
        targets.append((list(path), message(desc), ops, ""))
    return messages, enums, targets


def _describe(f: FieldDescriptor) -> str:
    if f.cpp_type == _T.CPPTYPE_MESSAGE and f.message_type.GetOptions().map_entry:
        return "map"
    label = "repeated " if _is_repeated(f) else ""
    if f.cpp_type == _T.CPPTYPE_MESSAGE:
        return label + str(f.message_type.full_name)
    if f.type == _T.TYPE_ENUM:
        return label + "enum " + str(f.enum_type.full_name)
    return label + _TYPE_NAMES[f.type]


_TYPE_NAMES = {getattr(_T, n): n[5:].lower() for n in dir(_T) if n.startswith("TYPE_")}


def _converter(f: FieldDescriptor, column: str, kind: str,
               where: str) -> Callable[[list[Any]], Errors]:
    """In-place conversion of a scalar field's values (None: null) into the column's kind."""
    t = f.type
    if kind not in _SCALAR_KINDS[t]:
        raise ValueError(f"{where} ({_describe(f)}) cannot go into column {column} ({kind})")
    if kind == "int64" and t in _UNSIGNED_64:
        def unsigned(values: list[Any]) -> Errors:
            if not values or max(v or 0 for v in values) <= _INT64_MAX:
                return []
            return [(i, f"column {column}: {where} value {v} does not fit int64")
                    for i, v in enumerate(values) if v is not None and v > _INT64_MAX]
        return unsigned
    if kind == "float64" and t != _T.TYPE_DOUBLE:
        # float32 values as their shortest text reads them (0.1f -> 0.1), as protobuf's JSON does
        to_float = ToShortestFloat if t == _T.TYPE_FLOAT else float

        def floats(values: list[Any]) -> Errors:  # ToShortestFloat(inf) never returns
            values[:] = [v if v is None or not math.isfinite(v) else to_float(v)
                         for v in values]
            return []
        return floats
    if kind == "string" and t == _T.TYPE_ENUM:
        names = _EnumNames({v.number: v.name for v in f.enum_type.values})
        names[None] = None

        def enum(values: list[Any]) -> Errors:
            values[:] = map(names.__getitem__, values)
            return []
        return enum
    if kind == "string":
        return _nul_check(column, where)
    if kind in ("uuid", "decimal"):
        text = _uuid_text if kind == "uuid" else _decimal_text

        def checked(values: list[Any]) -> Errors:
            if kind == "uuid" and _canonical_uuids([v for v in values if v is not None]):
                return []
            errors: Errors = []
            for i, v in enumerate(values):
                if v is not None:
                    try:
                        values[i] = text(v)
                    except ValueError as e:
                        errors.append((i, f"column {column}: {where}: {e}"))
            return errors
        return checked
    return lambda values: []


class _EnumNames(dict[Any, Any]):
    def __missing__(self, number: int) -> str:
        return str(number)  # a number the writer's enum does not name (open enums)


def _nul_check(column: str, where: str) -> Callable[[list[Any]], Errors]:
    def check(values: list[Any]) -> Errors:
        if "\x00" not in "".join(filter(None, values)):
            return []
        return [(i, f"column {column}: {where} holds a NUL character, which PostgreSQL text "
                    "cannot store") for i, v in enumerate(values) if v and "\x00" in v]
    return check


def _canonical_uuids(values: list[str]) -> bool:
    """Whether all are UUIDs as PostgreSQL prints them, checked for all rows at once."""
    text, n = "".join(values), len(values)
    if len(text) != 36 * n or not text.isascii() or text.count("-") != 4 * n:
        return False
    if any(text[i::36] != "-" * n for i in (8, 13, 18, 23)):
        return False
    return not text.encode().translate(None, b"0123456789abcdef-")


def _uuid_text(v: str) -> str:
    try:
        return str(uuid.UUID(v))
    except ValueError:
        raise ValueError(f"{v[:80]!r} is not a UUID") from None


def _decimal_text(v: Any) -> str:
    if isinstance(v, int):
        return str(v)
    try:
        d = decimal.Decimal(v)
    except (decimal.InvalidOperation, ValueError):
        raise ValueError(f"{v[:80]!r} is not a decimal number") from None
    if not d.is_finite():
        raise ValueError(f"{v[:80]!r} is not a finite decimal number")
    return str(d)


def _absent_rows(msgs: list[Any], rows: list[int], name: str) -> list[int]:
    return [i for i in rows if not msgs[i].HasField(name)]


NullFill = Callable[[list[Any], list[int]], Errors]


def _timestamp_column(f: FieldDescriptor, column: str, nulls: NullFill) -> Extract:
    name = f.name
    get, seconds, nanos = attrgetter(name), attrgetter("seconds"), attrgetter("nanos")
    lo, hi = _TS_SECONDS

    def extract(msgs: list[Any]) -> tuple[list[Any], Errors]:
        stamps = list(map(get, msgs))
        secs, ns = list(map(seconds, stamps)), list(map(nanos, stamps))
        values: list[Any] = [s * 1_000_000 + n // 1000 for s, n in zip(secs, ns, strict=True)]
        errors: Errors = []
        if 0 in values:
            errors = nulls(values, _absent_rows(
                msgs, [i for i, v in enumerate(values) if v == 0], name))
        if values and (min(secs) < lo or max(secs) > hi or min(ns) < 0 or max(ns) > 999_999_999):
            errors += [(i, f"column {column}: timestamp {s}s {n}ns is out of range")
                       for i, (s, n) in enumerate(zip(secs, ns, strict=True))
                       if not lo <= s <= hi or not 0 <= n <= 999_999_999]
        return values, errors
    return extract


def _date_column(f: FieldDescriptor, column: str, nulls: NullFill) -> Extract:
    name = f.name
    get = attrgetter(name)

    def extract(msgs: list[Any]) -> tuple[list[Any], Errors]:
        values: list[Any] = []
        errors: Errors = []
        null_rows: list[int] = []
        for i, d in enumerate(map(get, msgs)):
            y, m, day = d.year, d.month, d.day
            try:
                values.append(dt.date(y, m, day).toordinal() - _EPOCH_ORDINAL)
            except ValueError:
                values.append(None)
                if y == m == day == 0 and not msgs[i].HasField(name):
                    null_rows.append(i)
                else:
                    errors.append((i, f"column {column}: {y:04}-{m:02}-{day:02} is not a full "
                                      "date (google.type.Date with a zero year, month or day)"))
        return values, nulls(values, null_rows) + errors
    return extract


def _decimal_message_column(f: FieldDescriptor, column: str, nulls: NullFill) -> Extract:
    name = f.name
    get = attrgetter(name)
    confluent = f.message_type.full_name == "confluent.type.Decimal"

    def extract(msgs: list[Any]) -> tuple[list[Any], Errors]:
        values: list[Any] = []
        errors: Errors = []
        absent = [i for i, m in enumerate(msgs) if not m.HasField(name)]
        skip = set(absent)
        for i, d in enumerate(map(get, msgs)):
            if i in skip:
                values.append(None)
                continue
            try:
                if confluent:
                    digits = decimal.Decimal(int.from_bytes(d.value, "big", signed=True))
                    sign, numbers, _ = digits.as_tuple()
                    values.append(str(decimal.Decimal((sign, numbers, -d.scale))))
                else:
                    values.append(_decimal_text(d.value))
            except ValueError as e:
                values.append(None)
                errors.append((i, f"column {column}: {e}"))
        return values, nulls(values, absent) + errors
    return extract


def _json_column(f: FieldDescriptor, column: str, nulls: NullFill) -> Extract:
    """JSON text of any field, converted column-wise (one pass per field over all rows)."""
    name = f.name
    get = attrgetter(name)
    convert = _field_json(f, {})
    may_be_absent = not _is_repeated(f) and f.has_presence
    encode = msgspec.json.encode  # compact, UTF-8
    nul = re.compile(_NUL_ESCAPE.encode())

    def extract(msgs: list[Any]) -> tuple[list[Any], Errors]:
        errors: Errors = []
        fields = list(map(get, msgs))
        try:
            values: list[Any] = convert(fields)
        except ValueError:  # find the rows at fault
            values = []
            for i, v in enumerate(fields):
                try:
                    values.extend(convert([v]))
                except ValueError as e:
                    values.append(None)
                    errors.append((i, f"column {column}: {e}"))
        values = [None if v is None else encode(v) for v in values] if errors else list(
            map(encode, values))
        if b"\\u0000" in b"".join(filter(None, values)):
            errors += [(i, f"column {column}: a NUL character (\\u0000), which PostgreSQL "
                           "jsonb cannot store") for i, v in enumerate(values)
                       if v is not None and nul.search(v)]
        if may_be_absent:
            absent = [i for i, m in enumerate(msgs) if not m.HasField(name)]
            errors = nulls(values, absent) + errors
        return values, errors
    return extract


Many = Callable[[list[Any]], list[Any]]
"""Converts the values of one field over many rows to JSON-ready data."""
Memo = dict[str, Many]
"""Message converters by full name, while one schema's converters are built."""


def _field_json(f: FieldDescriptor, memo: Memo) -> Many:
    """A field's whole value (a list for repeated fields, a dict for maps), row by row."""
    one = _to_json(f, memo)
    if not _is_repeated(f):
        return one
    if f.cpp_type == _T.CPPTYPE_MESSAGE and f.message_type.GetOptions().map_entry:
        entry = f.message_type.fields_by_name
        value = _to_json(entry["value"], memo)
        key = (lambda k: "true" if k else "false") if entry["key"].type == _T.TYPE_BOOL else str
        return lambda rows: [dict(zip(map(key, m), value([m[k] for k in m]), strict=True))
                             for m in rows]
    if f.cpp_type in _INT64_CPP:  # lists as they are, unless a value needs quoting
        return lambda rows: ([one(v) for v in rows] if any(
            not -_EXACT < x < _EXACT for x in _extremes(rows)) else list(map(list, rows)))
    if one is list:
        return lambda rows: list(map(list, rows))
    return lambda rows: _split(one([x for v in rows for x in v]), list(map(len, rows)))


def _extremes(rows: list[Any]) -> list[int]:
    full = list(filter(None, rows))
    return [min(map(min, full)), max(map(max, full))] if full else []


def _split(flat: list[Any], lengths: list[int]) -> list[list[Any]]:
    out, at = [], 0
    for n in lengths:
        out.append(flat[at:at + n])
        at += n
    return out


def _to_json(f: FieldDescriptor, memo: Memo) -> Many:
    """Values of field ``f`` (elements, if repeated) as JSON-ready data: protobuf's JSON
    mapping with the .proto field names, plus: fields without presence are always written
    (``[]``, ``0``, ``""``), 64-bit integers are numbers when a double holds them exactly, and
    Struct numbers that are integers are written as integers (as the JSON they came from)."""
    t = f.type
    if f.cpp_type == _T.CPPTYPE_MESSAGE:
        return _message_json(f.message_type, memo)
    if t == _T.TYPE_ENUM:
        if f.enum_type.full_name == "google.protobuf.NullValue":
            return lambda rows: [None] * len(rows)
        names = _EnumNames({v.number: v.name for v in f.enum_type.values})
        return lambda rows: list(map(names.__getitem__, rows))
    if t == _T.TYPE_BYTES:
        return lambda rows: [base64.b64encode(v).decode() for v in rows]
    if t in _FLOATS:
        shortest = t == _T.TYPE_FLOAT
        return lambda rows: [_NONFINITE.get(v, "NaN") if not math.isfinite(v)
                             else ToShortestFloat(v) if shortest else v for v in rows]
    if f.cpp_type in _INT64_CPP:
        return lambda rows: [v if -_EXACT < v < _EXACT or float(v) == v else str(v)
                             for v in rows]
    return list  # bools, strings, 32-bit ints


_EXACT = 2**53  # integers below it in magnitude are exact as doubles (JSON numbers)
_INT64_CPP = frozenset({_T.CPPTYPE_INT64, _T.CPPTYPE_UINT64})


def _message_json(desc: Descriptor, memo: Memo) -> Many:
    """A message type's converter, built once per type (recursive types included): each field
    converted over all rows, then one msgspec Struct per row (absent fields left out). Struct,
    Value and ListValue have their own; other well-known types (Timestamp, Duration, wrappers,
    Any, ...) go through json_format."""
    name = desc.full_name
    if name in memo:
        return memo[name]
    if name == "google.protobuf.Struct":
        return lambda rows: list(map(_struct, rows))
    if name == "google.protobuf.ListValue":
        return lambda rows: list(map(_list_value, rows))
    if name == "google.protobuf.Value":
        return lambda rows: list(map(_value, rows))
    if desc.file.package == "google.protobuf":
        return lambda rows: [json_format.MessageToDict(m, **_TO_DICT) for m in rows]
    row_type = msgspec.defstruct(
        name.replace(".", "_"), [(f"f{i}", Any) for i in range(len(desc.fields))],
        rename={f"f{i}": f.name for i, f in enumerate(desc.fields)})
    parts: list[tuple[attrgetter[Any], Many, str | None]] = []

    def convert(rows: list[Any]) -> list[Any]:
        if not rows:  # a recursive type's fields would recurse without end
            return []
        columns = []
        for get, many, presence in parts:
            values = list(map(get, rows))
            if presence is None:
                columns.append(many(values))
                continue
            present = [m.HasField(presence) for m in rows]
            # only the present ones: a default sub-message of a recursive type never ends
            done = iter(many([v for v, p in zip(values, present, strict=True) if p]))
            columns.append([next(done) if p else msgspec.UNSET for p in present])
        return list(map(row_type, *columns)) if columns else [row_type() for _ in rows]
    memo[name] = convert  # before the fields: a type may contain itself
    parts.extend((attrgetter(f.name), _field_json(f, memo), f.name if _nullable(f) else None)
                 for f in desc.fields)
    return convert


def _struct(s: Any) -> dict[str, Any]:
    fields = s.fields
    return {k: _value(fields[k]) for k in fields}


def _list_value(lv: Any) -> list[Any]:
    return [_value(v) for v in lv.values]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        x = v.number_value
        if not math.isfinite(x):
            raise ValueError(f"a Struct number {x} cannot be written as JSON")
        return int(x) if x.is_integer() and abs(x) < 2**53 else x
    if kind == "struct_value":
        return _struct(v.struct_value)
    if kind == "list_value":
        return _list_value(v.list_value)
    if kind == "bool_value":
        return v.bool_value
    return None
