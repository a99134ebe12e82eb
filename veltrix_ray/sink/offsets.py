"""`veltrix_offsets`: per (pipeline, topic, partition) the next offset to read, the owner's
epoch (the fence) and what was committed so far. Kept beside the rows it describes, so that
rows and offsets commit in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from veltrix_ray.contracts import Advance, Claim, Totals
from veltrix_ray.sink.introspect import column_names

OFFSETS = "veltrix_offsets"


@dataclass(frozen=True)
class Offsets:
    db_schema: str
    pipeline: str
    topic: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.db_schema, OFFSETS)

    def create(self, cur: psycopg.Cursor) -> None:
        cur.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, topic text NOT NULL, "
            "partition integer NOT NULL, next_offset bigint, owner_epoch bigint NOT NULL "
            "DEFAULT 0, rows_total bigint NOT NULL DEFAULT 0, dead_letters_total bigint "
            "NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (pipeline, topic, partition))").format(self.ident))
        self._upgrade(cur)

    def _upgrade(self, cur: psycopg.Cursor) -> None:
        """Add the counters to an offsets table made before they existed (only then: ALTER
        TABLE would lock out the other pipelines' commits even when it has nothing to do)."""
        have = column_names(cur, self.db_schema, OFFSETS)
        for column in ("rows_total", "dead_letters_total"):
            if column not in have:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint NOT NULL DEFAULT 0")
                            .format(self.ident, sql.Identifier(column)))

    def claim(self, cur: psycopg.Cursor, partitions: Sequence[int]) -> dict[int, Claim]:
        """Bump each partition's owner epoch, so that any older owner is fenced."""
        cur.execute(sql.SQL(
            "INSERT INTO {t} AS o (pipeline, topic, partition, owner_epoch) "
            "SELECT %s, %s, p, 1 FROM unnest(%s::int[]) AS p "
            "ON CONFLICT (pipeline, topic, partition) DO UPDATE "
            "SET owner_epoch = o.owner_epoch + 1, updated_at = now() "
            "RETURNING partition, next_offset, owner_epoch").format(t=self.ident),
            (self.pipeline, self.topic, list(partitions)))
        return {p: Claim(p, n, e) for p, n, e in cur.fetchall()}

    def totals(self, cur: psycopg.Cursor) -> dict[int, Totals]:
        cur.execute(sql.SQL("SELECT partition, next_offset, rows_total, dead_letters_total "
                            "FROM {} WHERE pipeline = %s AND topic = %s").format(self.ident),
                    (self.pipeline, self.topic))
        return {p: Totals(n, r, d) for p, n, r, d in cur.fetchall()}

    def advance(self, cur: psycopg.Cursor, advances: Sequence[Advance]) -> bool:
        """Move every partition on, but only where this owner's epoch and expected offset
        still hold (False: nothing may be applied; the caller rolls back)."""
        cur.execute(sql.SQL(
            "UPDATE {t} AS o SET next_offset = v.new, rows_total = o.rows_total + v.rows, "
            "dead_letters_total = o.dead_letters_total + v.dead, updated_at = now() "
            "FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], "
            "%s::bigint[]) AS v(partition, expected, new, epoch, rows, dead) "
            "WHERE o.pipeline = %s AND o.topic = %s AND o.partition = v.partition "
            "AND o.owner_epoch = v.epoch AND o.next_offset IS NOT DISTINCT FROM v.expected"
        ).format(t=self.ident), (
            [a.partition for a in advances], [a.expected for a in advances],
            [a.new for a in advances], [a.epoch for a in advances],
            [a.rows for a in advances], [a.dead_letters for a in advances],
            self.pipeline, self.topic))
        return bool(cur.rowcount == len(advances))

    def recount(self, cur: psycopg.Cursor, rejected_rows: Mapping[int, int],
                dead_letters: Mapping[int, int]) -> None:
        """Move rows the database rejected from the partitions' row counters to their
        dead-letter counters (the advance counted them as rows). Only runs when some were:
        the row lock is already held by the advance, so it cannot block."""
        parts = sorted(set(rejected_rows) | set(dead_letters))
        cur.execute(sql.SQL(
            "UPDATE {t} AS o SET rows_total = o.rows_total - v.rows, "
            "dead_letters_total = o.dead_letters_total + v.dead "
            "FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) AS v(partition, rows, dead) "
            "WHERE o.pipeline = %s AND o.topic = %s AND o.partition = v.partition"
        ).format(t=self.ident), (
            parts, [rejected_rows.get(p, 0) for p in parts],
            [dead_letters.get(p, 0) for p in parts], self.pipeline, self.topic))

    def fenced(self, cur: psycopg.Cursor, advances: Sequence[Advance]) -> list[Advance]:
        """The advances that another owner prevents (empty: all were already applied)."""
        cur.execute(sql.SQL("SELECT partition, next_offset, owner_epoch FROM {} WHERE "
                            "pipeline = %s AND topic = %s").format(self.ident),
                    (self.pipeline, self.topic))
        now = {p: (n, e) for p, n, e in cur.fetchall()}
        return [a for a in advances if now.get(a.partition) != (a.new, a.epoch)]

    def fenced_message(self, fenced: Sequence[Advance]) -> str:
        parts = ", ".join(f"{a.partition} (epoch {a.epoch})" for a in fenced)
        return (f"pipeline {self.pipeline!r}, topic {self.topic!r}: partition(s) {parts} now "
                "belong to a newer owner; this worker's batch was rolled back and it drops "
                "those partitions. Nothing to fix unless two pipelines share the name "
                "pipeline.name.")
