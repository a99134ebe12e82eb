"""One PostgreSQL connection per sink, our conninfo defaults, and the retry loop around a
transaction: a transient failure replays the whole transaction on a fresh connection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
import tenacity
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
    psycopg.errors.LockNotAvailable,  # lock_timeout: another session holds our rows
)


def conninfo(dsn: str, *, connect_timeout_s: int, application_name: str,
             lock_timeout_s: float = 0, idle_in_transaction_timeout_s: float = 0) -> str:
    """The DSN plus our defaults for what it leaves unset: TCP keepalives turn a silently
    dead server or network into an error (then a retry) instead of a hang; the server ends a
    session left idle in a transaction (its client's node vanished) so it cannot hold the
    offsets rows' locks for hours, and a lock wait ends in an error we retry and report."""
    params = conninfo_to_dict(dsn)
    defaults: dict[str, str | int] = {"connect_timeout": connect_timeout_s,
                                      "application_name": application_name, "keepalives": 1,
                                      "keepalives_idle": 10, "keepalives_interval": 5,
                                      "keepalives_count": 3}
    extra = {k: v for k, v in defaults.items() if k not in params}
    options = str(params.get("options") or "")
    for name, seconds in (("lock_timeout", lock_timeout_s),
                          ("idle_in_transaction_session_timeout", idle_in_transaction_timeout_s)):
        if seconds and name not in options:
            options += f" -c {name}={int(seconds * 1000)}"
    if options.strip():
        extra["options"] = options.strip()
    return make_conninfo(dsn, **extra)


@contextmanager
def transaction(conn: psycopg.Connection) -> Iterator[psycopg.Cursor]:
    """A cursor in a transaction that commits on exit, or rolls back on an exception."""
    with conn.transaction(), conn.cursor() as cur:
        yield cur


class Connector:
    """Opens the connection lazily, and again after a transient failure closed it."""

    def __init__(self, dsn: str, *, connect_timeout_s: int = 10,
                 max_elapsed_s: float | None = None, initial_backoff_s: float = 0.2,
                 max_backoff_s: float = 5.0, lock_timeout_s: float = 0,
                 idle_in_transaction_timeout_s: float = 0,
                 application_name: str = "veltrix-ray") -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self.max_elapsed_s = max_elapsed_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.lock_timeout_s = lock_timeout_s
        self.idle_in_transaction_timeout_s = idle_in_transaction_timeout_s
        self.application_name = application_name
        self._conn: psycopg.Connection | None = None

    def conninfo(self) -> str:
        return conninfo(self.dsn, connect_timeout_s=self.connect_timeout_s,
                        application_name=self.application_name,
                        lock_timeout_s=self.lock_timeout_s,
                        idle_in_transaction_timeout_s=self.idle_in_transaction_timeout_s)

    def connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.conninfo())
            # COPY gets timestamps as UTC wall-clock text: writing zone suffixes is 10x slower
            conn.execute("SET TIME ZONE 'UTC'")
            conn.commit()
            self._conn = conn
        return self._conn

    @property
    def backend_pid(self) -> int | None:
        """The server process of our connection (None: not connected)."""
        conn = self._conn
        return None if conn is None or conn.closed else int(conn.info.backend_pid)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def retrying(self, what: str, fn: Callable[[psycopg.Connection], T],
                 lock_detail: Callable[[], str] | None = None) -> T:
        """`fn` (one whole transaction) until it succeeds, with jittered exponential backoff
        while PostgreSQL fails transiently: forever, or until postgres.retry.max_elapsed_s.
        The wait is logged once when it starts (with the reason and the fix) and once when it
        ends. `lock_detail` says who holds the locks when a lock wait timed out."""
        started = time.monotonic()
        waiting = False

        def before_sleep(state: tenacity.RetryCallState) -> None:
            nonlocal waiting
            exc = state.outcome.exception() if state.outcome else None
            if waiting:
                log.debug("%s: still waiting (%s)", what, exc)
                return
            waiting = True
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                holder = lock_detail() if lock_detail else ""
                log.warning("%s: waited postgres.lock_timeout_s=%g for a lock%s; retrying until "
                            "it is released", what, self.lock_timeout_s, holder)
                return
            log.warning("%s: PostgreSQL is unavailable (%s: %s); waiting for it, retrying "
                        "with backoff up to %gs%s. Fix: check that PostgreSQL is up and "
                        "reachable with postgres.dsn", what, type(exc).__name__,
                        str(exc).strip(), self.max_backoff_s,
                        "" if self.max_elapsed_s is None
                        else f" for up to postgres.retry.max_elapsed_s={self.max_elapsed_s:g}s")

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TRANSIENT),
            wait=tenacity.wait_exponential_jitter(initial=self.initial_backoff_s,
                                                  max=self.max_backoff_s),
            stop=(tenacity.stop_never if self.max_elapsed_s is None
                  else tenacity.stop_after_delay(self.max_elapsed_s)),
            before_sleep=before_sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        result = fn(self.connect())
                    except TRANSIENT:
                        self.close()
                        raise
        except TRANSIENT as exc:
            raise SinkError(
                f"{what}: PostgreSQL still failing after {time.monotonic() - started:.0f}s "
                f"({type(exc).__name__}: {str(exc).strip()}). Check that PostgreSQL is up and "
                "reachable with postgres.dsn, or raise postgres.retry.max_elapsed_s (null: "
                "wait forever)."
            ) from exc
        if waiting:
            log.warning("%s: PostgreSQL answered again after %.0fs", what,
                        time.monotonic() - started)
        return result
