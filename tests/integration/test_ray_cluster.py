"""veltrix-ray on real Ray clusters of its own: a job submitted to a `ray start` head, and a
multi-node cluster that loses a node mid-run.

Each cluster lives in other processes with its own temp dir (never the test session's Ray),
on 127.0.0.1 only, and is torn down by process group, never by `ray stop`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from ray.job_submission import JobStatus, JobSubmissionClient

from veltrix_ray import produce
from veltrix_ray.local.procs import free_port
from veltrix_ray.source.admin import partition_count

VENV_BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
# Without it Ray swaps a loopback address for the host's own IP, where nothing listens.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Ray's token authentication with a token of this module's own (never ~/.ray/auth_token).
TOKEN = secrets.token_hex(32)
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


# -- helpers ---------------------------------------------------------------------------------

def _produce(bootstrap: str, topic: str, events: int, partitions: int, seed: int,
             bad_fraction: float) -> set[str]:
    """Writes the events; returns the event_ids of the good ones (what must land in `events`)."""
    report = asyncio.run(produce.produce(bootstrap, topic, events=events, partitions=partitions,
                                         seed=seed, bad_fraction=bad_fraction))
    good = {r.event_id for r in produce.generate(events, seed=seed, bad_fraction=bad_fraction)
            if r.event_id is not None}
    assert report.good == len(good)
    return good


async def _watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    count = await partition_count(bootstrap, topic)
    assert count, f"topic {topic} has no partitions"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def _dsn_override(dsn: str) -> str:
    """A libpq key=value DSN holds spaces and '=': quote it for Hydra."""
    return f"postgres.dsn='{dsn}'"


def _check_postgres(dsn: str, bootstrap: str, topic: str, good: set[str], events: int) -> None:
    watermarks = asyncio.run(_watermarks(bootstrap, topic))
    assert sum(watermarks.values()) == events
    with psycopg.connect(dsn) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()  # type: ignore[misc]
        ids = {row[0] for row in conn.execute("SELECT event_id::text FROM events")}
        dead = conn.execute("SELECT count(*) FROM veltrix_dead_letters WHERE topic = %s",
                            (topic,)).fetchone()[0]  # type: ignore[index]
        offsets: dict[int, int | None] = dict(conn.execute(
            "SELECT partition, next_offset FROM veltrix_offsets WHERE topic = %s",
            (topic,)).fetchall())
    assert total == distinct, f"{total - distinct} duplicate event_ids"
    assert total == len(good)
    assert ids == good, (f"missing {len(good - ids)}, unexpected {len(ids - good)}")
    assert dead == events - len(good)
    assert offsets == watermarks


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the process group started with start_new_session=True, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait  # the group may outlive its leader a little
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            break


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_using(temp_dir: str) -> list[psutil.Process]:
    """Ray processes of the cluster living in temp_dir (raylet, gcs, workers, dashboard)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _assert_all_gone(temp_dir: str, grace: float = 15.0) -> None:
    deadline = time.monotonic() + grace  # workers notice their raylet's death on their own
    left = _processes_using(temp_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _processes_using(temp_dir)
    for proc in left:  # do not leak them into the rest of the session, but fail
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, "Ray processes survived the teardown: " + ", ".join(
        f"{p.pid}" for p in left)


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short temp dir: Ray's unix socket paths must stay below ~107 characters."""
    path = tempfile.mkdtemp(prefix="vx", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(LOOPBACK, **AUTH, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


# -- job submission to a `ray start` head ----------------------------------------------------

class RayHead:
    """`ray start --head --block` in its own session; stopped by killing that session."""

    def __init__(self, temp_dir: str, log: Path) -> None:
        self.temp_dir = temp_dir
        self.log = log
        self.port = free_port()
        self.dashboard_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> None:
        cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
               "--node-ip-address=127.0.0.1", f"--port={self.port}",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.dashboard_port}",
               f"--dashboard-agent-listen-port={free_port()}",
               f"--ray-client-server-port={free_port()}",
               "--num-cpus=2", "--object-store-memory=150000000", f"--temp-dir={self.temp_dir}"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         # SIGTERM: no 30 s drain of a node about to vanish
                                         env=_env(RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"),
                                         start_new_session=True)

    def client(self, timeout: float = 120.0) -> JobSubmissionClient:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"`ray start --head` exited with {self.proc.returncode}:\n"
                            f"{self.log.read_text(errors='replace')[-5000:]}", pytrace=False)
            if "Ray runtime started" not in self.log.read_text(errors="replace"):
                time.sleep(0.5)  # the head is still starting (SIGTERM now would hang it)
                continue
            try:
                return JobSubmissionClient(self.dashboard,
                                           headers={"Authorization": f"Bearer {TOKEN}"})
            except Exception as exc:  # noqa: BLE001 - the job server is not up yet
                last = exc
                time.sleep(1.0)
        pytest.fail(f"the job server at {self.dashboard} did not answer within {timeout:.0f}s "
                    f"({last}); head log:\n{self.log.read_text(errors='replace')[-5000:]}",
                    pytrace=False)

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
        _assert_all_gone(self.temp_dir)


def test_job_submission_runs_the_pipeline_exactly_once(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str], repo_root: Path,
        short_tmp: str, tmp_path: Path) -> None:
    events, topic = 3000, new_topic(4)
    good = _produce(kafka_bootstrap, topic, events, partitions=4, seed=11, bad_fraction=0.01)
    head = RayHead(short_tmp, tmp_path / "ray-head.log")
    head.start()
    try:
        client = head.client()
        entrypoint = shlex.join([
            "veltrix-ray", "run", f"kafka.topic={topic}", "until=drained", "topology=cluster",
            "topology.address=auto", "topology.workers=2", "topology.num_cpus=0.5",
            "topology.memory_mb=768", _dsn_override(pg_dsn), f"kafka.bootstrap={kafka_bootstrap}",
        ])
        job = client.submit_job(entrypoint=entrypoint, runtime_env={
            "working_dir": str(repo_root),
            "excludes": [".venv", ".git", ".veltrix", ".ruff_cache", "*.egg-info",
                         "__pycache__", "notebooks/.ipynb_checkpoints"],
            "env_vars": {"VELTRIX_KAFKA_BOOTSTRAP": kafka_bootstrap,
                         "VELTRIX_POSTGRES_DSN": pg_dsn, **LOOPBACK},
        })
        deadline = time.monotonic() + 240
        status = client.get_job_status(job)
        while not status.is_terminal() and time.monotonic() < deadline:
            time.sleep(1.0)
            status = client.get_job_status(job)
        logs = client.get_job_logs(job)
        if not status.is_terminal():
            client.stop_job(job)
        assert status == JobStatus.SUCCEEDED, (
            f"job {job} ended {status}: {client.get_job_info(job).message}\n--- job logs ---\n"
            f"{logs[-8000:]}")
        written = re.search(r"rows written ([\d,]+)", logs)
        assert written and int(written[1].replace(",", "")) == len(good), logs[-4000:]
    finally:
        head.stop()
    _check_postgres(pg_dsn, kafka_bootstrap, topic, good, events)


# -- multi-node: SPREAD placement, a node lost mid-run ---------------------------------------

def test_multinode_spread_survives_losing_a_node(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str], short_tmp: str,
        tmp_path: Path) -> None:
    events, topic = 200_000, new_topic(8)
    good = _produce(kafka_bootstrap, topic, events, partitions=8, seed=5, bad_fraction=0.005)
    args = {"bootstrap": kafka_bootstrap, "dsn": pg_dsn, "topic": topic, "max_records": 500,
            "remove_after_rows": len(good) // 10, "timeout_s": 300}
    log = tmp_path / "multinode.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "_multinode.py"), json.dumps(args)],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            env=_env(RAY_TMPDIR=short_tmp), cwd=tmp_path, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            _kill_group(proc, grace=10)
            out, _ = proc.communicate()
            pytest.fail(f"the multi-node script timed out; log:\n"
                        f"{log.read_text(errors='replace')[-6000:]}", pytrace=False)
        finally:
            _kill_group(proc, grace=10)
            _assert_all_gone(short_tmp)
    lines = [x for x in out.decode(errors="replace").splitlines() if x.startswith("RESULT ")]
    assert lines, f"no result (exit {proc.returncode}); log:\n{log.read_text()[-6000:]}"
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["ok"], f"{result.get('error')}\nlog:\n{log.read_text()[-4000:]}"

    placement = result["initial_placement"]
    assert len(placement) == 2 and len(set(placement.values())) == 2, \
        f"SPREAD put both workers on one node: {placement}"
    assert result["run_alive_at_removal"], "the node was removed after the run had finished"
    assert 0 < result["rows_at_removal"] < len(good), result["rows_at_removal"]
    assert result["restarts"] >= 1, result["table"]
    restarted = [w for w in result["workers"] if w["restarts"] >= 1]
    assert restarted and all(not w["worker"].endswith(".0") for w in restarted), result["table"]
    assert result["restarted_on"] in (None, result["replacement_node"]), result
    assert not result["errors"], result["table"]
    _check_postgres(pg_dsn, kafka_bootstrap, topic, good, events)
