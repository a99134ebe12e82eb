"""The rows of a batch into the target: Arrow -> binary COPY (CSV when a column type needs it,
see binary.py) (append), or via a staging table and INSERT ... ON CONFLICT (upsert); and, when
PostgreSQL rejects some rows for a data reason, finding exactly those rows so that the rest
can still commit.

The clean path is one COPY (append) or COPY + INSERT (upsert) and nothing else: no savepoint,
no extra statement. Isolation only starts after the clean path failed (its transaction is
rolled back and replayed by the caller), and runs every attempt in a savepoint."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from veltrix_ray.contracts import written
from veltrix_ray.sink.binary import BinaryPlan, NotEncodable, choose
from veltrix_ray.sink.introspect import columns

# benchmark-only, not a setting (no pipeline wants the slower path, so no config key):
# benchmarks/pipeline.py measures the previous path with VELTRIX_COPY_FORMAT=csv (CSV COPY)
_FORCE_CSV = os.environ.get("VELTRIX_COPY_FORMAT") == "csv"

log = logging.getLogger(__name__)

STAGE = "veltrix_stage"
# the smallest slice of rows an isolation attempt writes after a rejected row
MIN_CHUNK = 64
_SAVEPOINT = "SAVEPOINT veltrix_rows"
_ROLLBACK = "ROLLBACK TO SAVEPOINT veltrix_rows"
_RELEASE = "RELEASE SAVEPOINT veltrix_rows"
_DIGITS = re.compile(r"\d+")

# a row PostgreSQL rejected: its index in the batch, and why
Rejected = tuple[int, psycopg.Error]


def is_data_error(exc: psycopg.Error) -> bool:
    """A row's content is at fault: SQLSTATE class 22 (data exception: too long, out of range,
    NUL byte, invalid text) or 23 (integrity: NOT NULL, CHECK, foreign key, unique). Not
    22P03 (invalid binary format): our encoding no longer fits a column (its type changed
    since setup), which would reject every row."""
    state = exc.sqlstate or ""
    return state[:2] in ("22", "23") and state != "22P03"


def describe(exc: psycopg.Error) -> str:
    """The dead letter's error: SQLSTATE, PostgreSQL's message and its detail."""
    text = exc.diag.message_primary or str(exc).strip()
    if exc.diag.message_detail:
        text += f": {exc.diag.message_detail}"
    return f"PostgreSQL rejected the row: {exc.sqlstate} {text}"


def copy_line(exc: psycopg.Error, relation: str) -> int | None:
    """The 1-based line of a COPY into `relation` that `exc` happened on, from the error's
    context (`COPY t, line 3, column country: "DEU"`; binary COPY numbers its tuples so);
    None when it names none (foreign keys are checked after the last line; an INSERT has no
    lines). The relation name is matched exactly: a hostile table name cannot fake a line
    number."""
    prefix = f"COPY {relation}, line "
    for line in (exc.diag.context or "").splitlines():
        if line.startswith(prefix):
            digits = _DIGITS.match(line, len(prefix))
            if digits:
                return int(digits.group())
    return None


def to_written(batch: pa.RecordBatch) -> pa.Table:
    """The columns the target gets, as they are encoded: zoned timestamps become the same
    instants as UTC wall-clock time, read back as UTC by the session's time zone."""
    table = pa.Table.from_batches([batch.select(written(batch.schema).names)])
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            table = table.set_column(i, f.name, table.column(i).cast(pa.timestamp(f.type.unit)))
    return table


def encode(table: pa.Table) -> bytes:
    """CSV (the fallback)."""
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    return buf.getvalue()


def subset(table: pa.Table, rows: Sequence[int]) -> pa.Table:
    if isinstance(rows, range) and rows.step == 1:
        return table.slice(rows.start, len(rows))
    return table.take(pa.array(rows, pa.int64()))


def one_line_per_row(table: pa.Table) -> bool:
    """Whether every row is one line of CSV. COPY numbers physical lines (and skips the
    newlines inside the first row's values), so its line numbers name rows only then."""
    for f, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            if pc.any(pc.match_substring(col, "\n")).as_py():
                return False
        elif pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            return False  # written raw: it may hold anything
    return True


@dataclass
class Prepared:
    """A batch's rows, ready before the first attempt (so that a replay does not redo it)."""

    table: pa.Table  # the written columns, as encoded
    rows: Sequence[int]  # the rows written first: all (append), the latest per key (upsert)
    data: bytes  # those rows, encoded
    binary: BinaryPlan | None = None  # the encoding of `data` and of every retry: else CSV
    _plain: bool | None = field(default=None, repr=False)

    @property
    def plain(self) -> bool:
        """Whether COPY's line numbers are row numbers (always in binary: one per tuple)."""
        if self._plain is None:
            self._plain = self.binary is not None or one_line_per_row(self.table)
        return self._plain

    def encode(self, rows: Sequence[int]) -> bytes:
        part = subset(self.table, rows)
        return self.binary.encode(part) if self.binary else encode(part)


class RowWriter:
    def __init__(self, db_schema: str, table: str, mode: str, key: Sequence[str]) -> None:
        self.db_schema = db_schema
        self.relation = table
        self.mode = mode
        self.key = list(key) if mode == "upsert" else []
        self._target = sql.Identifier(db_schema, table)
        self._types: dict[str, str] | None = None  # the target's column types; None: CSV
        self._plans: dict[tuple[tuple[str, pa.DataType], ...], BinaryPlan | None] = {}
        self._fell_back = False

    # -- the encoding, chosen once per table --------------------------------------------------

    @property
    def inspected(self) -> bool:
        return self._types is not None

    def inspect(self, cur: psycopg.Cursor, schema: pa.Schema | None = None) -> None:
        """Learn the target's column types (binary COPY needs them); with `schema`, choose its
        encoding now (logging a CSV fallback at setup rather than at the first batch)."""
        types = {n: c.type for n, c in columns(cur, self.db_schema, self.relation).items()}
        if types != self._types:
            self._types, self._plans = types, {}
        if schema is not None:
            self.plan(to_written(pa.RecordBatch.from_pylist([], schema=schema)).schema)

    def plan(self, schema: pa.Schema) -> BinaryPlan | None:
        """The binary encoding of rows of `schema`; None: CSV (not inspected, or a column
        binary cannot write, logged once)."""
        if self._types is None or _FORCE_CSV:
            return None
        sig = tuple((f.name, f.type) for f in schema)
        if sig not in self._plans:
            self._plans[sig] = choose(schema, self._types, f"{self.db_schema}.{self.relation}")
        return self._plans[sig]

    # -- the clean path ---------------------------------------------------------------------

    def prepare(self, batch: pa.RecordBatch) -> Prepared:
        table = to_written(batch)
        rows: Sequence[int] = range(table.num_rows)
        if self.key:
            # the latest row per key wins (rows arrive in offset order within each
            # partition); picked here rather than by DISTINCT ON: fewer rows to stage
            rows = self._latest(table, rows)
        p = Prepared(table, rows, b"", self.plan(table.schema))
        if not rows:
            return p
        try:
            p.data = p.encode(rows)
        except NotEncodable as exc:
            # a value binary cannot carry as CSV would (e.g. sub-microsecond time): this
            # batch, and its retries, go as CSV
            log.log(logging.DEBUG if self._fell_back else logging.INFO,
                    "COPY into %s: a batch goes as CSV (%s)", self.relation, exc)
            self._fell_back = True
            p.binary = None
            p.data = p.encode(rows)
        return p

    def write(self, cur: psycopg.Cursor, p: Prepared) -> None:
        """All the prepared rows; raises the database's error when it rejects any."""
        if p.rows:
            self._apply(cur, p.data, p.table.column_names, p.binary is not None)

    def _apply(self, cur: psycopg.Cursor, data: bytes, names: list[str], binary: bool) -> None:
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})")
        fmt = sql.SQL("binary" if binary else "csv")
        if not self.key:
            with cur.copy(copy.format(self._target, cols, fmt)) as cp:
                cp.write(data)
            return
        stage = sql.Identifier(STAGE)
        # the written columns only, with the target's types and none of its constraints
        # (created in every transaction: a rolled-back one takes the table with it)
        cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {s} ON COMMIT DELETE ROWS AS "
                            "SELECT {cols} FROM {t} WITH NO DATA").format(
            s=stage, cols=cols, t=self._target))
        with cur.copy(copy.format(stage, cols, fmt)) as cp:
            cp.write(data)
        keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
        rest = [n for n in names if n not in self.key]
        action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(n)) for n in rest))
            if rest else sql.SQL("DO NOTHING"))
        # keys are unique among the staged rows (see _latest): no row is affected twice
        cur.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} "
                            "ON CONFLICT ({keys}) {action}").format(
            t=self._target, cols=cols, s=stage, keys=keys, action=action))

    def _latest(self, table: pa.Table, rows: Sequence[int]) -> list[int]:
        """Of `rows`, the last one of each key, in batch order."""
        keys = subset(table.select(self.key), rows).append_column(
            "_row", pa.array(rows, pa.int64()))
        latest = keys.group_by(self.key, use_threads=False).aggregate([("_row", "max")])
        return sorted(latest.column("_row_max").to_pylist())

    # -- isolation --------------------------------------------------------------------------

    def isolate(self, cur: psycopg.Cursor, p: Prepared, first: psycopg.Error) -> list[Rejected]:
        """Write the good rows and return the rejected ones, given that writing all the
        prepared rows failed with `first` (a data error) in a transaction since rolled back."""
        if not self.key:
            return self._isolate(cur, p, p.rows, first)
        # upsert: the latest *good* row per key wins. When a key's latest row is rejected, its
        # previous row in the batch is tried, and so on; only the affected keys are redone.
        rejected: list[Rejected] = []
        out: set[int] = set()
        keys: list[tuple[object, ...]] | None = None
        rows, err = p.rows, first
        while True:
            bad = self._isolate(cur, p, rows, err)
            if not bad:
                return rejected
            rejected += bad
            out.update(r for r, _ in bad)
            if keys is None:
                keys = list(zip(*(p.table.column(k).to_pylist() for k in self.key), strict=True))
            hit = {keys[r] for r, _ in bad}
            retry = [i for i in range(p.table.num_rows) if keys[i] in hit and i not in out]
            if not retry:
                return rejected
            rows = self._latest(p.table, retry)
            attempt = self._attempt(cur, p, rows)
            if attempt is None:
                return rejected
            err = attempt

    def _attempt(self, cur: psycopg.Cursor, p: Prepared,
                 rows: Sequence[int]) -> psycopg.Error | None:
        """Write `rows` in a savepoint: None when they went in, else the data error (and the
        savepoint rolled back, so nothing of them stays)."""
        cur.execute(_SAVEPOINT)
        try:
            self._apply(cur, p.encode(rows), p.table.column_names, p.binary is not None)
        except psycopg.Error as exc:
            if not is_data_error(exc):
                raise
            cur.execute(_ROLLBACK)
            return exc
        # the next attempt stages only its own rows
        cur.execute(f"TRUNCATE {STAGE}; {_RELEASE}" if self.key else _RELEASE)
        return None

    def _line(self, p: Prepared, err: psycopg.Error, count: int) -> int | None:
        """The failing row's position among the `count` rows of the attempt (1-based)."""
        line = copy_line(err, STAGE if self.key else self.relation)
        if line is None or not 1 <= line <= count or not p.plain:
            return None
        return line

    def _isolate(self, cur: psycopg.Cursor, p: Prepared, rows: Sequence[int],
                 err: psycopg.Error) -> list[Rejected]:
        """Writing `rows` failed with `err`: write the good ones, return the bad ones.

        Where COPY names the failing line, the rows before it were fine: they are written as
        they are (one COPY), the row is rejected, and the rest follows in slices about twice
        the distance between bad rows seen so far (so a failing slice costs little to resend).
        Where no line is named, bisect."""
        rejected: list[Rejected] = []
        pos, end = 0, len(rows)
        failed: psycopg.Error | None = err
        while True:
            if failed is None:
                pos = end
            else:
                line = self._line(p, failed, end - pos)
                if line is None:
                    rejected += self._bisect(cur, p, rows[pos:end], failed)
                    pos = end
                else:
                    bad = pos + line - 1
                    rejected.append((rows[bad], failed))
                    if bad > pos:
                        before = self._attempt(cur, p, rows[pos:bad])
                        if before is not None:  # not expected: they passed a moment ago
                            rejected += self._isolate(cur, p, rows[pos:bad], before)
                    pos = bad + 1
            if pos >= len(rows):
                return sorted(rejected, key=lambda r: r[0])
            gap = pos // max(1, len(rejected))
            end = min(len(rows), pos + max(MIN_CHUNK, 2 * gap))
            failed = self._attempt(cur, p, rows[pos:end])

    def _bisect(self, cur: psycopg.Cursor, p: Prepared, rows: Sequence[int],
                err: psycopg.Error) -> list[Rejected]:
        if len(rows) == 1:
            return [(rows[0], err)]
        rejected: list[Rejected] = []
        mid = len(rows) // 2
        for half in (rows[:mid], rows[mid:]):
            failed = self._attempt(cur, p, half)
            if failed is not None:
                rejected += self._isolate(cur, p, half, failed)
        return rejected
