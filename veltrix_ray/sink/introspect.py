"""What PostgreSQL says about an existing table: its columns and its unique keys. One place
for these queries, used by the sink's setup and by `veltrix-ray check`, so that both judge a
table the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import psycopg


class Column(NamedTuple):
    type: str  # information_schema's data_type, e.g. "character varying"
    nullable: bool
    max_length: int | None  # of character types declared with a length, e.g. varchar(2)


def table_oid(cur: psycopg.Cursor, db_schema: str, table: str) -> int | None:
    """The table's oid, None when it does not exist (names are taken as they are, unquoted)."""
    cur.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s", (db_schema, table))
    row = cur.fetchone()
    return None if row is None else int(row[0])


def columns(cur: psycopg.Cursor, db_schema: str, table: str) -> dict[str, Column]:
    """The table's columns by name (empty: no such table, or none visible to the role)."""
    cur.execute("SELECT column_name, data_type, is_nullable = 'YES', character_maximum_length "
                "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (db_schema, table))
    return {name: Column(kind, nullable, length)
            for name, kind, nullable, length in cur.fetchall()}


def column_names(cur: psycopg.Cursor, db_schema: str, table: str) -> set[str]:
    return set(columns(cur, db_schema, table))


def unique_keys(cur: psycopg.Cursor, db_schema: str, table: str) -> list[list[str]]:
    """The column sets (sorted) of the table's usable unique indexes: valid, on plain columns
    and without a predicate, i.e. those ON CONFLICT (columns) can name."""
    cur.execute(
        "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indisvalid "
        "AND i.indpred IS NULL AND i.indexprs IS NULL GROUP BY i.indexrelid",
        (db_schema, table))
    return [list(row[0]) for row in cur.fetchall()]


def has_unique_key(cur: psycopg.Cursor, db_schema: str, table: str, key: Sequence[str]) -> bool:
    """Whether a PRIMARY KEY or UNIQUE index covers exactly `key` (what upsert needs)."""
    return sorted(key) in unique_keys(cur, db_schema, table)
