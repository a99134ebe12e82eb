"""Arrow schema <-> PostgreSQL column types, and the compatibility check of an existing table."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from veltrix_ray.batch.schema import JSON_FIELD, PG_TYPE_FIELD
from veltrix_ray.errors import ConfigError
from veltrix_ray.sink.binary import _column as binary_column
from veltrix_ray.sink.introspect import Column

# PostgreSQL type for an Arrow type, and the existing column types it may be written into
_PG: list[tuple[pa.DataType, str, set[str]]] = [
    (pa.int64(), "bigint", {"bigint", "numeric"}),
    (pa.int32(), "integer", {"integer", "bigint", "numeric"}),
    (pa.int16(), "smallint", {"smallint", "integer", "bigint", "numeric"}),
    (pa.float64(), "double precision", {"double precision", "numeric"}),
    (pa.float32(), "real", {"real", "numeric"}),
    (pa.bool_(), "boolean", {"boolean"}),
    (pa.string(), "text", {"text", "character varying", "jsonb", "json"}),
    (pa.date32(), "date", {"date", "timestamp with time zone"}),
    (pa.binary(), "bytea", {"bytea"}),
]


def pg_type(field: pa.Field) -> str:
    if field.metadata and field.metadata.get(JSON_FIELD):
        return "jsonb"
    if field.metadata and field.metadata.get(PG_TYPE_FIELD):
        return str(field.metadata[PG_TYPE_FIELD].decode())
    if pa.types.is_timestamp(field.type):
        return "timestamp with time zone"
    for arrow, pg, _ in _PG:
        if field.type == arrow:
            return pg
    raise ConfigError(f"Column {field.name!r} has Arrow type {field.type}, which veltrix-ray "
                      "cannot write to PostgreSQL; cast it in a transform (e.g. Compute with "
                      "cast: int64).")


def _accepts(field: pa.Field, existing: str) -> bool:
    wanted = pg_type(field)
    if wanted == existing:
        return True
    # what the binary encoder writes (uuid from text, timestamp without time zone as UTC wall
    # time, ...), CSV writes the same: tests/sink/test_binary_copy.py
    if binary_column(field.type, existing) is not None:
        return True
    if wanted == "jsonb":
        return existing in {"jsonb", "json", "text"}
    if wanted == "timestamp with time zone":
        return existing == "timestamp with time zone"
    return any(field.type == arrow and existing in ok for arrow, _, ok in _PG)


def incompatibilities(schema: pa.Schema, table: str,
                      existing: Mapping[str, Column]) -> list[str]:
    """Readable reasons why rows of `schema` cannot go into the existing table (empty: fine).
    A NOT NULL column is no reason: a row with a null there is dead-lettered on its own."""
    problems = []
    for field in schema:
        if field.name not in existing:
            problems.append(f"table {table} has no column {field.name!r} "
                            f"({pg_type(field)}): add it, or drop it from pipeline.columns / "
                            "the transforms")
            continue
        pg = existing[field.name].type
        if not _accepts(field, pg):
            problems.append(f"column {field.name!r} of {table} is {pg}, but the pipeline writes "
                            f"{pg_type(field)}: change the column's type in pipeline.columns or "
                            "the table")
    return problems
