"""`veltrix_dead_letters`: the records that could not become rows, with their raw bytes, the
error and the stage that rejected them; one entry per (pipeline, topic, partition, offset)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from veltrix_ray.contracts import DeadLetter, Reason
from veltrix_ray.sink.introspect import column_names

DEAD_LETTERS = "veltrix_dead_letters"


@dataclass(frozen=True)
class DeadLetters:
    db_schema: str
    pipeline: str
    topic: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.db_schema, DEAD_LETTERS)

    def create(self, cur: psycopg.Cursor) -> None:
        cur.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, pipeline text NOT "
            "NULL, topic text NOT NULL, partition integer NOT NULL, \"offset\" bigint NOT "
            "NULL, key bytea, value bytea, error text NOT NULL, failed_at timestamptz NOT "
            "NULL DEFAULT now(), reason text, UNIQUE (pipeline, topic, partition, \"offset\"))"
        ).format(self.ident))
        # tables from before `reason` existed; only ALTER when missing (it takes a lock that
        # would stall every pipeline's commits even when there is nothing to add)
        if "reason" not in column_names(cur, self.db_schema, DEAD_LETTERS):
            cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN reason text").format(self.ident))

    def insert(self, cur: psycopg.Cursor, letters: Sequence[DeadLetter]) -> None:
        """One statement for all of them. A record dead-lettered again (its offsets were
        reset on purpose to reprocess it) replaces its old entry instead of failing."""
        cur.execute(sql.SQL(
            "INSERT INTO {t} AS d (pipeline, topic, partition, \"offset\", key, value, error, "
            "reason) SELECT %s, %s, v.* FROM unnest(%s::int[], %s::bigint[], %s::bytea[], "
            "%s::bytea[], %s::text[], %s::text[]) AS v "
            "ON CONFLICT (pipeline, topic, partition, \"offset\") DO UPDATE SET "
            "key = EXCLUDED.key, value = EXCLUDED.value, error = EXCLUDED.error, "
            "reason = EXCLUDED.reason, failed_at = now()").format(t=self.ident), (
            self.pipeline, self.topic, [d.partition for d in letters],
            [d.offset for d in letters], [d.key for d in letters], [d.value for d in letters],
            [d.error for d in letters], [Reason(d.reason).value for d in letters]))
