"""PostgreSQL sink: one transaction per batch = fenced offset advance + rows (COPY) + dead letters.

Offsets live in `veltrix_offsets`, beside the data they describe, so a batch takes effect
exactly once: a retried or replayed batch either finds its offsets already advanced or
applies everything again from scratch."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Advance, Claim, DeadLetter, Totals, WriteBatch
from veltrix_ray.errors import ConfigError, FencedError, SinkError
from veltrix_ray.sink.ddl import incompatibilities, pg_type

log = logging.getLogger(__name__)
T = TypeVar("T")

OFFSETS = "veltrix_offsets"
DEAD_LETTERS = "veltrix_dead_letters"
_SEQ = "_veltrix_seq"

# errors after which the same transaction, applied again on a new connection, can succeed
TRANSIENT: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
)


def written(schema: pa.Schema) -> pa.Schema:
    """Columns starting with '_' (Kafka metadata, internal) are not written."""
    return pa.schema([f for f in schema if not f.name.startswith("_")])


class PostgresSink:
    def __init__(self, dsn: str, *, db_schema: str, table: str, pipeline: str, topic: str,
                 mode: str = "append", key: Sequence[str] = (), connect_timeout_s: int = 10,
                 retry_attempts: int = 20, initial_backoff_s: float = 0.2,
                 max_backoff_s: float = 5.0, application_name: str = "veltrix-ray") -> None:
        self.dsn = dsn
        self.db_schema = db_schema
        self.table = table
        self.pipeline = pipeline
        self.topic = topic
        self.mode = mode
        self.key = list(key)
        self.connect_timeout_s = connect_timeout_s
        self.retry_attempts = retry_attempts
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.application_name = application_name
        self._conn: psycopg.Connection | None = None
        self._target = sql.Identifier(db_schema, table)
        self._offsets = sql.Identifier(db_schema, OFFSETS)
        self._dead = sql.Identifier(db_schema, DEAD_LETTERS)

    @property
    def table_name(self) -> str:
        return f"{self.db_schema}.{self.table}"

    # -- connections and retries -------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._conninfo())
            # COPY gets timestamps as UTC wall-clock text: writing zone suffixes is 10x slower
            conn.execute("SET TIME ZONE 'UTC'")
            conn.commit()
            self._conn = conn
        return self._conn

    def _conninfo(self) -> str:
        """The DSN plus our defaults for what it leaves unset: TCP keepalives turn a silently
        dead server or network into an error (then a retry) instead of a hang."""
        params = conninfo_to_dict(self.dsn)
        defaults: dict[str, str | int] = {"connect_timeout": self.connect_timeout_s,
                    "application_name": self.application_name, "keepalives": 1,
                    "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
        return make_conninfo(self.dsn, **{k: v for k, v in defaults.items() if k not in params})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _retrying(self, what: str, fn: Callable[[psycopg.Connection], T]) -> T:
        delay = self.initial_backoff_s
        for attempt in range(1, self.retry_attempts + 1):
            try:
                return fn(self._connect())
            except TRANSIENT as exc:
                self.close()
                if attempt == self.retry_attempts:
                    raise SinkError(
                        f"{what}: PostgreSQL still failing after {attempt} attempts "
                        f"({type(exc).__name__}: {str(exc).strip()}). Check that PostgreSQL is "
                        "up and reachable with postgres.dsn, or raise postgres.retry.attempts."
                    ) from exc
                log.warning("%s: transient %s (attempt %d/%d), retrying in %.1fs: %s", what,
                            type(exc).__name__, attempt, self.retry_attempts, delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    @contextmanager
    def _tx(self, conn: psycopg.Connection) -> Iterator[psycopg.Cursor]:
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    # -- setup ------------------------------------------------------------------------------

    def setup(self, schema: pa.Schema) -> None:
        """Create the target (from the Arrow schema), offsets and dead-letter tables if missing;
        check an existing target can take the rows."""
        cols = written(schema)
        for k in self.key:
            if k not in cols.names:
                raise ConfigError(f"pipeline.key names {k!r}, which is not among the written "
                                  f"columns {cols.names}: fix pipeline.key or the transforms.")
        if self.mode == "upsert" and not self.key:
            raise ConfigError("pipeline.mode=upsert needs pipeline.key (the columns that "
                              "identify a row), e.g. pipeline.key=[user_id].")

        def run(conn: psycopg.Connection) -> None:
            with self._tx(conn) as cur:
                # one pipeline at a time creates the shared tables
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('veltrix-ray setup'))")
                # CREATE SCHEMA needs CREATE on the database even when the schema exists
                cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.db_schema,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.db_schema)))
                cur.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, topic text NOT NULL, "
                    "partition integer NOT NULL, next_offset bigint, owner_epoch bigint NOT NULL "
                    "DEFAULT 0, rows_total bigint NOT NULL DEFAULT 0, dead_letters_total bigint "
                    "NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (pipeline, topic, partition))").format(self._offsets))
                self._upgrade_offsets(cur)
                cur.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, pipeline text NOT "
                    "NULL, topic text NOT NULL, partition integer NOT NULL, \"offset\" bigint NOT "
                    "NULL, key bytea, value bytea, error text NOT NULL, failed_at timestamptz NOT "
                    "NULL DEFAULT now(), UNIQUE (pipeline, topic, partition, \"offset\"))"
                ).format(self._dead))
                existing = self._columns(cur)
                if existing:
                    problems = incompatibilities(cols, self.table_name, existing, self.key)
                    if self.mode == "upsert" and not self._has_unique_key(cur):
                        problems.append(f"table {self.table_name} has no PRIMARY KEY or UNIQUE "
                                        f"index on ({', '.join(self.key)}), which upsert needs")
                    if problems:
                        raise ConfigError("The existing target table does not fit the pipeline "
                                          "(pipeline.table=" + self.table + "):\n  - " +
                                          "\n  - ".join(problems))
                    return
                defs = [sql.SQL("{} {}{}").format(
                    sql.Identifier(f.name), sql.SQL(pg_type(f)),
                    sql.SQL("" if f.nullable and f.name not in self.key else " NOT NULL"))
                    for f in cols]
                if self.key:
                    defs.append(sql.SQL("PRIMARY KEY ({})").format(
                        sql.SQL(", ").join(map(sql.Identifier, self.key))))
                cur.execute(sql.SQL("CREATE TABLE {} ({})").format(
                    self._target, sql.SQL(", ").join(defs)))

        self._retrying(f"setting up {self.table_name}", run)

    def _upgrade_offsets(self, cur: psycopg.Cursor) -> None:
        """Add the counters to an offsets table made before they existed (only then: ALTER
        TABLE would lock out the other pipelines' commits even when it has nothing to do)."""
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                    "AND table_name = %s", (self.db_schema, OFFSETS))
        have = {name for (name,) in cur.fetchall()}
        for column in ("rows_total", "dead_letters_total"):
            if column not in have:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint NOT NULL DEFAULT 0")
                            .format(self._offsets, sql.Identifier(column)))

    def _columns(self, cur: psycopg.Cursor) -> dict[str, tuple[str, bool]]:
        cur.execute("SELECT column_name, data_type, is_nullable = 'YES' FROM "
                    "information_schema.columns WHERE table_schema = %s AND table_name = %s",
                    (self.db_schema, self.table))
        return {name: (kind, nullable) for name, kind, nullable in cur.fetchall()}

    def _has_unique_key(self, cur: psycopg.Cursor) -> bool:
        cur.execute(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid "
            "AND i.indpred IS NULL AND i.indexprs IS NULL GROUP BY i.indexrelid",
            (sql.Identifier(self.db_schema, self.table).as_string(),))
        return sorted(self.key) in [row[0] for row in cur.fetchall()]

    # -- ownership --------------------------------------------------------------------------

    def claim(self, partitions: Sequence[int]) -> dict[int, Claim]:
        """Take ownership: bump each partition's owner epoch so that any older owner is fenced."""

        def run(conn: psycopg.Connection) -> dict[int, Claim]:
            with self._tx(conn) as cur:
                cur.execute(sql.SQL(
                    "INSERT INTO {t} AS o (pipeline, topic, partition, owner_epoch) "
                    "SELECT %s, %s, p, 1 FROM unnest(%s::int[]) AS p "
                    "ON CONFLICT (pipeline, topic, partition) DO UPDATE "
                    "SET owner_epoch = o.owner_epoch + 1, updated_at = now() "
                    "RETURNING partition, next_offset, owner_epoch").format(t=self._offsets),
                    (self.pipeline, self.topic, list(partitions)))
                return {p: Claim(p, n, e) for p, n, e in cur.fetchall()}

        return self._retrying("claiming partitions", run)

    def totals(self) -> dict[int, Totals]:
        def run(conn: psycopg.Connection) -> dict[int, Totals]:
            with self._tx(conn) as cur:
                cur.execute(sql.SQL("SELECT partition, next_offset, rows_total, "
                                    "dead_letters_total FROM {} WHERE pipeline = %s "
                                    "AND topic = %s").format(self._offsets),
                            (self.pipeline, self.topic))
                return {p: Totals(n, r, d) for p, n, r, d in cur.fetchall()}

        return self._retrying("reading offsets", run)

    # -- the exactly-once write -------------------------------------------------------------

    def write(self, wb: WriteBatch) -> list[DeadLetter]:
        """Apply one batch in one transaction; FencedError if another owner took over."""
        batch, bad, advances = wb.rows, wb.dead_letters, wb.advances
        csv_rows = self._csv(batch) if batch.num_rows else b""
        attempt = 0

        def run(conn: psycopg.Connection) -> None:
            nonlocal attempt
            attempt += 1
            with self._tx(conn) as cur:
                if not self._advance(cur, advances):
                    fenced = self._fenced(cur, advances)
                    if attempt > 1 and not fenced:
                        return  # the previous attempt committed before its connection broke
                    raise FencedError(self._fenced_message(fenced or list(advances)))
                if csv_rows:
                    self._copy_rows(cur, written(batch.schema).names, csv_rows)
                if bad:
                    self._copy_dead(cur, bad)

        try:
            self._retrying(f"writing {batch.num_rows} rows to {self.table_name}", run)
        except psycopg.Error as exc:
            span = ", ".join(f"partition {a.partition} offsets "
                             f"{'start' if a.expected is None else a.expected}..{a.new - 1}"
                             for a in advances)
            raise SinkError(
                f"PostgreSQL rejected a batch for {self.table_name} ({span}): "
                f"{type(exc).__name__}: {str(exc).strip()}. This is not retried: fix the table "
                "or pipeline.columns / the transforms, then run again (the batch is replayed "
                "from the stored offsets)."
            ) from exc
        return []

    def _advance(self, cur: psycopg.Cursor, advances: Sequence[Advance]) -> bool:
        cur.execute(sql.SQL(
            "UPDATE {t} AS o SET next_offset = v.new, rows_total = o.rows_total + v.rows, "
            "dead_letters_total = o.dead_letters_total + v.dead, updated_at = now() "
            "FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], "
            "%s::bigint[]) AS v(partition, expected, new, epoch, rows, dead) "
            "WHERE o.pipeline = %s AND o.topic = %s AND o.partition = v.partition "
            "AND o.owner_epoch = v.epoch AND o.next_offset IS NOT DISTINCT FROM v.expected"
        ).format(t=self._offsets), (
            [a.partition for a in advances], [a.expected for a in advances],
            [a.new for a in advances], [a.epoch for a in advances],
            [a.rows for a in advances], [a.dead_letters for a in advances],
            self.pipeline, self.topic))
        return bool(cur.rowcount == len(advances))

    def _fenced(self, cur: psycopg.Cursor, advances: Sequence[Advance]) -> list[Advance]:
        """The advances that another owner prevents (empty: all were already applied)."""
        cur.execute(sql.SQL("SELECT partition, next_offset, owner_epoch FROM {} WHERE "
                            "pipeline = %s AND topic = %s").format(self._offsets),
                    (self.pipeline, self.topic))
        now = {p: (n, e) for p, n, e in cur.fetchall()}
        return [a for a in advances if now.get(a.partition) != (a.new, a.epoch)]

    def _fenced_message(self, fenced: Sequence[Advance]) -> str:
        parts = ", ".join(f"{a.partition} (epoch {a.epoch})" for a in fenced)
        return (f"pipeline {self.pipeline!r}, topic {self.topic!r}: partition(s) {parts} now "
                "belong to a newer owner; this worker's batch was rolled back and it drops "
                "those partitions. Nothing to fix unless two pipelines share the name "
                "pipeline.name.")

    def _csv(self, batch: pa.RecordBatch) -> bytes:
        out = written(batch.schema)
        table = pa.Table.from_batches([batch.select(out.names)])
        for i, f in enumerate(table.schema):
            if pa.types.is_timestamp(f.type) and f.type.tz is not None:
                # same instants, read back as UTC by the session's time zone (see _connect)
                naive = table.column(i).cast(pa.timestamp(f.type.unit))
                table = table.set_column(i, f.name, naive)
        if self.mode == "upsert":
            table = table.append_column(_SEQ, pa.array(range(table.num_rows), pa.int64()))
        buf = io.BytesIO()
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
        return buf.getvalue()

    def _copy_rows(self, cur: psycopg.Cursor, names: list[str], csv_rows: bytes) -> None:
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        if self.mode == "append":
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                    self._target, cols)) as cp:
                cp.write(csv_rows)
            return
        stage = sql.Identifier("veltrix_stage")
        # the written columns only, with the target's types and none of its constraints
        # (created in every transaction: a rolled-back one takes the table with it)
        cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {s} ON COMMIT DELETE ROWS AS "
                            "SELECT {cols}, NULL::bigint AS {q} FROM {t} WITH NO DATA").format(
            s=stage, cols=cols, q=sql.Identifier(_SEQ), t=self._target))
        with cur.copy(sql.SQL("COPY {} ({}, {}) FROM STDIN (FORMAT csv)").format(
                stage, cols, sql.Identifier(_SEQ))) as cp:
            cp.write(csv_rows)
        keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
        rest = [n for n in names if n not in self.key]
        action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(n)) for n in rest))
            if rest else sql.SQL("DO NOTHING"))
        # the latest row per key wins: rows arrive in offset order within each partition
        cur.execute(sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {s} "
            "ORDER BY {keys}, {q} DESC ON CONFLICT ({keys}) {action}").format(
            t=self._target, cols=cols, keys=keys, s=stage, q=sql.Identifier(_SEQ),
            action=action))

    def _copy_dead(self, cur: psycopg.Cursor, bad: Sequence[DeadLetter]) -> None:
        with cur.copy(sql.SQL("COPY {} (pipeline, topic, partition, \"offset\", key, value, "
                              "error) FROM STDIN").format(self._dead)) as cp:
            for b in bad:
                cp.write_row((self.pipeline, self.topic, b.partition, b.offset, b.key, b.value,
                              b.error))


def make_sink(settings: VeltrixConfig, application_name: str) -> PostgresSink:
    """The sink a pipeline's settings describe (the coordinator's and each worker's)."""
    s = settings
    return PostgresSink(s.postgres.dsn, db_schema=s.postgres.db_schema, table=s.pipeline.table,
                        pipeline=s.pipeline.name, topic=s.kafka.topic, mode=s.pipeline.mode,
                        key=s.pipeline.key, connect_timeout_s=s.postgres.connect_timeout_s,
                        retry_attempts=s.postgres.retry.attempts,
                        initial_backoff_s=s.postgres.retry.initial_backoff_s,
                        max_backoff_s=s.postgres.retry.max_backoff_s,
                        application_name=application_name)
