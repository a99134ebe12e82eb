"""Rows PostgreSQL rejects for a data reason are dead-lettered in the batch's transaction and
the rest commits: append and upsert, against a real PostgreSQL and a user-made table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from veltrix_ray.contracts import Advance, DeadLetter, Fetched, Reason, WriteBatch
from veltrix_ray.errors import SinkError
from veltrix_ray.sink import PostgresSink
from veltrix_ray.sink.rows import RowWriter, copy_line, describe, encode, to_written

EVENTS = pa.schema([pa.field("event_id", pa.string(), nullable=False),
                    pa.field("country", pa.string(), nullable=False),
                    pa.field("amount", pa.float64()), pa.field("note", pa.string()),
                    pa.field("price", pa.float64()), pa.field("ref", pa.int64()),
                    pa.field("_kafka_partition", pa.int32()),
                    pa.field("_kafka_offset", pa.int64())])

USER_TABLE = ("CREATE TABLE refs (id bigint PRIMARY KEY); INSERT INTO refs VALUES (1); "
              "CREATE TABLE ev (event_id text, country varchar(2) NOT NULL, "
              "amount double precision CHECK (amount < 1e12), note text, price numeric(5,2), "
              "ref bigint REFERENCES refs (id)); CREATE UNIQUE INDEX ev_event_id ON ev (event_id)")


def sink(dsn: str, table: str, pipeline: str = "p", **kw: Any) -> PostgresSink:
    return PostgresSink(dsn, db_schema="public", table=table, pipeline=pipeline, topic="topic",
                        **kw)


def good(event_id: str, **kw: Any) -> dict[str, Any]:
    return {"event_id": event_id, "country": "DE", "amount": 1.0, "note": "n", "price": 1.5,
            "ref": 1} | kw


def batch_of(rows: Sequence[tuple[int, int, dict[str, Any]]], schema: pa.Schema = EVENTS,
             dead: Sequence[tuple[int, int]] = ()) -> tuple[WriteBatch, Fetched]:
    """(partition, offset, row) per record, grouped by partition in order; `dead`: records
    dead-lettered upstream (decode), given as (partition, offset)."""
    records = sorted([(p, o, r) for p, o, r in rows] + [(p, o, None) for p, o in dead],
                     key=lambda x: (x[0], x[1]))
    fetched = Fetched([p for p, _, _ in records], [o for _, o, _ in records],
                      [f"k{o}".encode() for _, o, _ in records],
                      [raw(r) if r is not None else b"\xff" for _, _, r in records],
                      [0] * len(records), topic="topic")
    data = [r | {"_kafka_partition": p, "_kafka_offset": o} for p, o, r in rows]
    letters = [DeadLetter(p, o, f"k{o}".encode(), b"\xff", "not UTF-8") for p, o in dead]
    advances = []
    for part in sorted({p for p, _, _ in records}):
        offs = [o for p, o, _ in records if p == part]
        advances.append(Advance(part, None, max(offs) + 1, 1,
                                rows=sum(1 for p, _, _ in rows if p == part),
                                dead_letters=sum(1 for p, _ in dead if p == part)))
    return WriteBatch(pa.RecordBatch.from_pylist(data, schema), letters, advances,
                      fetched), fetched


def raw(row: dict[str, Any]) -> bytes:
    return json.dumps(row).encode()


def dead_letters(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute('SELECT partition, "offset", key, value, reason, error FROM '
                            'veltrix_dead_letters ORDER BY partition, "offset"').fetchall()


def counters(dsn: str) -> dict[int, tuple[int, int, int]]:
    with psycopg.connect(dsn) as conn:
        return {p: (n, r, d) for p, n, r, d in conn.execute(
            "SELECT partition, next_offset, rows_total, dead_letters_total "
            "FROM veltrix_offsets").fetchall()}


# the poison rows of the append test: offset -> (row, SQLSTATE)
POISON = {
    2: (good("e2", country="DEU"), "22001"),  # value too long for varchar(2)
    4: (good("e4", amount=1e13), "23514"),  # CHECK
    5: (good("e5", note="D\x00E"), "22021"),  # NUL byte
    7: (good("e7", country=None), "23502"),  # NOT NULL
    9: (good("e1"), "23505"),  # the user's unique index: e1 is offset 1
    11: (good("e11", ref=99), "23503"),  # foreign key
    12: (good("e12", price=123456.0), "22003"),  # numeric(5,2) overflow
}


def test_append_dead_letters_exactly_the_rows_postgres_rejects(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(USER_TABLE)
    rows = [(0, o, POISON[o][0] if o in POISON else good(f"e{o}")) for o in range(15)]
    rows += [(1, o, good(f"p1-{o}", country="XYZ" if o == 3 else "FR")) for o in range(5)]
    wb, fetched = batch_of(rows, dead=[(0, 15)])
    s = sink(pg_dsn, "ev")
    try:
        s.setup(EVENTS)
        assert s.claim([0, 1]) and s.claim([0, 1])[0].epoch == 2
        wb.advances[:] = [Advance(a.partition, None, a.new, 2, a.rows, a.dead_letters)
                          for a in wb.advances]
        returned = s.write(wb)
    finally:
        s.close()
    bad = {(0, o): code for o, (_, code) in POISON.items()} | {(1, 3): "22001"}
    with psycopg.connect(pg_dsn) as conn:
        assert sorted(r for (r,) in conn.execute("SELECT event_id FROM ev")) == sorted(
            r["event_id"] for p, o, r in rows if (p, o) not in bad)
    letters = dead_letters(pg_dsn)
    assert [(p, o, k, v, reason) for p, o, k, v, reason, _ in letters] == sorted(
        [(p, o, f"k{o}".encode(), raw(r), "sink") for p, o, r in rows if (p, o) in bad]
        + [(0, 15, b"k15", b"\xff", "decode")])
    for p, o, _, _, reason, error in letters:
        if reason == "sink":
            assert error.startswith(f"PostgreSQL rejected the row: {bad[p, o]} "), error
    assert "value too long for type character varying(2)" in letters[0][5]
    assert [(d.partition, d.offset, d.reason, d.value) for d in returned] == [
        (p, o, Reason.SINK, raw(r)) for p, o, r in rows if (p, o) in bad]
    # each names its record's position in the fetch (offsets start at 0 in each partition)
    assert [d.index for d in returned] == [fetched.spans[d.partition][0] + d.offset
                                           for d in returned]
    assert counters(pg_dsn) == {0: (16, 15 - 7, 1 + 7), 1: (5, 4, 1)}


def test_upsert_keeps_the_latest_good_row_per_key(pg_dsn: str) -> None:
    schema = pa.schema([pa.field("user_id", pa.int64(), nullable=False),
                        pa.field("country", pa.string(), nullable=False),
                        pa.field("amount", pa.float64())])
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE u (user_id bigint PRIMARY KEY, country varchar(2) NOT NULL, "
                     "amount double precision CHECK (amount < 1e12))")
        conn.execute("INSERT INTO u VALUES (6, 'PT', 0), (7, 'NL', 0)")
    plan = [(1, "DE", 1), (1, "FR", 2), (1, "DEU", 3),  # latest too long: FR wins
            (2, "DE", 4), (2, "IT", 1e13),  # latest fails CHECK (in the INSERT): DE wins
            (3, "DE", 5),  # clean
            (4, "D\x00E", 6),  # NUL, the only row: key 4 stays absent
            (5, None, 7), (5, "ES", 8),  # a bad row superseded by a good one: never tried
            (6, "XX", 1e13), (6, "YYY", 10),  # all bad: the stored row stays
            ]
    rows = [(0, o, {"user_id": u, "country": c, "amount": float(a)})
            for o, (u, c, a) in enumerate(plan)]
    wb, fetched = batch_of(rows, schema)
    # the origin route: rows carry no Kafka columns, `origin` says where each came from
    wb.origin = list(range(len(rows)))
    s = sink(pg_dsn, "u", mode="upsert", key=["user_id"])
    try:
        s.setup(schema)
        s.claim([0])
        returned = s.write(wb)
        # a clean batch afterwards: nothing rejected
        wb2, _ = batch_of([(0, 11, {"user_id": 3, "country": "AT", "amount": 9.0})], schema)
        wb2.advances[:] = [Advance(0, 11, 12, 1, rows=1)]
        assert s.write(wb2) == []
    finally:
        s.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT user_id, country, amount FROM u ORDER BY 1").fetchall() == [
            (1, "FR", 2.0), (2, "DE", 4.0), (3, "AT", 9.0), (5, "ES", 8.0), (6, "PT", 0.0),
            (7, "NL", 0.0)]
    bad = {2: "22001", 4: "23514", 6: "22021", 9: "23514", 10: "22001"}
    letters = dead_letters(pg_dsn)
    assert [(p, o, v) for p, o, _, v, _, _ in letters] == [
        (0, o, raw(rows[o][2])) for o in sorted(bad)]
    assert all(e.startswith(f"PostgreSQL rejected the row: {bad[o]} ")
               for _, o, _, _, _, e in letters)
    assert sorted(d.offset for d in returned) == sorted(bad)
    assert counters(pg_dsn) == {0: (12, 11 - 5 + 1, 5)}


def test_an_unknown_origin_is_an_error_that_says_to_keep_the_kafka_columns(pg_dsn: str) -> None:
    schema = pa.schema([pa.field("country", pa.string())])
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE c (country varchar(2))")
    wb, _ = batch_of([(0, 0, {"country": "DE"}), (0, 1, {"country": "DEU"})], schema)
    s = sink(pg_dsn, "c")
    try:
        s.setup(schema)
        s.claim([0])
        with pytest.raises(SinkError, match="_kafka_partition / _kafka_offset"):
            s.write(wb)
        assert s.totals()[0].next_offset is None  # nothing applied
    finally:
        s.close()


def test_a_clean_batch_never_isolates(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("isolation ran on a clean batch")

    monkeypatch.setattr(RowWriter, "isolate", refuse)
    monkeypatch.setattr(RowWriter, "_attempt", refuse)  # every savepoint goes through it
    for mode in ("append", "upsert"):
        s = sink(pg_dsn, mode, pipeline=mode, mode=mode, key=["event_id"])
        try:
            s.setup(EVENTS)
            s.claim([0])
            wb, _ = batch_of([(0, o, good(f"e{o % 7}")) for o in range(20)])
            assert s.write(wb) == []
        finally:
            s.close()


def test_a_transient_error_during_isolation_replays_it_all(pg_dsn: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    isolate = RowWriter.isolate
    calls = []

    def flaky(self: RowWriter, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return isolate(self, *args)

    monkeypatch.setattr(RowWriter, "isolate", flaky)
    schema = pa.schema([pa.field("country", pa.string()), pa.field("_kafka_partition", pa.int32()),
                        pa.field("_kafka_offset", pa.int64())])
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE c (country varchar(2))")
    wb, _ = batch_of([(0, o, {"country": "DEU" if o == 1 else "DE"}) for o in range(3)], schema)
    s = sink(pg_dsn, "c", initial_backoff_s=0.01)
    try:
        s.setup(schema)
        s.claim([0])
        assert [d.offset for d in s.write(wb)] == [1]
    finally:
        s.close()
    assert len(calls) == 2
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM c").fetchone() == (2,)
    assert counters(pg_dsn) == {0: (3, 2, 1)}


def test_a_reprocessed_dead_letter_replaces_the_old_one(pg_dsn: str) -> None:
    schema = pa.schema([pa.field("country", pa.string())])
    s = sink(pg_dsn, "c")
    try:
        s.setup(schema)
        for error in ("first", "second"):
            epoch = s.claim([0])[0].epoch
            s.write(WriteBatch(pa.RecordBatch.from_pylist([], schema),
                               [DeadLetter(0, 0, b"k", b"v-" + error.encode(), error,
                                           Reason.TRANSFORM)],
                               [Advance(0, None, 1, epoch, dead_letters=1)]))
            with psycopg.connect(pg_dsn) as conn:  # someone resets the offsets to reprocess
                conn.execute("DELETE FROM veltrix_offsets")
    finally:
        s.close()
    assert [(p, o, v, r, e) for p, o, _, v, r, e in dead_letters(pg_dsn)] == [
        (0, 0, b"v-second", "transform", "second")]


def test_an_old_dead_letter_table_gets_the_reason_column(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE veltrix_dead_letters (id bigserial PRIMARY KEY, pipeline "
                     "text NOT NULL, topic text NOT NULL, partition integer NOT NULL, "
                     "\"offset\" bigint NOT NULL, key bytea, value bytea, error text NOT NULL, "
                     "failed_at timestamptz NOT NULL DEFAULT now(), "
                     "UNIQUE (pipeline, topic, partition, \"offset\"))")
        conn.execute("INSERT INTO veltrix_dead_letters (pipeline, topic, partition, \"offset\", "
                     "error) VALUES ('p', 'topic', 0, 0, 'old')")
    s = sink(pg_dsn, "c")
    try:
        s.setup(pa.schema([pa.field("country", pa.string())]))
        s.setup(pa.schema([pa.field("country", pa.string())]))  # twice: nothing to add
        epoch = s.claim([0])[0].epoch
        s.write(WriteBatch(pa.RecordBatch.from_pylist([], pa.schema([("country", pa.string())])),
                           [DeadLetter(0, 1, None, b"x", "bad")], [Advance(0, None, 2, epoch)]))
    finally:
        s.close()
    assert [(o, r, e) for _, o, _, _, r, e in dead_letters(pg_dsn)] == [
        (0, None, "old"), (1, "decode", "bad")]


def test_append_ignores_the_key(pg_dsn: str) -> None:
    schema = pa.schema([pa.field("user_id", pa.int64()), pa.field("amount", pa.float64())])
    s = sink(pg_dsn, "a", mode="append", key=["user_id"])
    try:
        s.setup(schema)
        epoch = s.claim([0])[0].epoch
        s.write(WriteBatch(pa.RecordBatch.from_pylist(
            [{"user_id": 1, "amount": 1.0}, {"user_id": 1, "amount": 2.0},
             {"user_id": None, "amount": 3.0}], schema), [], [Advance(0, None, 3, epoch)]))
    finally:
        s.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'a'::regclass"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM a").fetchone() == (3,)


# one real error per kind: the line COPY reports is the failing row's (1-based)
KINDS = {"22001": ("country", "DEU"), "22003": ("price", 123456.0), "22021": ("note", "D\x00E"),
         "23502": ("country", None), "23514": ("amount", 1e13), "23505": ("event_id", "x0")}


@pytest.mark.parametrize("state", sorted(KINDS))
@pytest.mark.parametrize("line", [2, 4])
def test_copy_reports_the_failing_rows_line(pg_dsn: str, state: str, line: int) -> None:
    column, value = KINDS[state]
    rows = [good(f"x{i}") | {"_kafka_partition": 0, "_kafka_offset": i} for i in range(5)]
    rows[line - 1][column] = value
    csv = encode(to_written(pa.RecordBatch.from_pylist(rows, EVENTS)))
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(USER_TABLE)
        with pytest.raises(psycopg.Error) as caught, conn.cursor() as cur, cur.copy(
                "COPY ev (event_id, country, amount, note, price, ref) FROM STDIN "
                "(FORMAT csv)") as cp:
            cp.write(csv)
    assert caught.value.sqlstate == state
    assert copy_line(caught.value, "ev") == line
    assert copy_line(caught.value, "other") is None
    assert describe(caught.value).startswith(f"PostgreSQL rejected the row: {state} ")


def test_a_foreign_key_names_no_line(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(USER_TABLE)
        with pytest.raises(psycopg.errors.ForeignKeyViolation) as caught, conn.cursor() as cur, \
                cur.copy("COPY ev (event_id, country, ref) FROM STDIN (FORMAT csv)") as cp:
            cp.write(b"a,DE,1\nb,DE,99\n")
    assert copy_line(caught.value, "ev") is None  # checked after the last line: bisected
