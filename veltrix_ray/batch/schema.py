"""Column types from config -> the Arrow schema, the JSON decoding type and PostgreSQL DDL."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import pyarrow as pa

from veltrix_ray.errors import ConfigError

if TYPE_CHECKING:
    from veltrix_ray.contracts import Fetched

_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_AWARE = Annotated[dt.datetime, msgspec.Meta(tz=True)]

# config type -> (Arrow type, msgspec decoding type)
TYPES: dict[str, tuple[pa.DataType, Any]] = {
    "int64": (pa.int64(), _INT64),
    "float64": (pa.float64(), float),
    "string": (pa.string(), str),
    "bool": (pa.bool_(), bool),
    "timestamp": (pa.timestamp("us", tz="UTC"), _AWARE),
    "date": (pa.date32(), dt.date),
    # kept as JSON text (jsonb in PostgreSQL), whatever JSON value it holds
    "json": (pa.string(), msgspec.Raw),
    "bytes": (pa.binary(), bytes),  # bytea; in JSON, base64 text
    "uuid": (pa.string(), str),  # uuid, as its text
    "decimal": (pa.string(), decimal.Decimal),  # numeric, as its exact text
}

JSON_FIELD = b"veltrix.json"
# the PostgreSQL type of a string column that is not text (uuid, numeric)
PG_TYPE_FIELD = b"veltrix.pgtype"
_PG_TYPES = {"uuid": b"uuid", "decimal": b"numeric"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True


def columns_from_config(items: Sequence[Any]) -> list[Column]:
    cols = [Column(str(c.name), str(c.type), bool(c.nullable)) for c in items]
    if not cols:
        raise ConfigError("pipeline.columns is empty: list the event's fields with their types.")
    seen: set[str] = set()
    for i, col in enumerate(cols):
        if col.type not in TYPES:
            raise ConfigError(f"pipeline.columns[{i}].type={col.type!r} for column {col.name!r} is "
                              f"not one of {', '.join(TYPES)}.")
        if col.name in seen:
            raise ConfigError(f"pipeline.columns[{i}].name={col.name!r} appears twice.")
        if col.name.startswith("_"):
            raise ConfigError(f"pipeline.columns[{i}].name={col.name!r}: names starting with '_' "
                              "are reserved for Kafka metadata columns.")
        seen.add(col.name)
    return cols


def arrow_field(c: Column) -> pa.Field:
    meta = ({JSON_FIELD: b"1"} if c.type == "json" else
            {PG_TYPE_FIELD: _PG_TYPES[c.type]} if c.type in _PG_TYPES else None)
    return pa.field(c.name, TYPES[c.type][0], nullable=c.nullable, metadata=meta)


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([arrow_field(c) for c in columns])


def decoding_type(columns: Sequence[Column], *,
                  timestamps_as_text: bool = False) -> type[msgspec.Struct]:
    """A msgspec Struct validating one event: required, non-null fields unless nullable.
    `timestamps_as_text` leaves timestamps to a more lenient parser (see Decoder)."""
    fields: list[Any] = []
    for c in sorted(columns, key=lambda c: c.nullable):  # fields with defaults go last
        kind = str if timestamps_as_text and c.type == "timestamp" else TYPES[c.type][1]
        if c.nullable:
            # Raw takes any JSON value, null included, so it needs no Optional
            fields.append((c.name, kind if c.type == "json" else kind | None, None))
        else:
            fields.append((c.name, kind))
    return msgspec.defstruct("Event", fields, gc=False, forbid_unknown_fields=False)


# Kafka metadata columns, available to transforms; columns starting with "_" are never written.
METADATA = pa.schema([
    pa.field("_kafka_topic", pa.string(), nullable=False),
    pa.field("_kafka_partition", pa.int32(), nullable=False),
    pa.field("_kafka_offset", pa.int64(), nullable=False),
    pa.field("_kafka_key", pa.binary()),
    pa.field("_kafka_timestamp", pa.timestamp("ms", tz="UTC")),
])


def kafka_metadata(fetched: Fetched, good: Sequence[int] | None) -> list[pa.Array]:
    """The METADATA columns of the records of `fetched` at positions `good` (None: all)."""
    columns: list[Sequence[Any]] = [fetched.partitions, fetched.offsets, fetched.keys,
                                    fetched.timestamps]
    if good is not None:
        columns = [[column[i] for i in good] for column in columns]
    n = len(fetched.offsets) if good is None else len(good)
    return [pa.array(m, f.type) for m, f in zip([[fetched.topic] * n, *columns], METADATA,
                                                strict=True)]


def from_buffers(types: Sequence[str], rows: int,
                 buffers: Sequence[tuple[bytes | None, bytes | None, bytes]]) -> list[pa.Array]:
    """Arrays of the given column types from the (validity, offsets, data) buffers
    veltrix_codec's decoders hand back."""
    arrays = []
    for kind, (validity, offsets, data) in zip(types, buffers, strict=True):
        parts = [None if validity is None else pa.py_buffer(validity)]
        if offsets is not None:
            parts.append(pa.py_buffer(offsets))
        parts.append(pa.py_buffer(data))
        arrays.append(pa.Array.from_buffers(TYPES[kind][0], rows, parts))
    return arrays
