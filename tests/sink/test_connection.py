"""Session settings every sink connection carries (no server needed)."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from veltrix_ray.sink.connection import conninfo

pytestmark = pytest.mark.unit


def test_sessions_time_out_lock_waits_and_idle_transactions() -> None:
    info = conninfo_to_dict(conninfo("postgresql://u@db/x", connect_timeout_s=5,
                                     application_name="w", lock_timeout_s=30,
                                     idle_in_transaction_timeout_s=60))
    assert info["options"] == ("-c lock_timeout=30000 "
                               "-c idle_in_transaction_session_timeout=60000")
    assert (info["keepalives"], info["keepalives_idle"]) == ("1", "10")


def test_what_the_dsn_sets_wins() -> None:
    info = conninfo_to_dict(conninfo(
        "host=db options='-c lock_timeout=1000 -c search_path=app' keepalives=0",
        connect_timeout_s=5, application_name="w", lock_timeout_s=30,
        idle_in_transaction_timeout_s=60))
    assert info["options"] == ("-c lock_timeout=1000 -c search_path=app "
                               "-c idle_in_transaction_session_timeout=60000")
    assert info["keepalives"] == "0"


def test_a_bounded_wait_gives_up_naming_the_key() -> None:
    from veltrix_ray.errors import SinkError
    from veltrix_ray.local.procs import free_port
    from veltrix_ray.sink.connection import Connector

    db = Connector(f"postgresql://u@127.0.0.1:{free_port()}/x", connect_timeout_s=1,
                   max_elapsed_s=1.0, initial_backoff_s=0.05, max_backoff_s=0.2)
    with pytest.raises(SinkError, match=r"(?s)reading: PostgreSQL still failing after \d+s "
                                        r"\(OperationalError: .*raise "
                                        r"postgres.retry.max_elapsed_s \(null: wait forever\)"):
        db.retrying("reading", lambda conn: conn.execute("SELECT 1"))
