"""An existing table's column types the pipeline may write into: what binary COPY and CSV both
write correctly is accepted at setup; the rest is named before launch."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pyarrow as pa
import pytest

from veltrix_ray.errors import ConfigError
from veltrix_ray.sink.ddl import _accepts, pg_type
from veltrix_ray.sink.rows import to_written

from .test_rejected_rows import batch_of, sink

UTC = dt.timezone.utc
TS = pa.timestamp("us", "UTC")


@pytest.mark.parametrize(("arrow", "pg"), [
    (pa.string(), "uuid"), (TS, "timestamp without time zone"),
    (pa.date32(), "timestamp without time zone"), (pa.int16(), "smallint"),
    (pa.float32(), "real"), (pa.string(), "character"),
    (pa.int64(), "bigint"), (pa.int32(), "bigint"), (TS, "timestamp with time zone"),
])
def test_accepted(arrow: pa.DataType, pg: str) -> None:
    assert _accepts(pa.field("c", arrow), pg)


@pytest.mark.parametrize(("arrow", "pg"), [
    (pa.int64(), "smallint"), (pa.int64(), "integer"), (pa.float64(), "real"),
    (pa.bool_(), "uuid"), (pa.int64(), "uuid"), (pa.string(), "timestamp without time zone"),
    (pa.float64(), "bigint"),
])
def test_rejected(arrow: pa.DataType, pg: str) -> None:
    assert not _accepts(pa.field("c", arrow), pg)


def test_created_types() -> None:
    assert pg_type(pa.field("c", pa.int16())) == "smallint"
    assert pg_type(pa.field("c", pa.float32())) == "real"
    with pytest.raises(ConfigError, match="cast it in a transform"):
        pg_type(pa.field("c", pa.uint64()))


def test_setup_accepts_uuid_timestamp_smallint_real_columns_and_writes_them(pg_dsn: str) -> None:
    schema = pa.schema([("id", pa.string()), ("at", TS), ("n", pa.int16()), ("x", pa.float32()),
                        ("_kafka_partition", pa.int32()), ("_kafka_offset", pa.int64())])
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE t (id uuid, at timestamp, n smallint, x real)")
    ids = [uuid.uuid4() for _ in range(3)]
    at = dt.datetime(2024, 6, 1, 12, 30, 0, 123456, tzinfo=UTC)
    s = sink(pg_dsn, "t")
    try:
        s.setup(schema)  # no ConfigError naming a column
        s.claim([0])
        micros = (at - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
        wb, _ = batch_of([(0, o, {"id": str(u), "at": micros, "n": -7, "x": 0.5})
                          for o, u in enumerate(ids)], schema)
        assert s.write(wb) == []
        assert s.rows.inspected and s.rows.plan(to_written(wb.rows).schema) is not None
    finally:
        s.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT id, at, n, x FROM t ORDER BY id").fetchall()
    assert rows == [(u, at.replace(tzinfo=None), -7, 0.5) for u in sorted(ids)]
