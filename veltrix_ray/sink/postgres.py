"""PostgreSQL sink: one transaction per batch = fenced offset advance + rows (COPY) + dead letters.

Offsets live in `veltrix_offsets`, beside the data they describe, so a batch takes effect
exactly once: a retried or replayed batch either finds its offsets already advanced or
applies everything again from scratch. The parts: connection (retries), offsets, rows,
dead letters, introspect (what an existing table looks like), ddl (types)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Claim, DeadLetter, Totals, WriteBatch, written
from veltrix_ray.errors import ConfigError, FencedError, SinkError
from veltrix_ray.sink.connection import Connector, transaction
from veltrix_ray.sink.ddl import incompatibilities, pg_type
from veltrix_ray.sink.deadletters import DeadLetters
from veltrix_ray.sink.introspect import columns, has_unique_key
from veltrix_ray.sink.offsets import OFFSETS, Offsets
from veltrix_ray.sink.rows import Prepared, Rejected, RowWriter, describe, is_data_error

__all__ = ["PostgresSink", "make_sink", "written"]


log = logging.getLogger(__name__)


class _RowsRejected(Exception):
    """The clean path's rows failed for a data reason: replay the transaction, isolating."""

    def __init__(self, cause: psycopg.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


class PostgresSink:
    """The OffsetSink of a pipeline writing into `db_schema.table`. `key` is the upsert key;
    in append mode it is ignored (no primary key is created, nothing is checked)."""

    def __init__(self, dsn: str, *, db_schema: str, table: str, pipeline: str, topic: str,
                 mode: str = "append", key: Sequence[str] = (), connect_timeout_s: int = 10,
                 max_elapsed_s: float | None = None, initial_backoff_s: float = 0.2,
                 max_backoff_s: float = 5.0, lock_timeout_s: float = 0,
                 idle_in_transaction_timeout_s: float = 0,
                 application_name: str = "veltrix-ray", evolve: bool = False) -> None:
        self.dsn = dsn
        self.evolve = evolve  # setup adds the nullable columns an existing target lacks
        self.db_schema = db_schema
        self.table = table
        self.pipeline = pipeline
        self.topic = topic
        self.mode = mode
        self.key = list(key)
        self.db = Connector(dsn, connect_timeout_s=connect_timeout_s,
                            max_elapsed_s=max_elapsed_s, initial_backoff_s=initial_backoff_s,
                            max_backoff_s=max_backoff_s, lock_timeout_s=lock_timeout_s,
                            idle_in_transaction_timeout_s=idle_in_transaction_timeout_s,
                            application_name=application_name)
        self.offsets = Offsets(db_schema, pipeline, topic)
        self.dead_letters = DeadLetters(db_schema, pipeline, topic)
        self.rows = RowWriter(db_schema, table, mode, self.key)
        self._target = sql.Identifier(db_schema, table)

    @property
    def table_name(self) -> str:
        return f"{self.db_schema}.{self.table}"

    @property
    def _upsert_key(self) -> list[str]:
        return self.key if self.mode == "upsert" else []

    def close(self) -> None:
        self.db.close()

    # -- setup ------------------------------------------------------------------------------

    def setup(self, schema: pa.Schema) -> None:
        """Create the target (from the Arrow schema), offsets and dead-letter tables if missing;
        check an existing target can take the rows."""
        cols = written(schema)
        key = self._upsert_key
        for k in key:
            if k not in cols.names:
                raise ConfigError(f"pipeline.key names {k!r}, which is not among the written "
                                  f"columns {cols.names}: fix pipeline.key or the transforms.")
        if self.mode == "upsert" and not key:
            raise ConfigError("pipeline.mode=upsert needs pipeline.key (the columns that "
                              "identify a row), e.g. pipeline.key=[user_id].")

        def run(conn: psycopg.Connection) -> None:
            with transaction(conn) as cur:
                # one pipeline at a time creates the shared tables
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('veltrix-ray setup'))")
                # CREATE SCHEMA needs CREATE on the database even when the schema exists
                cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.db_schema,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.db_schema)))
                self.offsets.create(cur)
                self.dead_letters.create(cur)
                existing = columns(cur, self.db_schema, self.table)
                missing = [f for f in cols if f.name not in existing and f.nullable]
                if existing and self.evolve and missing:  # pipeline.schema_evolution
                    cur.execute(sql.SQL("ALTER TABLE {} {}").format(
                        self._target, sql.SQL(", ").join(_adds(missing))))
                    log.warning("schema evolution: %s now has column(s) %s", self.table_name,
                                ", ".join(f.name for f in missing))
                    existing = columns(cur, self.db_schema, self.table)
                if existing:
                    problems = incompatibilities(cols, self.table_name, existing)
                    if key and not has_unique_key(cur, self.db_schema, self.table, key):
                        problems.append(f"table {self.table_name} has no PRIMARY KEY or UNIQUE "
                                        f"index on ({', '.join(key)}), which upsert needs")
                    if problems:
                        raise ConfigError("The existing target table does not fit the pipeline "
                                          "(pipeline.table=" + self.table + "):\n  - " +
                                          "\n  - ".join(problems))
                    self.rows.inspect(cur, schema)  # binary COPY or CSV, chosen (and logged)
                    return
                defs = [sql.SQL("{} {}{}").format(
                    sql.Identifier(f.name), sql.SQL(pg_type(f)),
                    sql.SQL("" if f.nullable and f.name not in key else " NOT NULL"))
                    for f in cols]
                if key:
                    defs.append(sql.SQL("PRIMARY KEY ({})").format(
                        sql.SQL(", ").join(map(sql.Identifier, key))))
                cur.execute(sql.SQL("CREATE TABLE {} ({})").format(
                    self._target, sql.SQL(", ").join(defs)))
                self.rows.inspect(cur, schema)

        self.db.retrying(f"setting up {self.table_name}", run)

    def add_columns(self, fields: Sequence[pa.Field]) -> None:
        """ALTER TABLE ... ADD COLUMN IF NOT EXISTS, alone in its transaction: waits at most
        postgres.lock_timeout_s for the table's lock (retried), then holds it for a moment."""
        adds = _adds(fields)

        def run(conn: psycopg.Connection) -> None:
            with transaction(conn) as cur:
                cur.execute(sql.SQL("ALTER TABLE {} {}").format(self._target,
                                                                sql.SQL(", ").join(adds)))
                self.rows.inspect(cur)
        names = ", ".join(f.name for f in fields)
        self.db.retrying(f"adding column(s) {names} to {self.table_name}", run)
        log.warning("schema evolution: %s now has column(s) %s", self.table_name, names)

    # -- ownership --------------------------------------------------------------------------

    def claim(self, partitions: Sequence[int]) -> dict[int, Claim]:
        """Take ownership: bump each partition's owner epoch so that any older owner is fenced."""

        def run(conn: psycopg.Connection) -> dict[int, Claim]:
            with transaction(conn) as cur:
                return self.offsets.claim(cur, partitions)

        return self.db.retrying("claiming partitions", run,
                                lambda: self._lock_holders(list(partitions)))

    # -- who holds the locks we wait for ----------------------------------------------------

    def blockers(self) -> str | None:
        """While a claim or commit waits for a lock: the sessions it waits for (asked on a
        side connection, from another thread), else None."""
        pid = self.db.backend_pid
        if pid is None:
            return None
        rows = self._ask("SELECT pid, application_name, state, extract(epoch FROM now() - "
                         "xact_start)::int FROM pg_stat_activity WHERE pid = ANY("
                         "pg_blocking_pids(%s))", (pid,))
        return _sessions(rows) or None

    def _lock_holders(self, partitions: list[int]) -> str:
        """After a lock wait timed out: the sessions holding locks on the offsets table."""
        rows = self._ask("SELECT DISTINCT a.pid, a.application_name, a.state, extract(epoch "
                         "FROM now() - a.xact_start)::int AS age FROM pg_locks l JOIN "
                         "pg_stat_activity a ON a.pid = l.pid WHERE l.relation = "
                         "to_regclass(%s) AND l.granted AND l.pid <> pg_backend_pid() AND "
                         "a.xact_start IS NOT NULL ORDER BY age DESC LIMIT 3",
                         (self.offsets.ident.as_string(),))
        held = _sessions(rows)
        return (f" on {OFFSETS} (partitions {partitions})"
                + (f" held by {held}" if held else ""))

    def _ask(self, query: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            with psycopg.connect(self.db.conninfo(), autocommit=True) as conn:
                return conn.execute(query, params).fetchall()
        except psycopg.Error:
            return []

    def totals(self) -> dict[int, Totals]:
        def run(conn: psycopg.Connection) -> dict[int, Totals]:
            with transaction(conn) as cur:
                return self.offsets.totals(cur)

        return self.db.retrying("reading offsets", run)

    # -- the exactly-once write -------------------------------------------------------------

    def write(self, wb: WriteBatch) -> list[DeadLetter]:
        """Apply one batch in one transaction; FencedError if another owner took over. Rows
        PostgreSQL rejects for a data reason are dead-lettered in that same transaction and
        returned (empty for a clean batch)."""
        if not self.rows.inspected:  # a worker's first batch: the encoding depends on the table
            self.db.retrying(f"inspecting {self.table_name}", self._inspect)
        prepared = self.rows.prepare(wb.rows)
        attempt = 0

        def run(conn: psycopg.Connection) -> list[DeadLetter]:
            nonlocal attempt
            attempt += 1
            try:
                # the clean path: no savepoint, nothing but the statements the batch needs
                with transaction(conn) as cur:
                    return self._apply(cur, wb, prepared, None, attempt)
            except _RowsRejected as rejected:
                first = rejected.cause
            # rolled back: the same again, now finding the rows PostgreSQL rejects
            with transaction(conn) as cur:
                return self._apply(cur, wb, prepared, first, attempt)

        try:
            return self.db.retrying(
                f"writing {wb.rows.num_rows} rows to {self.table_name}", run,
                lambda: self._lock_holders([a.partition for a in wb.advances]))
        except psycopg.Error as exc:
            span = ", ".join(f"partition {a.partition} offsets "
                             f"{'start' if a.expected is None else a.expected}..{a.new - 1}"
                             for a in wb.advances)
            raise SinkError(
                f"PostgreSQL rejected a batch for {self.table_name} ({span}): "
                f"{type(exc).__name__}: {str(exc).strip()}. This is not retried: fix the table "
                "or pipeline.columns / the transforms, then run again (the batch is replayed "
                "from the stored offsets)."
            ) from exc

    def _inspect(self, conn: psycopg.Connection) -> None:
        with transaction(conn) as cur:
            self.rows.inspect(cur)

    def _apply(self, cur: psycopg.Cursor, wb: WriteBatch, prepared: Prepared,
               isolate_from: psycopg.Error | None, attempt: int) -> list[DeadLetter]:
        """One transaction's statements: the fenced advance first, then rows, dead letters."""
        if not self.offsets.advance(cur, wb.advances):
            fenced = self.offsets.fenced(cur, wb.advances)
            if attempt > 1 and not fenced:
                return []  # the previous attempt committed before its connection broke
            raise FencedError(self.offsets.fenced_message(fenced or list(wb.advances)))
        rejected: list[DeadLetter] = []
        if isolate_from is None:
            try:
                self.rows.write(cur, prepared)
            except psycopg.Error as exc:
                if is_data_error(exc):
                    raise _RowsRejected(exc) from exc
                raise
        else:
            rejected = self._dead_lettered(wb, self.rows.isolate(cur, prepared, isolate_from))
        letters = _one_per_record(wb.dead_letters + rejected)
        if letters:
            self.dead_letters.insert(cur, letters)
        if rejected:
            # the advance counted these rows as rows: move them to the dead-letter counters
            records = _one_per_record(rejected)
            self.offsets.recount(cur, Counter(d.partition for d in rejected),
                                 Counter(d.partition for d in records))
            return records
        return []

    def _dead_lettered(self, wb: WriteBatch, rejected: list[Rejected]) -> list[DeadLetter]:
        letters = []
        for row, exc in rejected:
            letter = wb.rejected(row, describe(exc))
            if letter is None:
                raise SinkError(
                    f"PostgreSQL rejected a row for {self.table_name} ({describe(exc)}), and "
                    "its Kafka record is unknown, so it cannot be dead-lettered: the transforms "
                    "dropped the _kafka_partition / _kafka_offset columns. Keep those columns "
                    "(they are not written to the table), or fix the row's cause.")
            letters.append(letter)
        return letters


def _adds(fields: Sequence[pa.Field]) -> list[sql.Composable]:
    return [sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(f.name),
                                                               sql.SQL(pg_type(f)))
            for f in fields]


def _one_per_record(letters: list[DeadLetter]) -> list[DeadLetter]:
    """One dead letter per Kafka record (the first): a record that became several rejected
    rows is one entry, and one INSERT ... ON CONFLICT may not touch an entry twice."""
    seen: dict[tuple[int, int], DeadLetter] = {}
    for d in letters:
        seen.setdefault((d.partition, d.offset), d)
    return list(seen.values())


def _sessions(rows: list[tuple[Any, ...]]) -> str:
    """'backend 4242 (psql, idle in transaction for 42s)', for each row of
    (pid, application_name, state, seconds in its transaction)."""
    return ", ".join(f"backend {pid} ({app or 'no application_name'}, {state}"
                     + (f" for {age}s" if age is not None else "") + ")"
                     for pid, app, state, age in rows)


def make_sink(settings: VeltrixConfig, application_name: str) -> PostgresSink:
    """The sink a pipeline's settings describe (the coordinator's and each worker's)."""
    s = settings
    return PostgresSink(s.postgres.dsn, db_schema=s.postgres.db_schema, table=s.pipeline.table,
                        pipeline=s.pipeline.name, topic=s.kafka.topic, mode=s.pipeline.mode,
                        key=s.pipeline.key, connect_timeout_s=s.postgres.connect_timeout_s,
                        max_elapsed_s=s.postgres.retry.max_elapsed_s,
                        initial_backoff_s=s.postgres.retry.initial_backoff_s,
                        max_backoff_s=s.postgres.retry.max_backoff_s,
                        lock_timeout_s=s.postgres.lock_timeout_s,
                        idle_in_transaction_timeout_s=s.postgres.idle_in_transaction_timeout_s,
                        application_name=application_name,
                        evolve=s.pipeline.schema_evolution == "add_columns")
