"""Autoscaling on an autoscaling Ray cluster: Ray's `fake_multinode` node provider starts and
removes real raylets on this machine as if they were cloud nodes.

`ray.cluster_utils.AutoscalingCluster` cannot be used (Ray 2.60's wheel lacks the
`example.yaml` it reads, and it runs `ray stop --force`, which kills every Ray on the machine),
so the test writes the autoscaler config itself and starts the head the same way:
`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=<yaml>`, with a temp dir, ports and
an auth token of its own; it is stopped by signalling that head's process group.

The head has no CPUs: every veltrix worker (topology.num_cpus=1) needs a fake node of one CPU.
`min_workers: 1` keeps one such node: the fake provider cannot declare `memory` for a node
type, and Ray's autoscaler learns it from the first node of the type; before that, a demand
that asks for memory (every veltrix worker does) matches no node type."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from veltrix_ray.local.procs import free_port

from .helpers import assert_exact, fill
from .test_operator_verbs import CLI, status
from .test_ray_cluster import VENV_BIN, _assert_all_gone, _env, _kill_group

MiB = 2**20
MAX_NODES = 3
IDLE_MINUTES = 0.1  # a fake node idle this long is removed
# the fake provider names its nodes by id: the head ...00000, workers ...00001 onwards
FAKE_NODE = "f" * 51

# a Ray driver that writes the cluster's alive nodes twice a second (ray.nodes())
WATCH = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
with open(sys.argv[2], "a") as out:
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        out.write(json.dumps({"t": time.time(), "alive": sorted(n["NodeID"] for n in alive),
                              "cpu": sum(n["Resources"].get("CPU", 0) for n in alive)}) + "\\n")
        out.flush()
        time.sleep(0.5)
"""


def autoscaler_config(gcs: str) -> dict[str, Any]:
    """What Ray's fake_multi_node/example.yaml holds, with one worker type of 1 CPU."""
    return {
        "cluster_name": "veltrix-fake",
        "max_workers": MAX_NODES,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_MINUTES,
        "provider": {"type": "fake_multinode", "gcs_address": gcs, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu1": {"resources": {"CPU": 1, "object_store_memory": 100 * MiB},
                     "node_config": {}, "min_workers": 1, "max_workers": MAX_NODES},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


class FakeCluster:
    """`ray start --head --block` with the fake_multinode autoscaler, in its own session."""

    def __init__(self, temp_dir: str) -> None:
        self.temp_dir = temp_dir
        self.port = free_port()
        self.log = Path(temp_dir) / "head.log"
        self.nodes_log = Path(temp_dir) / "nodes.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.watcher: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        # nodes the autoscaler starts take the head's temp dir; RAY_TMPDIR keeps anything
        # else (a driver's own files) there too
        return _env(RAY_TMPDIR=self.temp_dir, **extra)

    def start(self) -> None:
        config = Path(self.temp_dir) / "autoscaler.yaml"
        config.write_text(yaml.safe_dump(autoscaler_config(self.address)))
        cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
               "--node-ip-address=127.0.0.1", f"--port={self.port}",
               f"--autoscaling-config={config}", "--num-cpus=0",
               "--object-store-memory=100000000", "--include-dashboard=false",
               f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--ray-client-server-port={free_port()}", f"--temp-dir={self.temp_dir}"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
                             VELTRIX_NO_CODEC="1",  # its nodes' workers: see test_autoscale
                             RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"),
                start_new_session=True)

    def wait_up(self, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the fake autoscaling cluster did not start (exit "
                            f"{self.proc.poll()}):\n{self.log.read_text(errors='replace')[-5000:]}"
                            f"\n{self.monitor_log()}", pytrace=False)
            time.sleep(0.3)
        self.watcher = subprocess.Popen(
            [sys.executable, "-c", WATCH, self.address, str(self.nodes_log), self.temp_dir],
            stdout=subprocess.DEVNULL, stderr=(Path(self.temp_dir) / "watch.log").open("wb"),
            stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True)

    def nodes(self) -> list[dict[str, Any]]:
        """Every snapshot of the alive nodes so far."""
        if not self.nodes_log.exists():
            return []
        lines = self.nodes_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def alive(self) -> list[str]:
        seen = self.nodes()
        return seen[-1]["alive"] if seen else []

    def monitor_log(self, lines: int = 40) -> str:
        """The autoscaler's decisions (its event summary), for failure messages."""
        logs = sorted(Path(self.temp_dir).glob("session_*/logs/monitor.log"))
        if not logs:
            return "(no autoscaler log)"
        text = logs[-1].read_text(errors="replace").splitlines()
        return "\n".join([x for x in text if "event_summary" in x or "ERROR" in x][-lines:])

    def stop(self) -> None:
        try:
            for proc in (self.watcher, self.proc):
                if proc is not None:
                    _kill_group(proc, grace=20)
        finally:
            _assert_all_gone(self.temp_dir)


@pytest.fixture
def fake_cluster() -> Iterator[FakeCluster]:
    # short: Ray's unix socket paths must stay below ~107 characters
    path = tempfile.mkdtemp(prefix="vxf", dir="/tmp")
    cluster = FakeCluster(path)
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(path, ignore_errors=True)


def test_a_backlog_adds_fake_nodes_and_idle_nodes_are_removed(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str],
        fake_cluster: FakeCluster, tmp_path: Path) -> None:
    fake_cluster.start()  # boots while the backlog is written
    topic = new_topic(3)
    exp = fill(kafka_bootstrap, topic, 300_000, 3, seed=8)
    fake_cluster.wait_up()
    over = [f"kafka.topic={topic}", f"postgres.dsn={pg_dsn}"]
    # the head has no CPUs: a fixed cluster would be refused, an autoscaling one is not
    check = subprocess.run([*CLI, "check", *over, f"topology.address={fake_cluster.address}",
                            "topology.workers=1", "topology.num_cpus=1",
                            "topology.memory_mb=768"], capture_output=True, text=True,
                           env=fake_cluster.env(), timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"^ok +ray: .*\(it autoscales\)$", check.stdout, re.M), check.stdout
    out, err = (tmp_path / "run.out").open("w"), (tmp_path / "run.err").open("w")
    run = subprocess.Popen(
        [*CLI, "run", *over, f"topology.address={fake_cluster.address}", "topology.workers=1",
         "topology.num_cpus=1", "topology.memory_mb=768", "topology.placement=SPREAD",
         "topology.place_timeout_s=120", "batch.max_records=500", "progress_interval_s=0.5",
         "topology.autoscale.enabled=true", "topology.autoscale.min_workers=1",
         f"topology.autoscale.max_workers={MAX_NODES}", "topology.autoscale.interval_s=1",
         "topology.autoscale.stabilise_s=2", "topology.autoscale.catch_up_s=1",
         "topology.autoscale.scale_down_window_s=4",
         # this test is about nodes: the sink gate (test_scaling.py) stays out of the way
         "topology.autoscale.sink_min_gain=0", "topology.autoscale.sink_latency_factor=1000"],
        stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        env=fake_cluster.env(RAY_DEDUP_LOGS="0", VELTRIX_NO_CODEC="1"),  # see test_autoscale
        start_new_session=True)
    seen: list[dict[str, Any]] = []

    def why() -> str:
        return (f"\n--- run stderr ---\n{(tmp_path / 'run.err').read_text()[-3000:]}"
                f"\n--- autoscaler ---\n{fake_cluster.monitor_log()}"
                f"\n--- nodes ---\n{fake_cluster.alive()}")

    def watch(what: str, pred: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert run.poll() is None, f"the run ended ({run.returncode}) before {what}{why()}"
            st = status(over)
            seen.append(st)
            if pred(st):
                return
            assert time.monotonic() < deadline, f"never {what}: {st}{why()}"
            time.sleep(0.3)

    def nodes_of(st: dict[str, Any]) -> set[str]:
        """Where the live workers run (a retired worker's report has no slot)."""
        return {w["node"] for w in st["worker_reports"]
                if w.get("node") and w.get("slot") is not None}

    try:
        watch("workers on more than one node",
              lambda st: st["running"] and st["workers"] > 1 and len(nodes_of(st)) > 1, 120)
        spread = seen[-1]
        watch("drained", lambda st: st["running"] and st["lag"] == 0, 120)
        watch("scaled back in", lambda st: st["workers"] == 1 and st["target_workers"] == 1,
              90)
        # the retirees' nodes are idle now: the autoscaler removes them after the idle timeout
        deadline = time.monotonic() + IDLE_MINUTES * 60 + 45
        while len(fake_cluster.alive()) > 2 and time.monotonic() < deadline:
            assert run.poll() is None, f"the run ended ({run.returncode}){why()}"
            time.sleep(0.5)
        final = status(over)
        run.send_signal(signal.SIGINT)
        run.wait(timeout=90)
    finally:
        if run.poll() is None:
            _kill_group(run, grace=10)
        out.close()
        err.close()
    assert run.returncode == 0, why()

    history = fake_cluster.nodes()
    peak = max(len(s["alive"]) for s in history)
    head = [n for n in history[0]["alive"] if n.endswith("00000")]
    # nodes joined: the head plus more than one fake worker node at the peak
    assert peak >= 3, f"at most {peak} nodes alive{why()}"
    # the workers landed on fake worker nodes, on more than one of them at once
    assert len(nodes_of(spread)) > 1 and all(
        n.startswith(FAKE_NODE) and n not in head for n in nodes_of(spread)), spread
    # the quiet window scaled the run in, and the idle nodes went: the head and min_workers=1
    decisions = [c["decision"] for c in seen[-1]["autoscale"]["changes"]]
    assert "scale_up" in decisions and decisions[-1] == "scale_down", decisions
    assert len(fake_cluster.alive()) == 2, f"nodes left: {fake_cluster.alive()}{why()}"
    assert len(nodes_of(final)) == 1 and nodes_of(final) <= set(fake_cluster.alive()), final
    assert_exact(pg_dsn, topic, exp)
