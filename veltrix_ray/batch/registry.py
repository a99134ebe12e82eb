"""Avro and Protobuf values (Confluent wire format) -> the same Arrow batches as the JSON path.

Pure: schemas come in through `admit` (the worker fetches them from the registry, waiting while
it is unreachable), so decoding never touches the network. A schema id is immutable: each is
compiled once, for the decoder's life. Bad framing, an id the registry does not have, truncated
or trailing bytes are the record's dead letter; a schema whose fields cannot go into the
columns stops the partitions that carry it (nothing of their batch commits)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from veltrix_ray.batch.decode import Decoded
from veltrix_ray.batch.schema import METADATA, Column, arrow_schema, from_buffers, kafka_metadata
from veltrix_ray.contracts import DeadLetter, Fetched, Reason
from veltrix_ray.errors import ConfigError

REGISTRY_FORMATS = ("avro", "protobuf")


def subject_name(topic: str, side: str) -> str:
    """The registry subject of a topic's values or keys (TopicNameStrategy): side is value or
    key."""
    return f"{topic}-{side}"


@dataclass(frozen=True)
class Field:
    """A top-level field of a writer schema, as a column would hold it."""

    name: str
    kind: str
    nullable: bool  # null is one of its values (an Avro union with null, a proto3 optional)
    has_default: bool  # a reader without the field still reads old records


@dataclass(frozen=True)
class Writer:
    """One registered schema, as the decoder gets it."""

    id: int
    schema_type: str  # AVRO | PROTOBUF
    text: str
    references: dict[str, str] = field(default_factory=dict)  # import name -> text
    subject: str = ""
    version: int | None = None

    def where(self) -> str:
        version = f" version {self.version}" if self.version is not None else ""
        subject = f" of {self.subject}" if self.subject else ""
        return f"schema id {self.id}{subject}{version}"


# -- writer schemas -> fields ----------------------------------------------------------------

_AVRO_PRIMITIVE = {"int": "int64", "long": "int64", "float": "float64", "double": "float64",
                   "string": "string", "boolean": "bool", "bytes": "bytes"}
_AVRO_LOGICAL = {"timestamp-millis": "timestamp", "timestamp-micros": "timestamp",
                 "local-timestamp-millis": "timestamp", "local-timestamp-micros": "timestamp",
                 "date": "date", "decimal": "decimal", "uuid": "uuid"}


def avro_fields(text: str) -> list[Field]:
    """The columns an Avro record schema gives (nested values are json)."""
    schema = json.loads(text)
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ValueError("the value schema is not an Avro record: its fields are the columns")
    named: dict[str, Any] = {}

    def kind(t: Any) -> tuple[str, bool]:
        if isinstance(t, list):
            branches = [b for b in t if b != "null"]
            nullable = len(branches) < len(t)
            if len(branches) == 1:
                return kind(branches[0])[0], nullable
            return "json", nullable
        if isinstance(t, str):
            if t in _AVRO_PRIMITIVE:
                return _AVRO_PRIMITIVE[t], False
            if t == "null":
                return "json", True
            return kind(named.get(t, named.get(t.rsplit(".", 1)[-1], "json")))
        if isinstance(t, dict):
            if "name" in t and t.get("type") in ("record", "enum", "fixed"):
                named[t["name"]] = t
                if t.get("namespace"):
                    named[f"{t['namespace']}.{t['name']}"] = t
            logical = _AVRO_LOGICAL.get(t.get("logicalType", ""))
            base = t.get("type")
            if logical and (logical != "uuid" or base == "string"):
                return logical, False
            if base == "enum":
                return "string", False
            if base == "fixed":
                return "bytes", False
            if base in ("record", "map", "array"):
                _walk(t)
                return "json", False
            return kind(base)
        return "json", False

    def _walk(t: Any) -> None:  # register named types defined inside nested values
        for sub in t.get("fields", []):
            kind(sub.get("type"))
        for key in ("items", "values"):
            if key in t:
                kind(t[key])

    if schema.get("name"):
        named[schema["name"]] = schema
    out = []
    for f in schema.get("fields", []):
        k, nullable = kind(f["type"])
        out.append(Field(f["name"], k, nullable, "default" in f))
    return out


def writer_fields(writer: Writer, decoder: Any = None) -> list[Field]:
    if writer.schema_type == "PROTOBUF":
        from veltrix_ray.batch.protobuf import ProtobufDecoder
        codec = decoder if decoder is not None else ProtobufDecoder([])
        if not codec.has(writer.id):
            codec.add_schema(writer.id, writer.text, writer.references)
        return [Field(n, k, nullable, True) for n, k, nullable in codec.fields(writer.id)]
    return avro_fields(writer.text)


def columns_of(fields: Sequence[Field], key: Sequence[str] = ()) -> list[Column]:
    """Columns for a writer schema: nullable unless part of the upsert key, so that a field a
    later version removes keeps its column, with NULLs."""
    return [Column(f.name, f.kind, f.name not in key) for f in fields]


# -- the codecs -------------------------------------------------------------------------------

class Codec(Protocol):
    def add_schema(self, writer: Writer) -> None: ...
    def has(self, schema_id: int) -> bool: ...
    def decode(self, values: list[bytes]) -> tuple[list[int], list[tuple[int, str]],
                                                    list[pa.Array]]: ...


class AvroCodec:
    def __init__(self, columns: Sequence[Column]) -> None:
        try:
            import veltrix_codec
        except ImportError as exc:
            raise ConfigError(
                "pipeline.format=avro needs the veltrix_codec extension (Rust), which is not "
                "installed: run `make` in the project, or `pip install ./native`") from exc
        self.columns = list(columns)
        self._codec = veltrix_codec.AvroDecoder([(c.name, c.type, c.nullable) for c in columns])

    def add_schema(self, writer: Writer) -> None:
        self._codec.add_schema(writer.id, writer.text)

    def has(self, schema_id: int) -> bool:
        return bool(self._codec.has(schema_id))

    def decode(self, values: list[bytes]) -> tuple[list[int], list[tuple[int, str]],
                                                    list[pa.Array]]:
        ok, errors, buffers = self._codec.decode(values)
        return ok, errors, from_buffers([c.type for c in self.columns], len(ok), buffers)


class ProtobufCodec:
    def __init__(self, columns: Sequence[Column]) -> None:
        from veltrix_ray.batch.protobuf import ProtobufDecoder
        self._codec = ProtobufDecoder([(c.name, c.type, c.nullable) for c in columns])

    def add_schema(self, writer: Writer) -> None:
        self._codec.add_schema(writer.id, writer.text, writer.references)

    def has(self, schema_id: int) -> bool:
        return bool(self._codec.has(schema_id))

    def decode(self, values: list[bytes]) -> tuple[list[int], list[tuple[int, str]],
                                                    list[pa.Array]]:
        ok, errors, arrays = self._codec.decode(values)
        return ok, errors, list(arrays)


def make_codec(fmt: str, columns: Sequence[Column]) -> Codec:
    return AvroCodec(columns) if fmt == "avro" else ProtobufCodec(columns)


def schema_ids(values: Sequence[bytes | None]) -> list[int]:
    """The Confluent schema id of each value; -1: none or too short, -2: not magic byte 0."""
    try:
        from veltrix_codec import schema_ids as native
    except ImportError:
        pass
    else:
        return list(native(values))
    out = []
    for v in values:
        if v is None or len(v) < 5:
            out.append(-1)
        elif v[0] != 0:
            out.append(-2)
        else:
            out.append(int.from_bytes(v[1:5], "big"))
    return out


# -- the decoder --------------------------------------------------------------------------------

@dataclass
class Plan:
    """What admitting a writer schema takes: columns to add first (schema evolution), or why
    it cannot be decoded into the table (its partitions stop)."""

    add: list[Column] = field(default_factory=list)
    refused: str | None = None


class RegistryDecoder:
    """Decoder for pipeline.format avro | protobuf; `decode` has the JSON Decoder's contract."""

    def __init__(self, columns: Sequence[Column], fmt: str, topic: str, *,
                 side: str = "value", evolution: str = "none", max_record_bytes: int = 1 << 20,
                 codec_factory: Callable[[str, Sequence[Column]], Codec] = make_codec) -> None:
        self.fmt = fmt
        self.topic = topic
        self.subject = subject_name(topic, side)  # where its writer schemas are registered
        self.evolution = evolution
        self.max_record_bytes = max_record_bytes
        self._factory = codec_factory
        self._writers: dict[int, Writer] = {}  # admitted
        self._refused: dict[int, str] = {}  # id -> why its records stop their partition
        self._unknown: set[int] = set()  # ids the registry does not have
        self._set_columns(list(columns))

    def _set_columns(self, columns: list[Column]) -> None:
        self.columns = columns
        self.schema = arrow_schema(columns)
        self.full_schema = pa.unify_schemas([self.schema, METADATA])
        self._codec = self._factory(self.fmt, columns)
        for writer in self._writers.values():
            self._codec.add_schema(writer)

    # -- schemas --------------------------------------------------------------------------------

    def missing(self, fetched: Fetched) -> list[int]:
        """Schema ids in `fetched` this decoder has not seen yet (fetch them, then `admit`)."""
        known = self._writers.keys() | self._refused.keys() | self._unknown
        return sorted({i for i in schema_ids(fetched.values) if i >= 0} - known)

    def unknown(self, schema_id: int) -> None:
        """The registry has no schema `schema_id`: its records are dead letters."""
        self._unknown.add(schema_id)

    def plan(self, writer: Writer) -> Plan:
        try:
            fields = writer_fields(writer)
        except Exception as exc:  # noqa: BLE001 - a schema the parsers cannot read, whatever they raise
            return Plan(refused=f"{writer.where()} cannot be read: {type(exc).__name__}: {exc}")
        have = {c.name for c in self.columns}
        if self.evolution != "add_columns":
            return Plan()
        add, required = [], []
        for f in fields:
            if f.name in have or f.name.startswith("_"):
                continue
            if f.nullable or f.has_default:
                add.append(Column(f.name, f.kind, True))
            else:
                required.append(f.name)
        if required:
            return Plan(refused=(
                f"topic {self.topic}: {writer.where()} adds the required field(s) "
                f"{', '.join(required)} without a default, which the table cannot hold for "
                "earlier rows: give them a default (or make them optional) in a new version"))
        return Plan(add)

    def extend(self, columns: Sequence[Column]) -> None:
        """Columns added to the table (schema evolution): decoded from now on."""
        have = {c.name for c in self.columns}
        self._set_columns(self.columns + [c for c in columns if c.name not in have])

    def admit(self, writer: Writer) -> str | None:
        """Compile `writer` for decoding; the reason its records cannot be decoded, or None."""
        try:
            self._codec.add_schema(writer)
        except ValueError as exc:
            self._refused[writer.id] = (
                f"topic {self.topic}: {writer.where()} cannot be decoded into the table's "
                f"columns: {exc}. A field's type changed in a way no column can follow (only "
                "int->long and float->double promote): write the new type to a new topic or "
                "table, or move the column by hand (ALTER TABLE), then run again")
            return self._refused[writer.id]
        self._writers[writer.id] = writer
        return None

    def refuse(self, writer: Writer, why: str) -> None:
        self._refused[writer.id] = why

    # -- records ----------------------------------------------------------------------------------

    def decode(self, fetched: Fetched) -> Decoded:
        values = fetched.values
        ids = schema_ids(values)
        if set(ids) <= self._writers.keys() and (
                not values or max(map(len, values)) <= self.max_record_bytes):  # type: ignore[arg-type]
            return self._decode_all(fetched)  # the common case: no record needs a look
        skipped = [i for i, v in enumerate(values) if v is None]
        bad: list[DeadLetter] = []
        stopped: dict[int, str] = {}
        todo: list[int] = []
        for i, (v, sid) in enumerate(zip(values, ids, strict=True)):
            if v is None:
                continue
            why = self._early_error(v, sid)
            if why is None and sid in self._refused:
                p = fetched.partitions[i]
                stopped.setdefault(p, f"partition {p} stopped at offset {fetched.offsets[i]}: "
                                      f"{self._refused[sid]}")
                continue
            if why is None:
                todo.append(i)
            else:
                bad.append(fetched.dead_letter(i, why, Reason.DECODE))
        if stopped:  # nothing of a stopped partition is decoded
            todo = [i for i in todo if fetched.partitions[i] not in stopped]
            bad = [b for b in bad if b.partition not in stopped]
        ok, errors, arrays = self._codec.decode([values[i] for i in todo])  # type: ignore[misc]
        bad += [fetched.dead_letter(todo[j], why, Reason.DECODE) for j, why in errors]
        bad.sort(key=lambda b: b.index)
        good = [todo[j] for j in ok]
        arrays += kafka_metadata(fetched, good)
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.full_schema)
        return Decoded(batch, bad, good, skipped, stopped)

    def _decode_all(self, fetched: Fetched) -> Decoded:
        """Every record framed with an admitted id: one codec call, no per-record Python."""
        ok, errors, arrays = self._codec.decode(fetched.values)  # type: ignore[arg-type]
        bad = [fetched.dead_letter(j, why, Reason.DECODE) for j, why in errors]
        arrays += kafka_metadata(fetched, ok if errors else None)
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.full_schema)
        return Decoded(batch, bad, ok if errors else None)

    def _early_error(self, value: bytes, sid: int) -> str | None:
        """Why a record is a dead letter before the codec reads it (which names a value not in
        the Confluent wire format)."""
        if len(value) > self.max_record_bytes:
            return (f"value of {len(value)} bytes exceeds pipeline.max_record_bytes="
                    f"{self.max_record_bytes}")
        if sid in self._unknown:
            return f"unknown schema id {sid}: the registry has no schema with this id"
        return None


# -- keys ---------------------------------------------------------------------------------------

class TextKeys:
    """pipeline.key_format=string: the key's UTF-8 text in one column."""

    def __init__(self, column: Column) -> None:
        self.columns = [column]
        self.schema = arrow_schema(self.columns)

    def decode(self, fetched: Fetched) -> Decoded:
        skipped = [i for i, k in enumerate(fetched.values) if k is None]
        good = [i for i, k in enumerate(fetched.values) if k is not None]
        raw = pa.array([fetched.values[i] for i in good], pa.binary())
        bad: list[DeadLetter] = []
        try:
            text = raw.cast(pa.string())
        except pa.ArrowInvalid:
            ok = [j for j, k in enumerate(raw.to_pylist()) if _utf8(k)]
            bad = [fetched.dead_letter(good[j], "not valid UTF-8", Reason.DECODE)
                   for j in range(len(good)) if j not in set(ok)]
            good = [good[j] for j in ok]
            text = pa.array([fetched.values[i] for i in good], pa.binary()).cast(pa.string())
        batch = pa.RecordBatch.from_arrays([text], schema=self.schema)
        return Decoded(batch, bad, good, skipped)


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


def keyed(fetched: Fetched) -> Fetched:
    """`fetched` with its keys in place of its values (a key decoder reads them)."""
    return Fetched(fetched.partitions, fetched.offsets, fetched.keys, fetched.keys,
                   fetched.timestamps, dict(fetched.spans), fetched.topic)


class KeyedDecoder:
    """pipeline.key_format other than none: the value's columns and the key's; a record with a
    bad key is a dead letter (`key: ...`; its value's error first when both are bad)."""

    def __init__(self, values: Any, keys: Any) -> None:
        self.values = values
        self.keys = keys

    @property
    def schema(self) -> pa.Schema:
        have = set(self.values.schema.names)
        return pa.schema([*self.values.schema, *(f for f in self.keys.schema
                                                  if f.name not in have)])

    def decode(self, fetched: Fetched) -> Decoded:
        v = self.values.decode(fetched)
        k = self.keys.decode(keyed(fetched))
        vgood = v.good if v.good is not None else list(range(v.batch.num_rows))
        kgood = k.good if k.good is not None else list(range(k.batch.num_rows))
        both = set(vgood) & set(kgood)
        bad = {b.index: fetched.dead_letter(b.index, f"key: {b.error}", b.reason)
               for b in k.bad}
        for i in set(k.skipped) & set(vgood):
            bad[i] = fetched.dead_letter(i, "key: no key (pipeline.key_format is not none)",
                                         Reason.DECODE)
        bad |= {b.index: b for b in v.bad}
        vb = v.batch.filter(pa.array([i in both for i in vgood], pa.bool_()))
        kb = k.batch.filter(pa.array([i in both for i in kgood], pa.bool_()))
        names = [n for n in vb.schema.names if not n.startswith("_")]
        arrays = [vb.column(n) for n in names]
        fields = [vb.schema.field(n) for n in names]
        for f in self.keys.schema:
            if f.name not in names:
                arrays.append(kb.column(f.name))
                fields.append(f)
        for f in METADATA:
            arrays.append(vb.column(f.name))
            fields.append(vb.schema.field(f.name))
        batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        stopped = {**k.stopped, **v.stopped}
        return Decoded(batch, sorted(bad.values(), key=lambda b: b.index),
                       [i for i in vgood if i in both], v.skipped, stopped)
