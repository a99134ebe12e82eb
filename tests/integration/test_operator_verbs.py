"""Operator verbs from a second process: a `veltrix-ray run` in one process, `status`,
`rescale`, `stop` and `reset-offsets` from others, meeting only in PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from .helpers import assert_exact, dead_letters, event_ids, fill, offsets

CLI = [sys.executable, "-m", "veltrix_ray.cli"]
def env() -> dict[str, str]:
    """Read when a process starts: the session's services set VELTRIX_* after import."""
    return {**os.environ, "RAY_DEDUP_LOGS": "0"}


def start(args: list[str], **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**env(), **extra_env})


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env(),
                          timeout=timeout)


def status(over: list[str]) -> dict[str, Any]:
    done = cli("status", "--json", *over)
    assert done.returncode in (0, 3), done.stderr[-3000:]
    st: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if st["running"] else 3)
    return st


def epochs(dsn: str, topic: str, pipeline: str = "events") -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT partition, owner_epoch FROM veltrix_offsets WHERE "
                                 "topic = %s AND pipeline = %s", (topic, pipeline)).fetchall())


def stored(dsn: str, topic: str, pipeline: str) -> dict[int, int | None]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT partition, next_offset FROM veltrix_offsets WHERE "
                                 "topic = %s AND pipeline = %s", (topic, pipeline)).fetchall())


def by_partition(st: dict[str, Any], key: str) -> dict[int, Any]:
    return {p["partition"]: p[key] for p in st["partitions"]}


def test_status_rescale_stop_and_reset_from_another_process(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    exp = fill(kafka_bootstrap, topic, 20_000, 4, bad_fraction=0.01)
    hw = exp.high_watermarks
    over = [f"kafka.topic={topic}", f"postgres.dsn={pg_dsn}"]

    # never ran: Kafka's ends, nothing committed, not running
    st = status(over)
    assert (st["running"], st["workers"], st["target_workers"]) == (False, 0, None)
    assert by_partition(st, "high_watermark") == hw
    assert set(by_partition(st, "committed").values()) == {None}
    assert by_partition(st, "lag") == hw  # kafka.start=earliest: all of it

    run = start(["run", *over, "topology.workers=2", "progress_interval_s=0.5",
                 "batch.max_records=500"])  # until=forever
    try:
        deadline = time.monotonic() + 180
        while True:  # running, and everything there is committed
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"never drained: {st}"
            st = status(over)
            committed = by_partition(st, "committed").values()
            if st["running"] and st["lag"] == 0 and None not in committed:
                break
            time.sleep(0.5)
        assert (st["workers"], st["target_workers"]) == (2, 2)
        assert by_partition(st, "committed") == offsets(pg_dsn, topic) == hw
        assert by_partition(st, "high_watermark") == hw
        assert set(by_partition(st, "lag").values()) == {0}
        assert len({p["owner"] for p in st["partitions"]}) == 2
        assert sum(by_partition(st, "rows").values()) == len(exp.good)
        assert sum(by_partition(st, "dead_letters").values()) == len(exp.bad)
        assert len(st["worker_reports"]) == 2
        assert all(w["node"] and w["budget_bytes"] for w in st["worker_reports"])

        human = cli("status", *over)
        assert human.returncode == 0 and "RUNNING" in human.stdout, human.stderr[-3000:]

        refused = cli("reset-offsets", "--to", "earliest", *over)
        assert refused.returncode == 1
        assert "is running" in refused.stderr and "veltrix-ray stop" in refused.stderr
        assert offsets(pg_dsn, topic) == hw

        rescaled = cli("rescale", "3", *over)
        assert rescaled.returncode == 0, rescaled.stderr[-3000:]
        assert "to 3 workers" in rescaled.stdout and "set 2: partitions" in rescaled.stdout
        st = status(over)
        assert (st["running"], st["workers"], st["target_workers"]) == (True, 3, 3)
        assert len({p["owner"] for p in st["partitions"]}) == 3

        stopped = cli("stop", *over)
        assert stopped.returncode == 0, stopped.stderr[-3000:]
        assert "stopped" in stopped.stdout
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-3000:]
        assert "rows written" in out
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert_exact(pg_dsn, topic, exp)

    # stopped: the same numbers from PostgreSQL and Kafka alone
    st = status(over)
    assert (st["running"], st["workers"], st["target_workers"]) == (False, 0, None)
    assert by_partition(st, "committed") == by_partition(st, "high_watermark") == hw
    assert set(by_partition(st, "owner").values()) == {None}
    assert st["stopped_at"] is not None
    assert cli("rescale", "2", *over).returncode == 1
    assert "not running" in cli("stop", *over).stdout

    # explicit offsets: only partition 0 moves back, its epoch goes up, no row is deleted
    before = epochs(pg_dsn, topic)
    reset = cli("reset-offsets", "--to", f"0:100,1:{hw[1]}", *over)
    assert reset.returncode == 0, reset.stderr[-3000:]
    assert f"partition    0: {hw[0]:,} -> 100  (epoch {before[0]} -> {before[0] + 1})" \
        in reset.stdout
    assert "1 partition(s) changed" in reset.stdout
    assert offsets(pg_dsn, topic) == hw | {0: 100}
    assert epochs(pg_dsn, topic) == before | {0: before[0] + 1}

    # re-processing from there: partition 0's records from offset 100 are written again (an
    # append table gets them twice); their dead letters are replaced, not duplicated
    again = cli("run", *over, "until=drained")
    assert again.returncode == 0, again.stderr[-3000:]
    assert offsets(pg_dsn, topic) == hw
    redone = {e for (p, o), e in exp.good_at.items() if p == 0 and o >= 100}
    assert Counter(event_ids(pg_dsn)) == Counter(list(exp.good) + list(redone))
    assert sorted(dead_letters(pg_dsn)) == sorted(exp.bad)

    # earliest: every partition to 0, every epoch up
    before = epochs(pg_dsn, topic)
    reset = cli("reset-offsets", "--to", "earliest", *over)
    assert reset.returncode == 0, reset.stderr[-3000:]
    assert offsets(pg_dsn, topic) == dict.fromkeys(hw, 0)
    assert epochs(pg_dsn, topic) == {p: e + 1 for p, e in before.items()}

    # a pipeline without rows: latest inserts them; a time long past is the beginning, one in
    # the future the end; a dry run changes nothing
    other = [*over, "pipeline.name=events_b"]
    reset = cli("reset-offsets", "--to", "latest", *other)
    assert reset.returncode == 0, reset.stderr[-3000:]
    assert "new row, epoch 1" in reset.stdout
    assert stored(pg_dsn, topic, "events_b") == hw
    assert epochs(pg_dsn, topic, "events_b") == dict.fromkeys(hw, 1)
    dry = cli("reset-offsets", "--dry-run", "--to", "2000-01-01T00:00:00+00:00", *other)
    assert dry.returncode == 0 and "4 partition(s) would change" in dry.stdout
    assert stored(pg_dsn, topic, "events_b") == hw
    assert cli("reset-offsets", "--to", "2000-01-01T00:00:00+00:00", *other).returncode == 0
    assert stored(pg_dsn, topic, "events_b") == dict.fromkeys(hw, 0)
    assert cli("reset-offsets", "--to", "2100-01-01T00:00:00Z", *other).returncode == 0
    assert stored(pg_dsn, topic, "events_b") == hw
    assert epochs(pg_dsn, topic, "events_b") == dict.fromkeys(hw, 3)
    bad = cli("reset-offsets", "--to", f"0:{hw[0] + 1}", *other)
    assert bad.returncode == 1 and "outside the topic's" in bad.stderr
    assert stored(pg_dsn, topic, "events") == dict.fromkeys(hw, 0)  # untouched
