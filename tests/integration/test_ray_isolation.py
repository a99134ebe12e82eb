"""A notebook user's own `ray start --head` on this machine, and `veltrix-ray run` beside it:
topology=local starts a private Ray and leaves that cluster untouched, even when the cluster is
the one Ray would find (its address file, $RAY_ADDRESS); topology.address joins it.

The head lives in its own session with its own temp dir and ports (RayHead, shared with
test_ray_cluster.py) and is torn down by process group, never by `ray stop`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from veltrix_ray.local.procs import free_port
from veltrix_ray.runtime.coordinator import NAMESPACE, coordinator_name

from .helpers import event_ids, fill
from .test_ray_cluster import RayHead, _env

CLI = [sys.executable, "-m", "veltrix_ray.cli"]
PIPELINE = "events"  # conf/pipeline/events.yaml: the coordinator's name derives from it

# what a cluster holds: its actors and its jobs (a driver that connects is a job)
_STATE = """
import json, sys
from ray.util.state import list_actors, list_jobs
actors = [[a.name, a.ray_namespace, a.state] for a in list_actors(address=sys.argv[1])]
jobs = [[j.type, j.job_id, j.status] for j in list_jobs(address=sys.argv[1])]
print(json.dumps({"actors": actors, "jobs": jobs}))
"""


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    """A `ray start --head` whose address file is where Ray looks when RAY_TMPDIR=root: the
    cluster a bare `ray.init()` would join."""
    root = tempfile.mkdtemp(prefix="vx", dir="/tmp")  # short: Ray's socket paths are limited
    ray_head = RayHead(f"{root}/ray", Path(root) / "head.log")
    ray_head.start()
    try:
        ray_head.client()  # waits until the head answers
        yield ray_head
    finally:
        ray_head.stop()
        shutil.rmtree(root, ignore_errors=True)


def _root(head: RayHead) -> str:
    return str(Path(head.temp_dir).parent)


def _state(head: RayHead) -> dict[str, list[list[str]]]:
    out = subprocess.run([sys.executable, "-c", _STATE, head.dashboard], env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _run(topic: str, dsn: str, env: dict[str, str], *extra: str,
         timeout: float = 180) -> tuple[str, str]:
    proc = subprocess.run([*CLI, "run", f"kafka.topic={topic}", f"postgres.dsn={dsn}",
                           "until=drained", "topology.workers=1", *extra],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    return proc.stdout, proc.stderr


@pytest.mark.parametrize("found_by", ["address file", "RAY_ADDRESS"])
def test_local_topology_runs_a_private_ray_beside_a_running_cluster(
        found_by: str, head: RayHead, kafka_bootstrap: str, pg_dsn: str,
        new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    exp = fill(kafka_bootstrap, topic, 2000, 2, bad_fraction=0.0)
    env = (_env(RAY_TMPDIR=_root(head)) if found_by == "address file"
           else _env(RAY_ADDRESS=f"127.0.0.1:{head.port}"))
    before = _state(head)
    out, err = _run(topic, pg_dsn, env)  # topology=local
    assert f"rows written {len(exp.good):,}" in out
    assert "started a private Ray on 127.0.0.1 for this run, token-protected" in err
    assert "Token authentication is enabled" not in err  # Ray's own notice, said once by us
    ids = event_ids(pg_dsn)
    assert len(ids) == len(exp.good) and set(ids) == exp.good
    assert _state(head) == before, "the run left actors or jobs on the user's cluster"


def test_topology_address_joins_the_running_cluster(
        head: RayHead, kafka_bootstrap: str, pg_dsn: str,
        new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    exp = fill(kafka_bootstrap, topic, 2000, 2, bad_fraction=0.0)
    out, _ = _run(topic, pg_dsn, _env(), f"topology.address=127.0.0.1:{head.port}")
    assert f"rows written {len(exp.good):,}" in out
    ids = event_ids(pg_dsn)
    assert len(ids) == len(exp.good) and set(ids) == exp.good
    actors = _state(head)["actors"]
    assert [coordinator_name(PIPELINE), NAMESPACE] in [a[:2] for a in actors], actors


def test_an_address_that_does_not_answer_fails_in_bounded_time_naming_the_key(
        kafka_bootstrap: str) -> None:
    """Skipping the checks skips no guard: Kafka's port listens but is no Ray; a free port
    refuses."""
    for address in (kafka_bootstrap, f"127.0.0.1:{free_port()}"):
        started = time.monotonic()
        proc = subprocess.run([*CLI, "run", "--skip-checks", "kafka.topic=unused",
                               f"topology.address={address}", "topology.join_timeout_s=3"],
                              env=_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert time.monotonic() - started < 30
        assert f"topology.address={address}" in proc.stderr
        assert "ray start --head" in proc.stderr
        assert "Traceback" not in proc.stderr
