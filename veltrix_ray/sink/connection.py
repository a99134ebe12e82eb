"""One PostgreSQL connection per sink, our conninfo defaults, and the retry loop around a
transaction: a transient failure replays the whole transaction on a fresh connection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from veltrix_ray.errors import SinkError

log = logging.getLogger(__name__)
T = TypeVar("T")

# errors after which the same transaction, applied again on a new connection, can succeed
TRANSIENT: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
)


def conninfo(dsn: str, *, connect_timeout_s: int, application_name: str) -> str:
    """The DSN plus our defaults for what it leaves unset: TCP keepalives turn a silently
    dead server or network into an error (then a retry) instead of a hang."""
    params = conninfo_to_dict(dsn)
    defaults: dict[str, str | int] = {"connect_timeout": connect_timeout_s,
                                      "application_name": application_name, "keepalives": 1,
                                      "keepalives_idle": 10, "keepalives_interval": 5,
                                      "keepalives_count": 3}
    return make_conninfo(dsn, **{k: v for k, v in defaults.items() if k not in params})


@contextmanager
def transaction(conn: psycopg.Connection) -> Iterator[psycopg.Cursor]:
    """A cursor in a transaction that commits on exit, or rolls back on an exception."""
    with conn.transaction(), conn.cursor() as cur:
        yield cur


class Connector:
    """Opens the connection lazily, and again after a transient failure closed it."""

    def __init__(self, dsn: str, *, connect_timeout_s: int = 10, retry_attempts: int = 20,
                 initial_backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 application_name: str = "veltrix-ray") -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self.retry_attempts = retry_attempts
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.application_name = application_name
        self._conn: psycopg.Connection | None = None

    def conninfo(self) -> str:
        return conninfo(self.dsn, connect_timeout_s=self.connect_timeout_s,
                        application_name=self.application_name)

    def connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.conninfo())
            # COPY gets timestamps as UTC wall-clock text: writing zone suffixes is 10x slower
            conn.execute("SET TIME ZONE 'UTC'")
            conn.commit()
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def retrying(self, what: str, fn: Callable[[psycopg.Connection], T]) -> T:
        """`fn` (one whole transaction) until it succeeds, with exponential backoff while
        PostgreSQL fails transiently; SinkError naming the keys to check when it never does."""
        delay = self.initial_backoff_s
        for attempt in range(1, self.retry_attempts + 1):
            try:
                return fn(self.connect())
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
