"""`veltrix-ray run` as a user runs it: a process, its output, its exit code, its signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .helpers import committed_rows, event_ids, fill, offsets

CLI = [sys.executable, "-m", "veltrix_ray.cli"]


def run_cli(args: list[str], **kw: object) -> subprocess.Popen[str]:
    proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"}, **kw)
    return proc


def test_run_until_drained_prints_the_summary(kafka_bootstrap: str, pg_dsn: str,
                                              new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    exp = fill(kafka_bootstrap, topic, 5000, 4, bad_fraction=0.01)
    proc = run_cli(["run", f"kafka.topic={topic}", f"postgres.dsn={pg_dsn}", "until=drained"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert f"rows written {len(exp.good):,}, dead letters {len(exp.bad):,}" in out
    assert f"pipeline events  topic {topic}" in out
    assert sorted(event_ids(pg_dsn)) == sorted(exp.good)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_batch_in_flight_and_commits(
        signum: int, kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 40_000, 8, bad_fraction=0.01)
    proc = run_cli(["run", f"kafka.topic={topic}", f"postgres.dsn={pg_dsn}",
                    "batch.max_records=100"])  # until=forever
    try:
        deadline = time.monotonic() + 180
        while committed_rows(pg_dsn) < 2000:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no rows committed"
            time.sleep(0.1)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "rows written" in out
    stored = offsets(pg_dsn, topic)
    assert sum(v or 0 for v in stored.values()) < sum(exp.high_watermarks.values())
    # what was committed is exactly the events below the committed offsets
    assert sorted(event_ids(pg_dsn)) == sorted(exp.good_before(stored))


def test_bad_config_fails_before_launch_naming_the_key(pg_dsn: str, tmp_path: Path) -> None:
    proc = run_cli(["run", "kafka.topic=x", "topology.wrokers=3"], cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "topology.wrokers" in err
    assert "Traceback" not in err
