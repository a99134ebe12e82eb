"""Avro and Protobuf values (Confluent wire format) -> the same Arrow batches as the JSON path.

Pure: schemas come in through `admit` (the worker fetches them from the registry, waiting while
it is unreachable), so decoding never touches the network. A schema id is immutable: each is
compiled once, for the decoder's life. Bad framing, an id the registry does not have, truncated
or trailing bytes are the record's dead letter; a schema whose fields cannot go into the
columns stops the partitions that carry it (nothing of their batch commits)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from veltrix_ray.batch.avro import AvroCodec, avro_fields
from veltrix_ray.batch.contract import Decoded
from veltrix_ray.batch.schema import METADATA, Column, arrow_schema, kafka_metadata
from veltrix_ray.batch.writer import Field, Writer
from veltrix_ray.contracts import DeadLetter, Fetched, Reason

REGISTRY_FORMATS = ("avro", "protobuf")


def subject_name(topic: str, side: str) -> str:
    """The registry subject of a topic's values or keys (TopicNameStrategy): side is value or
    key."""
    return f"{topic}-{side}"


# -- writer schemas -> fields ----------------------------------------------------------------

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
