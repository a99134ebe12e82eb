"""The PostgreSQL sink against a real PostgreSQL: DDL, compatibility, quoting, upsert."""

from __future__ import annotations

import psycopg
import pyarrow as pa
import pytest

from veltrix_ray.contracts import Advance, DeadLetter, WriteBatch
from veltrix_ray.errors import ConfigError
from veltrix_ray.sink import PostgresSink

SCHEMA = pa.schema([pa.field("user_id", pa.int64(), nullable=False),
                    pa.field("amount", pa.float64()), pa.field("_kafka_offset", pa.int64())])


def sink(dsn: str, table: str = "t", **kw: object) -> PostgresSink:
    return PostgresSink(dsn, db_schema="public", table=table, pipeline="p", topic="topic",
                        **kw)  # type: ignore[arg-type]


def test_hostile_identifiers_are_quoted_not_executed(pg_dsn: str) -> None:
    name = 'ev"; DROP TABLE veltrix_offsets; --'
    s = sink(pg_dsn, table=name)
    try:
        s.setup(SCHEMA)
        claim = s.claim([0])[0]
        batch = pa.RecordBatch.from_pylist([{"user_id": 1, "amount": 2.5, "_kafka_offset": 0}],
                                           SCHEMA)
        s.write(WriteBatch(batch, [], [Advance(0, None, 1, claim.epoch)]))
    finally:
        s.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute('SELECT user_id, amount FROM "ev""; DROP TABLE veltrix_offsets; --"'
                            ).fetchall() == [(1, 2.5)]
        assert conn.execute("SELECT next_offset FROM veltrix_offsets").fetchone() == (1,)


def test_incompatible_existing_table_names_the_column(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE t (user_id bigint, amount text)")
    with pytest.raises(ConfigError, match=r"column 'amount' of public.t is text, but the "
                                          r"pipeline writes double precision"):
        sink(pg_dsn).setup(SCHEMA)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DROP TABLE t")
        conn.execute("CREATE TABLE t (user_id bigint)")
    with pytest.raises(ConfigError, match=r"table public.t has no column 'amount'"):
        sink(pg_dsn).setup(SCHEMA)


def test_upsert_into_a_users_table_with_extra_columns(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE t (id bigserial NOT NULL, user_id bigint PRIMARY KEY, "
                     "amount double precision, seen timestamptz NOT NULL DEFAULT now())")
    s = sink(pg_dsn, mode="upsert", key=["user_id"])
    try:
        s.setup(SCHEMA)
        epoch = s.claim([0])[0].epoch
        rows = [{"user_id": u, "amount": float(i), "_kafka_offset": i}
                for i, u in enumerate([1, 2, 1, 3, 1])]
        bad = [DeadLetter(0, 5, b"k", b"\xff", "value is not valid UTF-8")]
        s.write(WriteBatch(pa.RecordBatch.from_pylist(rows, SCHEMA), bad,
                           [Advance(0, None, 6, epoch)]))
        s.write(WriteBatch(pa.RecordBatch.from_pylist(
            [{"user_id": 2, "amount": 9.0, "_kafka_offset": 6}], SCHEMA), [],
            [Advance(0, 6, 7, epoch)]))
    finally:
        s.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT user_id, amount FROM t ORDER BY user_id").fetchall() == [
            (1, 4.0), (2, 9.0), (3, 3.0)]
        assert conn.execute('SELECT partition, "offset", key, value, error FROM '
                            "veltrix_dead_letters").fetchall() == [
            (0, 5, b"k", b"\xff", "value is not valid UTF-8")]


def test_upsert_without_unique_key_is_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE t (user_id bigint, amount double precision)")
    with pytest.raises(ConfigError, match=r"no PRIMARY KEY or UNIQUE index on \(user_id\)"):
        sink(pg_dsn, mode="upsert", key=["user_id"]).setup(SCHEMA)


def test_an_application_role_without_database_create_can_set_up(pg_dsn: str) -> None:
    role = f"app_{pg_dsn.rsplit('/', 1)[1]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
    app_dsn = pg_dsn.replace("://postgres@", f"://{role}@")
    s = sink(app_dsn)
    try:
        s.setup(SCHEMA)  # the schema exists: no CREATE on the database needed
        assert s.claim([0])[0].epoch == 1
    finally:
        s.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_an_offsets_table_without_counters_is_upgraded(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE veltrix_offsets (pipeline text NOT NULL, topic text NOT "
                     "NULL, partition integer NOT NULL, next_offset bigint, owner_epoch bigint "
                     "NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now(), "
                     "PRIMARY KEY (pipeline, topic, partition))")
        conn.execute("INSERT INTO veltrix_offsets VALUES ('p', 'topic', 0, 7, 3)")
    s = sink(pg_dsn)
    try:
        s.setup(SCHEMA)
        epoch = s.claim([0])[0].epoch
        batch = pa.RecordBatch.from_pylist([{"user_id": 1, "amount": 1.0, "_kafka_offset": 7}],
                                           SCHEMA)
        s.write(WriteBatch(batch, [], [Advance(0, 7, 8, epoch, rows=1)]))
        assert s.totals()[0].next_offset == 8 and s.totals()[0].rows == 1
    finally:
        s.close()


def test_connections_get_keepalives_unless_the_dsn_sets_them(pg_dsn: str) -> None:
    s = sink(pg_dsn + "?keepalives_idle=42")
    try:
        params = psycopg.conninfo.conninfo_to_dict(s.db.conninfo())
        assert params["keepalives_idle"] == "42" and params["keepalives"] == "1"
        assert params["application_name"] == "veltrix-ray"
        s.setup(SCHEMA)  # and it connects
    finally:
        s.close()
