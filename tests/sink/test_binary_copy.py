"""Binary COPY (pgpq) writes what CSV COPY wrote, type by type, against a real PostgreSQL; a
column type it cannot write makes the table fall back to CSV, logged once."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import math
from typing import Any

import pgpq
import psycopg
import pyarrow as pa
import pytest

from veltrix_ray.batch.schema import JSON_FIELD
from veltrix_ray.sink import PostgresSink
from veltrix_ray.sink.binary import NotEncodable, choose, numeric_bytes
from veltrix_ray.sink.rows import RowWriter, copy_line, is_data_error, to_written

from .test_rejected_rows import EVENTS, USER_TABLE, batch_of, good, sink

UTC = dt.timezone.utc
BIG_JSON = json.dumps({"blob": "é" * 300_000 + "x" * 400_000, "list": list(range(1000))})
EDGE = ["", " ", "plain", "ünïcödé 日本語 🎉", "a,b", '"quoted"', "line\nbreak", "cr\r\nlf",
        "\\.", "\\N", "NULL", "tab\there", "\u2028\u200b", "x" * 10_000, None]
N = len(EDGE)


def pad(values: list[Any]) -> list[Any]:
    return values + [None] * (N - len(values))


# column -> (PostgreSQL type, Arrow values); every column has NULLs
COLUMNS: dict[str, tuple[str, pa.Array]] = {
    "t": ("text", pa.array(EDGE, pa.string())),
    "vc": ("varchar(20000)", pa.array(EDGE, pa.large_string())),
    "ch": ("character(3)", pa.array(pad(["a", "abc", "", "ü"]))),
    "jb": ("jsonb", pa.array(pad(["{}", "[]", '{"a": {"b": [1, 2.5, null, true]}}', BIG_JSON,
                                  '"ünï\\u00e9"', "1e300", "  {\"k\" : 1}  ", "null"]))),
    "js": ("json", pa.array(pad(["{}", '{"a":  1, "a": 2}', BIG_JSON]))),
    "tz": ("timestamptz", pa.array(pad([
        dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, UTC),
        dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(2000, 1, 1, 0, 0, 0, 1, UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999, UTC)]), pa.timestamp("us", "UTC"))),
    "tzms": ("timestamptz", pa.array(pad([dt.datetime(2024, 2, 29, 12, 0, 0, 123000)]),
                                     pa.timestamp("ms", "Europe/Berlin"))),
    "ts": ("timestamp", pa.array(pad([dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59,
                                                                         59, 999999),
                                      dt.datetime(2024, 6, 1, 1, 2, 3, 456789)]),
                                 pa.timestamp("us"))),
    "tsns": ("timestamptz", pa.array(pad([1_700_000_000_123_456_000, 0, -1_000]),
                                     pa.timestamp("ns"))),
    "d2ts": ("timestamptz", pa.array(pad([dt.date(2024, 1, 2), dt.date(1, 1, 1)]), pa.date32())),
    "u": ("uuid", pa.array(pad(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                                "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}",
                                "a0eebc999c0b4ef8bb6d6bb9bd380a11",
                                "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
                                "00000000-0000-0000-0000-000000000000"]))),
    "nf": ("numeric", pa.array(pad([1.5, 0.1, 123456.0, 1e300, -0.0, math.nan, math.inf,
                                    -math.inf, 1.5e-7, -2.5e-300, 5e-324, 1.7976931348623157e308,
                                    -123.456]), pa.float64())),
    "ni": ("numeric", pa.array(pad([0, -1, 2**63 - 1, -(2**63), 10_000, 99_990_000]),
                               pa.int64())),
    "nd": ("numeric(30,4)", pa.array(pad([decimal.Decimal("1.5000"),
                                          decimal.Decimal("-12345678901234.0001"),
                                          decimal.Decimal("0.0000")]), pa.decimal128(20, 4))),
    "n52": ("numeric(5,2)", pa.array(pad([1.005, 999.994, -0.125, 0.0]), pa.float64())),
    "i8": ("bigint", pa.array(pad([0, -1, 2**63 - 1, -(2**63)]), pa.int64())),
    "i4": ("integer", pa.array(pad([0, -1, 2**31 - 1, -(2**31)]), pa.int32())),
    "i4b": ("bigint", pa.array(pad([0, -1, 2**31 - 1, -(2**31)]), pa.int32())),
    "i2": ("smallint", pa.array(pad([0, -1, 2**15 - 1, -(2**15)]), pa.int16())),
    "f8": ("double precision", pa.array(pad([0.1, -0.0, 1e300, -1e300, math.nan, math.inf,
                                             -math.inf, 5e-324, 2.2250738585072014e-308,
                                             1.7976931348623157e308]), pa.float64())),
    "f4": ("real", pa.array(pad([0.1, -0.0, 3.4e38, math.nan, math.inf, -math.inf, 1e-45]),
                            pa.float32())),
    "b": ("boolean", pa.array(pad([True, False]), pa.bool_())),
    "dt": ("date", pa.array(pad([dt.date(1, 1, 1), dt.date(9999, 12, 31),
                                 dt.date(2000, 1, 1), dt.date(1970, 1, 1)]), pa.date32())),
    # CSV sends bytes raw (read as escape-format text): only plain ASCII reads back the same
    "by": ("bytea", pa.array(pad([b"", b"abc", b"hello world", b"a,b"]), pa.binary())),
}


def _table() -> pa.Table:
    arrays = {"id": pa.array(range(N), pa.int64())} | {c: a for c, (_, a) in COLUMNS.items()}
    return pa.table(arrays)


def _create(conn: psycopg.Connection, name: str, primary: bool = False) -> None:
    cols = ", ".join(f"{c} {t}" for c, (t, _) in COLUMNS.items())
    conn.execute(f"CREATE TABLE {name} (id bigint{' PRIMARY KEY' if primary else ''}, {cols})")


def _connect(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn)
    conn.execute("SET TIME ZONE 'UTC'")  # as the sink's connections
    return conn


def _texts(conn: psycopg.Connection, table: str) -> dict[str, list[str | None]]:
    """Each column as PostgreSQL prints it (NaN, -0 and numeric scale included), by id."""
    names = ["id", *COLUMNS]
    rows = conn.execute(f"SELECT {', '.join(f'{c}::text' for c in names)} FROM {table} AS r "
                        "ORDER BY r.id").fetchall()
    return {c: [r[i] for r in rows] for i, c in enumerate(names)}


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_binary_writes_exactly_what_csv_wrote(pg_dsn: str, mode: str) -> None:
    batch = _table().to_batches()[0]
    with _connect(pg_dsn) as conn:
        for name in ("via_csv", "via_binary"):
            _create(conn, name, primary=mode == "upsert")
        csv = RowWriter("public", "via_csv", mode, ["id"])  # not inspected: CSV
        binary = RowWriter("public", "via_binary", mode, ["id"])
        with conn.cursor() as cur:
            binary.inspect(cur)
            for writer in (csv, binary):
                p = writer.prepare(batch)
                assert (p.binary is not None) == (writer is binary)
                writer.write(cur, p)
                conn.commit()
                if mode == "upsert":  # again: every row goes through ON CONFLICT DO UPDATE
                    writer.write(cur, writer.prepare(batch))
                    conn.commit()
        got, want = _texts(conn, "via_binary"), _texts(conn, "via_csv")
    for column in want:
        assert got[column] == want[column], column
    # and CSV's values are the right ones, not merely the same ones
    assert want["tz"][:2] == ["0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00"]
    assert want["tzms"][0] == "2024-02-29 12:00:00.123+00"
    assert want["nf"][:9] == ["1.5", "0.1", "123456", "1" + "0" * 300, "0", "NaN", "Infinity",
                              "-Infinity", "0.00000015"]
    assert want["f8"][:8] == ["0.1", "-0", "1e+300", "-1e+300", "NaN", "Infinity", "-Infinity",
                              "5e-324"]
    assert want["n52"][:4] == ["1.01", "999.99", "-0.13", "0.00"]
    assert want["t"][:N - 1] == EDGE[:N - 1] and want["t"][-1] is None
    assert json.loads(str(want["jb"][3])) == json.loads(BIG_JSON) and want["jb"][0] == "{}"
    assert want["u"][:4] == ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"] * 4


def test_bytea_binary_keeps_any_bytes(pg_dsn: str) -> None:
    """Where CSV could not (raw bytes are not escape-format text, nor always UTF-8)."""
    values = [b"\x00\xff\x80", b"\\x41", b"\\\\", bytes(range(256)), None]
    batch = pa.RecordBatch.from_pydict({"by": pa.array(values, pa.binary())})
    with _connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE blobs (by bytea)")
        writer = RowWriter("public", "blobs", "append", [])
        writer.inspect(cur)
        writer.write(cur, writer.prepare(batch))
        assert [r for (r,) in cur.execute("SELECT by FROM blobs")] == values


def test_an_unsupported_column_type_falls_back_to_csv_logged_once(
        pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    batch = pa.RecordBatch.from_pydict({"name": ["a", "b"], "addr": ["10.0.0.1", "::1"]})
    with _connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE hosts (name text, addr inet)")
        writer = RowWriter("public", "hosts", "append", [])
        with caplog.at_level(logging.WARNING, "veltrix_ray.sink.binary"):
            writer.inspect(cur, batch.schema)
            for _ in range(3):
                p = writer.prepare(batch)
                assert p.binary is None
                writer.write(cur, p)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == ["COPY into public.hosts uses CSV, not binary: column 'addr' is inet,"
                            " which the binary encoder cannot write from Arrow string"]
        assert cur.execute("SELECT count(*), count(DISTINCT addr) FROM hosts").fetchone() == (
            6, 2)


def test_the_sink_chooses_binary_at_setup_for_the_shipped_and_test_tables(pg_dsn: str) -> None:
    """The standard event table (created by setup) and the user table of the row-isolation
    tests (test_rejected_rows): all their columns go as binary."""
    standard = pa.schema([("event_id", pa.string()), ("ts", pa.timestamp("us", "UTC")),
                          ("user_id", pa.int64()), ("kind", pa.string()),
                          ("amount", pa.float64()), ("country", pa.string()),
                          ("payload", pa.string(), True, {JSON_FIELD: b"1"}),
                          ("_kafka_offset", pa.int64())])
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(USER_TABLE)
    for table, schema in (("events", standard), ("ev", EVENTS)):
        s = PostgresSink(pg_dsn, db_schema="public", table=table, pipeline=table, topic="t")
        try:
            s.setup(schema)
            assert s.rows.inspected
            assert s.rows.plan(to_written(pa.RecordBatch.from_pylist([], schema)).schema)
        finally:
            s.close()


# one real error per kind: binary COPY names the failing tuple (1-based) as CSV names its line
KINDS = {"22001": ("country", "DEU"), "22003": ("price", 123456.0), "22021": ("note", "D\x00E"),
         "23502": ("country", None), "23514": ("amount", 1e13), "23505": ("event_id", "x0"),
         "22P02": ("payload", "{not json")}


@pytest.mark.parametrize("state", sorted(KINDS))
@pytest.mark.parametrize("line", [2, 4])
def test_binary_copy_names_the_failing_tuple(pg_dsn: str, state: str, line: int) -> None:
    column, value = KINDS[state]
    rows = [{"event_id": f"x{i}", "country": "DE", "amount": 1.0, "note": "n", "price": 1.5,
             "payload": "{}"} for i in range(4)]
    rows[line - 1][column] = value
    batch = pa.RecordBatch.from_pylist(rows)
    with _connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE ev (event_id text UNIQUE, country varchar(2) NOT NULL, "
                    "amount float8 CHECK (amount < 1e12), note text, price numeric(5,2), "
                    "payload jsonb)")
        conn.commit()
        writer = RowWriter("public", "ev", "append", [])
        writer.inspect(cur)
        p = writer.prepare(batch)
        assert p.binary is not None and p.plain
        with pytest.raises(psycopg.Error) as caught:
            writer.write(cur, p)
    assert caught.value.sqlstate == state and is_data_error(caught.value)
    assert copy_line(caught.value, "ev") == line


def test_a_batch_binary_cannot_carry_goes_as_csv(pg_dsn: str) -> None:
    """A string uuid_in rejects: the batch goes as CSV, so PostgreSQL names that row."""
    batch = pa.RecordBatch.from_pydict({"id": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                                               "not-a-uuid", None]})
    with _connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE ids (id uuid)")
        writer = RowWriter("public", "ids", "append", [])
        writer.inspect(cur)
        assert writer.plan(batch.schema) is not None
        p = writer.prepare(batch)
        assert p.binary is None
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
            writer.write(cur, p)
        assert copy_line(caught.value, "ids") == 2
    plan = choose(pa.schema([("t", pa.timestamp("ns"))]), {"t": "timestamp with time zone"}, "x")
    assert plan is not None
    with pytest.raises(NotEncodable):  # a nanosecond CSV would have PostgreSQL round
        plan.encode(pa.table({"t": pa.array([1], pa.timestamp("ns"))}))


def test_a_changed_column_type_is_no_row_data_error(pg_dsn: str) -> None:
    """Binary data for the old type would reject every row: fail the batch instead."""
    batch = pa.RecordBatch.from_pydict({"n": pa.array([1, 2], pa.int64())})
    with _connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE nums (n bigint)")
        writer = RowWriter("public", "nums", "append", [])
        writer.inspect(cur)
        cur.execute("ALTER TABLE nums ALTER n TYPE integer")
        with pytest.raises(psycopg.Error) as caught:
            writer.write(cur, writer.prepare(batch))
    assert caught.value.sqlstate == "22P03" and not is_data_error(caught.value)


@pytest.mark.parametrize("text", ["0", "-0", "1.5", "1e+300", "1.5e-7", "-123.456", "10000",
                                  "0.0001", "12345678.87654321", "nan", "inf", "-inf"])
def test_numeric_bytes_are_what_numeric_in_reads(pg_dsn: str, text: str) -> None:
    values = pa.table({"x": pa.array([numeric_bytes(text)], pa.binary())})
    encoder = pgpq.ArrowToPostgresBinaryEncoder(values.schema)  # bytes as they are
    with _connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE n (x numeric)")
        with cur.copy("COPY n FROM STDIN (FORMAT binary)") as cp:
            cp.write(encoder.write_header() + encoder.write_batch(values.to_batches()[0])
                     + encoder.finish())
        assert cur.execute("SELECT x::text FROM n").fetchone() == cur.execute(
            "SELECT %s::numeric::text", (text,)).fetchone()


def test_a_worker_sink_without_setup_chooses_binary_at_its_first_write(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    formats: list[bool] = []
    apply = RowWriter._apply

    def spy(self: RowWriter, cur: psycopg.Cursor, data: bytes, names: list[str],
            binary: bool) -> None:
        formats.append(binary)
        apply(self, cur, data, names, binary)

    monkeypatch.setattr(RowWriter, "_apply", spy)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(USER_TABLE)
    coordinator = sink(pg_dsn, "ev")
    worker = sink(pg_dsn, "ev")
    try:
        coordinator.setup(EVENTS)
        worker.claim([0])
        assert not worker.rows.inspected
        wb, _ = batch_of([(0, o, good(f"e{o}", note="ünï\n")) for o in range(3)])
        assert worker.write(wb) == []
        assert worker.rows.inspected and formats == [True]
    finally:
        coordinator.close()
        worker.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ev WHERE note = 'ünï\n'").fetchone() == (3,)
