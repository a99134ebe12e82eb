"""The local stack's Ray head: `local up` starts it on 127.0.0.1, `run` attaches to it, and
`local down` leaves no Ray process of ours."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from veltrix_ray import cli, produce
from veltrix_ray.local import LocalStack
from veltrix_ray.local.ray_head import MAX_TEMP_DIR, processes_of, stack_head

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VELTRIX_", "RAY_AUTH", "RAY_ADDRESS"))}
    return {**env, **extra}


def test_run_attaches_to_the_stack_ray_and_down_stops_it(
        service_dir: Path, services: object, capsys: pytest.CaptureFixture[str]) -> None:
    state = service_dir / "state"
    stack = LocalStack(state)
    pids: list[int] = []
    try:
        assert cli.main(["local", "up", "--state-dir", str(state)]) == 0
        assert "local runs attach to it" in capsys.readouterr().out
        head = stack.ray_head()
        assert head is not None and head.pid() is not None
        assert len(str(head.temp_dir)) <= MAX_TEMP_DIR
        assert head.num_cpus == os.cpu_count()
        ours = head.processes()
        pids = [p.pid for p in ours]
        assert len(ours) >= 4  # ray start, gcs, raylet, agents
        listening = {c.laddr.ip for p in ours for c in p.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening and listening <= LOOPBACK, listening

        env = stack.env()
        assert env["VELTRIX_RAY_ADDRESS"] == head.address
        assert env["VELTRIX_STATE_DIR"] == str(stack.state_dir)
        topic = "attach"
        asyncio.run(produce.produce(env["VELTRIX_KAFKA_BOOTSTRAP"], topic, events=3000,
                                    partitions=4, seed=3, bad_fraction=0.01))
        good = [r.event_id for r in produce.generate(3000, seed=3, bad_fraction=0.01)
                if r.event_id is not None]
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "veltrix_ray.cli", "run", f"kafka.topic={topic}",
             "until=drained", "topology.workers=2"],
            env=_clean_env(env), capture_output=True, text=True, timeout=300,
            cwd=service_dir)
        elapsed = time.monotonic() - started
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"attached to the local stack's Ray at {head.address}" in run.stderr
        assert f"rows written {len(good):,}, dead letters {3000 - len(good):,}" in run.stdout
        with psycopg.connect(env["VELTRIX_POSTGRES_DSN"]) as conn:
            ids = [r[0] for r in conn.execute("SELECT event_id FROM events")]
        assert sorted(ids) == sorted(good)
        print(f"run on the stack's Ray: {elapsed:.1f}s")
        # the run's workers lived in the head and left with the run
        assert cli.main(["local", "status", "--state-dir", str(state)]) == 0
        assert re.search(rf"^ray +running \(pid {head.pid()}\)", capsys.readouterr().out,
                         re.MULTILINE)
    finally:
        stack.down()
    head = stack.ray_head()
    assert head is not None
    assert processes_of(head.temp_dir) == []
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert stack.status().ray_pid is None
    stack.down(wipe=True)
    assert not head.temp_dir.exists()


def test_an_address_the_stack_did_not_record_is_never_joined(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_STATE_DIR", str(tmp_path))
    assert stack_head() == (None, None)  # nothing asked: a private Ray
    monkeypatch.setenv("VELTRIX_RAY_ADDRESS", "127.0.0.1:6379")
    head, why = stack_head()
    assert head is None
    assert why is not None and "is not the Ray head recorded by the local stack" in why
