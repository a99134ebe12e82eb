"""Binary COPY from Arrow (pgpq): an encoder per target column type, chosen once per table.

Binary COPY has no per-column type tag: each value must be in its column's binary input
format, so the encoder follows the target's declared type (from introspection), not the Arrow
type alone. A (Arrow type, column type) pair not listed here makes the whole table use CSV.

Binary writes what CSV wrote, value for value, with three differences, all CSV's faults:
bytea gets the bytes as they are (CSV sent them raw as escape-format text, and failed on
non-UTF-8 bytes), timestamps do not depend on the session's time zone, and a lone `\\.` value
cannot end the data."""

from __future__ import annotations

import decimal
import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq import encoders as enc
from pgpq._pgpq import Jsonb

log = logging.getLogger(__name__)

Array: TypeAlias = "pa.Array | pa.ChunkedArray"


class NotEncodable(Exception):
    """This batch holds a value binary cannot carry as CSV would (the batch goes as CSV)."""


@dataclass(frozen=True)
class _Column:
    build: Callable[[pa.Field], Any]  # pgpq encoder builder for the converted field
    convert: Callable[[Array], Array] | None = None


_TEXT = {"text", "character varying", "character", "json"}
_STRINGS: dict[pa.DataType, Any] = {pa.string(): enc.StringEncoderBuilder,
                                    pa.large_string(): enc.LargeStringEncoderBuilder}
_BYTES: dict[pa.DataType, Any] = {pa.binary(): enc.BinaryEncoderBuilder,
                                  pa.large_binary(): enc.LargeBinaryEncoderBuilder}
# integer column type -> its Arrow type, its builder, and the Arrow types that widen into it
_INTS: dict[str, tuple[pa.DataType, Any, set[pa.DataType]]] = {
    "bigint": (pa.int64(), enc.Int64EncoderBuilder,
               {pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16(), pa.uint32()}),
    "integer": (pa.int32(), enc.Int32EncoderBuilder,
                {pa.int8(), pa.int16(), pa.uint8(), pa.uint16()}),
    "smallint": (pa.int16(), enc.Int16EncoderBuilder, {pa.int8(), pa.uint8()}),
}
_TIMESTAMPS = {"s": enc.TimestampSecondEncoderBuilder, "ms": enc.TimestampMillisecondEncoderBuilder,
               "us": enc.TimestampMicrosecondEncoderBuilder}
_UUID = (r"^(\{[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7}\}|[0-9a-fA-F]{4}(-?[0-9a-fA-F]{4}){7})$")


def _cast(to: pa.DataType) -> Callable[[Array], Array]:
    def convert(col: Array) -> Array:
        return pc.cast(col, to)  # safe: raises (ArrowInvalid) rather than change a value
    return convert


def _column(arrow: pa.DataType, pg: str) -> _Column | None:
    """How a column of `arrow` values goes into a column declared `pg`; None: not in binary."""
    if arrow in _STRINGS:
        builder = _STRINGS[arrow]
        if pg in _TEXT:
            return _Column(builder)
        if pg == "jsonb":
            return _Column(lambda f: builder.new_with_output(f, Jsonb()))
        if pg == "uuid":
            return _Column(enc.FixedSizeBinaryEncoderBuilder, _uuid)
        if pg == "numeric":
            return _Column(enc.BinaryEncoderBuilder, _numeric_of_text)
        return None
    if pg in _INTS:
        exact, builder, wider = _INTS[pg]
        if arrow == exact:
            return _Column(builder)
        return _Column(builder, _cast(exact)) if arrow in wider else None
    if pg == "double precision" and arrow == pa.float64():
        return _Column(enc.Float64EncoderBuilder)
    if pg == "real" and arrow == pa.float32():
        return _Column(enc.Float32EncoderBuilder)
    if pg == "boolean" and arrow == pa.bool_():
        return _Column(enc.BooleanEncoderBuilder)
    if pg == "date" and arrow == pa.date32():
        return _Column(enc.Date32EncoderBuilder)
    if pg in ("timestamp with time zone", "timestamp without time zone"):
        if pa.types.is_timestamp(arrow):
            if arrow.unit in _TIMESTAMPS:
                return _Column(_TIMESTAMPS[arrow.unit])
            # nanoseconds: only when none is lost (CSV would have PostgreSQL round them)
            return _Column(enc.TimestampMicrosecondEncoderBuilder,
                           _cast(pa.timestamp("us", arrow.tz)))
        if arrow == pa.date32():  # midnight UTC, as CSV's date text in the UTC session
            return _Column(enc.TimestampMicrosecondEncoderBuilder, _cast(pa.timestamp("us")))
        return None
    if pg == "numeric":
        if pa.types.is_integer(arrow) and arrow != pa.uint64():
            return _Column(enc.Decimal128EncoderBuilder, _cast(pa.decimal128(19, 0)))
        if pa.types.is_decimal128(arrow) and arrow.scale >= 0:
            return _Column(enc.Decimal128EncoderBuilder)
        if pa.types.is_floating(arrow):
            return _Column(enc.BinaryEncoderBuilder, _numeric_from_text)
        return None
    if pg == "bytea":
        if arrow in _BYTES:
            return _Column(_BYTES[arrow])
        if pa.types.is_fixed_size_binary(arrow):
            return _Column(enc.FixedSizeBinaryEncoderBuilder)
    return None


def _uuid(col: Array) -> Array:
    """uuid text (as PostgreSQL's uuid_in reads it) -> 16 bytes; NotEncodable if one is not."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pc.all(pc.match_substring_regex(col, _UUID), min_count=0).as_py():
        raise NotEncodable("a value is not a uuid")
    digits = pc.replace_substring_regex(pc.fill_null(col, "0" * 32), r"[{}-]", "")
    raw = bytes.fromhex("".join(digits.to_pylist()))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(col), [None, pa.py_buffer(raw)])
    return pc.if_else(pc.is_null(col), pa.scalar(None, pa.binary(16)), fixed)


_SPECIAL = {"nan": 0xC000, "inf": 0xD000, "-inf": 0xF000}


def numeric_bytes(text: str) -> bytes:
    """numeric's binary input for the value PostgreSQL's numeric_in reads from `text`
    (same digits and display scale)."""
    special = _SPECIAL.get(text.lower())
    if special is not None:
        return struct.pack("!hhHh", 0, 0, special, 0)
    sign, digits, exp = decimal.Decimal(text).as_tuple()
    assert isinstance(exp, int)
    dscale = max(0, -exp)
    frac_groups = (dscale + 3) // 4
    # the value times 10000**frac_groups: an integer, then its base-10000 digits
    n = int("".join(map(str, digits))) * 10 ** (exp + 4 * frac_groups)
    groups: list[int] = []
    while n:
        n, rest = divmod(n, 10000)
        groups.append(rest)
    groups.reverse()
    weight = len(groups) - 1 - frac_groups if groups else 0
    return struct.pack(f"!hhHh{len(groups)}H", len(groups), weight,
                       0x4000 if sign else 0, dscale, *groups)


def _numeric_from_text(col: Array) -> Array:
    """Floats into numeric: the decimal text CSV wrote (Arrow's cast), as numeric_in reads it."""
    text = pc.cast(col, pa.string()).to_pylist()
    return pa.array([None if t is None else numeric_bytes(t) for t in text], pa.binary())


def _numeric_of_text(col: Array) -> Array:
    """Decimal text (a registry's decimal) into numeric; NotEncodable if one is not a number."""
    try:
        return pa.array([None if t is None else numeric_bytes(t) for t in col.to_pylist()],
                        pa.binary())
    except (decimal.InvalidOperation, ValueError) as exc:
        raise NotEncodable(f"a value is not a number: {exc}") from exc


@dataclass(frozen=True)
class BinaryPlan:
    """How each written column is encoded, for one Arrow schema and one target table."""

    columns: Mapping[str, _Column]

    def encode(self, table: pa.Table) -> bytes:
        """The whole COPY stream (header, tuples, trailer); NotEncodable when a value cannot
        go as binary exactly as it would go as CSV."""
        arrays, fields = [], []
        try:
            for f, col in zip(table.schema, table.columns, strict=True):
                c = self.columns[f.name]
                col = c.convert(col) if c.convert else col
                arrays.append(col)
                # nullable: a null in a field declared otherwise still goes as NULL
                fields.append(pa.field(f.name, col.type))
            data = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
            encoder = ArrowToPostgresBinaryEncoder.new_with_encoders(
                data.schema, {f.name: self.columns[f.name].build(f) for f in fields})
            parts = [encoder.write_header()]
            parts += [encoder.write_batch(b) for b in data.to_batches()]
            parts.append(encoder.finish())
        except (pa.ArrowException, ValueError, OverflowError, decimal.DecimalException) as exc:
            raise NotEncodable(str(exc)) from exc
        return b"".join(parts)


def choose(schema: pa.Schema, pg_types: Mapping[str, str], table: str) -> BinaryPlan | None:
    """The binary plan for rows of `schema` into `table` (column types `pg_types`, as
    information_schema names them), or None (logged): some column needs CSV."""
    columns = {}
    for f in schema:
        pg = pg_types.get(f.name)
        column = _column(f.type, pg) if pg is not None else None
        if column is None:
            log.warning("COPY into %s uses CSV, not binary: column %r is %s, which the binary "
                        "encoder cannot write from Arrow %s", table, f.name, pg or "missing",
                        f.type)
            return None
        columns[f.name] = column
    return BinaryPlan(columns)
