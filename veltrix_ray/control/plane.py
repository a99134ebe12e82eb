"""`veltrix_control`: one row per (pipeline, topic) in the pipeline's own PostgreSQL, through
which operators in other shells see and steer a running pipeline. The coordinator writes a
heartbeat and its progress; the CLI writes requests (worker count, stop), which the
coordinator applies and acknowledges. Every call is one short transaction on its own
connection: nothing is held open between calls."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.sink.connection import Connector, transaction

CONTROL = "veltrix_control"
# a heartbeat older than max(STALE_BEATS x its interval, STALE_MIN_S) means not running
STALE_BEATS = 3
STALE_MIN_S = 10.0
T = TypeVar("T")


def control_interval(settings: VeltrixConfig) -> float:
    """Seconds between two heartbeats: progress_interval_s, bounded to [0.5, 5]."""
    return min(5.0, max(0.5, settings.progress_interval_s))


def json_safe(value: Any) -> Any:
    """`value` as JSON can hold it: string keys, lists for tuples and sets, no NaN."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [json_safe(v) for v in sorted(value, key=str)]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class Requests:
    """What operators asked for that the coordinator has not applied yet."""

    request_id: int = 0
    desired_workers: int | None = None
    stop: bool = False


@dataclass(frozen=True)
class ControlRow:
    pipeline: str
    topic: str
    desired_workers: int | None
    request_id: int
    applied_request_id: int
    stop_requested: bool
    heartbeat_at: dt.datetime | None
    heartbeat_age_s: float | None  # by the database's clock, like heartbeat_at
    interval_s: float | None
    started_at: dt.datetime | None
    stopped_at: dt.datetime | None
    owner: str | None
    status: dict[str, Any] = field(default_factory=dict)


def stale_after(interval_s: float | None) -> float:
    return max(STALE_BEATS * (interval_s or 1.0), STALE_MIN_S)


def running(row: ControlRow | None) -> bool:
    """A coordinator beats for this pipeline: its last heartbeat is recent."""
    return (row is not None and row.heartbeat_age_s is not None
            and row.heartbeat_age_s < stale_after(row.interval_s))


class ControlPlane:
    def __init__(self, settings: VeltrixConfig, *, max_elapsed_s: float | None = 30.0,
                 application_name: str = "veltrix-ray control") -> None:
        s = settings
        self.dsn = s.postgres.dsn
        self.db_schema = s.postgres.db_schema
        self.pipeline = s.pipeline.name
        self.topic = s.kafka.topic
        self.connect_timeout_s = s.postgres.connect_timeout_s
        self.max_elapsed_s = max_elapsed_s
        self.application_name = application_name
        self.table = sql.Identifier(self.db_schema, CONTROL)

    def transact(self, what: str, fn: Callable[[psycopg.Cursor], T]) -> T:
        db = Connector(self.dsn, connect_timeout_s=self.connect_timeout_s,
                       max_elapsed_s=self.max_elapsed_s, lock_timeout_s=5,
                       application_name=self.application_name)

        def run(conn: psycopg.Connection) -> T:
            with transaction(conn) as cur:
                return fn(cur)

        try:
            return db.retrying(f"{what} ({CONTROL}, pipeline {self.pipeline!r})", run)
        finally:
            db.close()

    def _key(self) -> tuple[str, str]:
        return self.pipeline, self.topic

    # -- both sides ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the schema and the table if missing."""

        def run(cur: psycopg.Cursor) -> None:
            cur.execute("SELECT to_regclass(%s)", (f'"{self.db_schema}"."{CONTROL}"',))
            row = cur.fetchone()
            if row is not None and row[0] is not None:
                return
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('veltrix-ray setup'))")
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.db_schema,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.db_schema)))
            cur.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, topic text NOT NULL, "
                "desired_workers integer, request_id bigint NOT NULL DEFAULT 0, "
                "applied_request_id bigint NOT NULL DEFAULT 0, stop_requested boolean NOT NULL "
                "DEFAULT false, heartbeat_at timestamptz, interval_s double precision, "
                "started_at timestamptz, stopped_at timestamptz, owner text, status jsonb, "
                "PRIMARY KEY (pipeline, topic))").format(self.table))

        self.transact("setting up", run)

    def read(self) -> ControlRow | None:
        """The pipeline's row (None: never ran with a control plane, or no table yet)."""

        def run(cur: psycopg.Cursor) -> ControlRow | None:
            cur.execute("SELECT to_regclass(%s)", (f'"{self.db_schema}"."{CONTROL}"',))
            found = cur.fetchone()
            if found is None or found[0] is None:
                return None
            cur.execute(sql.SQL(
                "SELECT pipeline, topic, desired_workers, request_id, applied_request_id, "
                "stop_requested, heartbeat_at, extract(epoch FROM now() - heartbeat_at)::float8, "
                "interval_s, started_at, stopped_at, owner, status FROM {} "
                "WHERE pipeline = %s AND topic = %s").format(self.table), self._key())
            row = cur.fetchone()
            if row is None:
                return None
            (pipeline, topic, desired, request_id, applied, stop, beat, age, interval,
             started, stopped, owner, status) = row
            return ControlRow(pipeline, topic, desired, request_id, applied, stop, beat, age,
                              interval, started, stopped, owner, status or {})

        return self.transact("reading", run)

    # -- the coordinator -----------------------------------------------------------------------

    def start(self, owner: str, interval_s: float) -> None:
        """Take the row for a new run: requests made before it no longer apply."""
        self.transact("starting", lambda cur: cur.execute(sql.SQL(
            "INSERT INTO {} AS c (pipeline, topic, owner, interval_s, heartbeat_at, started_at) "
            "VALUES (%s, %s, %s, %s, now(), now()) ON CONFLICT (pipeline, topic) DO UPDATE SET "
            "owner = EXCLUDED.owner, interval_s = EXCLUDED.interval_s, heartbeat_at = now(), "
            "started_at = now(), stopped_at = NULL, stop_requested = false, "
            "desired_workers = NULL, applied_request_id = c.request_id, status = NULL"
        ).format(self.table), (*self._key(), owner, interval_s)))

    def heartbeat(self, status: Mapping[str, Any], owner: str,
                  applied_request_id: int = 0) -> Requests | None:
        """Write heartbeat_at = now() and the status; returns the pending requests (None: the
        row belongs to another coordinator now, or this run was marked finished)."""

        def run(cur: psycopg.Cursor) -> Requests | None:
            cur.execute(sql.SQL(
                "UPDATE {} SET heartbeat_at = now(), status = %s, "
                "applied_request_id = greatest(applied_request_id, %s) "
                "WHERE pipeline = %s AND topic = %s AND owner = %s AND stopped_at IS NULL "
                "RETURNING request_id, applied_request_id, desired_workers, stop_requested"
            ).format(self.table), (Jsonb(json_safe(status)), applied_request_id, *self._key(),
                                   owner))
            row = cur.fetchone()
            if row is None:
                return None
            request_id, applied, desired, stop = row
            pending = desired if request_id > applied else None
            return Requests(request_id, pending, bool(stop))

        return self.transact("heartbeat", run)

    def applied(self, request_id: int, status: Mapping[str, Any], owner: str) -> None:
        """The coordinator applied the requests up to `request_id`; `status` shows the result."""
        self.transact("acknowledging a request", lambda cur: cur.execute(sql.SQL(
            "UPDATE {} SET applied_request_id = greatest(applied_request_id, %s), status = %s, "
            "heartbeat_at = now() WHERE pipeline = %s AND topic = %s AND owner = %s "
            "AND stopped_at IS NULL").format(self.table),
            (request_id, Jsonb(json_safe(status)), *self._key(), owner)))

    def finish(self, status: Mapping[str, Any], owner: str) -> None:
        """The run ended: not running from now on (no wait for the heartbeat to age)."""
        self.transact("finishing", lambda cur: cur.execute(sql.SQL(
            "UPDATE {} SET heartbeat_at = NULL, stopped_at = now(), status = %s, "
            "stop_requested = false, applied_request_id = request_id "
            "WHERE pipeline = %s AND topic = %s AND owner = %s").format(self.table),
            (Jsonb(json_safe(status)), *self._key(), owner)))

    # -- operators -----------------------------------------------------------------------------

    def _request(self, what: str, assignment: str, params: tuple[Any, ...]) -> int | None:
        def run(cur: psycopg.Cursor) -> int | None:
            cur.execute(sql.SQL(
                "UPDATE {} SET request_id = request_id + 1, " + assignment +
                " WHERE pipeline = %s AND topic = %s RETURNING request_id"
            ).format(self.table), (*params, *self._key()))
            row = cur.fetchone()
            return None if row is None else int(row[0])

        return self.transact(what, run)

    def request_rescale(self, workers: int) -> int | None:
        """Ask for `workers` workers; returns the request id (None: no row)."""
        return self._request("requesting a rescale", "desired_workers = %s", (workers,))

    def request_stop(self) -> int | None:
        """Ask for a graceful stop; returns the request id (None: no row)."""
        return self._request("requesting a stop", "stop_requested = true", ())


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, sort_keys=True)
