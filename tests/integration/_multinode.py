"""A multi-node Ray cluster on this machine (ray.cluster_utils.Cluster) losing a node mid-run.

Run by tests/integration/test_ray_cluster.py in its own process (with its own RAY_TMPDIR), so
it never meets the test session's Ray:

    python _multinode.py '{"bootstrap": ..., "dsn": ..., "topic": ..., "expected_rows": ...}'

The head has no CPUs (it hosts the coordinator and the dashboard); two worker nodes of one CPU
each get one PartitionWorker each (placement SPREAD). Once rows are flowing, the node of one
worker is killed and a replacement node joins; the coordinator restarts the lost worker there.
The last stdout line is `RESULT <json>`."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from typing import Any

# Every node on 127.0.0.1: otherwise Ray turns a loopback address into the host's own IP
# (services.resolve_ip_for_localhost), where nothing of this cluster listens.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_actors  # noqa: E402

from veltrix_ray import Pipeline, RunSummary, load_config  # noqa: E402

MiB = 2**20
WORKER = re.compile(r"^veltrix:[^:]+:w(\d+)\.(\d+)$")
COORDINATOR = re.compile(r"^veltrix:[^:]+$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_node_args() -> dict[str, Any]:
    return {"num_cpus": 1, "memory": 1024 * MiB, "object_store_memory": 100 * MiB,
            "resources": {"veltrix_worker_node": 1}, "node_ip_address": "127.0.0.1"}


def alive_actors() -> dict[str, str]:
    """name -> node id of the veltrix actors that are alive now."""
    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000, timeout=10,
                         raise_on_missing_output=False)
    return {a.name: a.node_id for a in actors
            if a.name and a.node_id and a.name.startswith("veltrix:")}


def wait_for(what: str, check: Any, timeout: float, run: threading.Thread,
             outcome: dict[str, Any]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if not run.is_alive():
            raise RuntimeError(f"the run ended while waiting for {what}; "
                               f"{outcome.get('error') or 'it reported no error'}")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def main(args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"ok": False}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 100 * MiB, "node_ip_address": "127.0.0.1",
        "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port(),
        # find a dead node in ~3 s rather than ~30 s
        "_system_config": {"health_check_period_ms": 1000,
                           "health_check_failure_threshold": 3},
    })
    try:
        nodes = [cluster.add_node(**worker_node_args()) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        pipeline = Pipeline(load_config([
            f"kafka.topic={args['topic']}", f"kafka.bootstrap={args['bootstrap']}",
            f"postgres.dsn='{args['dsn']}'", "until=drained", "topology.placement=SPREAD",
            "topology.workers=2", "topology.num_cpus=1", "topology.memory_mb=768",
            "topology.max_restarts=5", f"batch.max_records={args.get('max_records', 500)}",
            "progress_interval_s=0.5",
        ]))
        latest: list[RunSummary] = []
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["summary"] = pipeline.run(on_progress=latest.append)
            except BaseException as exc:  # noqa: BLE001 - reported in the result
                outcome["error"] = "".join(traceback.format_exception(exc))

        thread = threading.Thread(target=run, name="pipeline", daemon=True)
        started = time.monotonic()
        thread.start()

        def placed() -> dict[str, str] | None:
            actors = alive_actors()
            workers = {n: node for n, node in actors.items() if WORKER.match(n)}
            coordinator = [node for n, node in actors.items() if COORDINATOR.match(n)]
            if len(workers) == 2 and coordinator:
                return {**workers, "coordinator": coordinator[0]}
            return None

        placement = wait_for("two workers alive", placed, 90, thread, outcome)
        coordinator_node = placement.pop("coordinator")
        result["initial_placement"] = placement
        result["coordinator_node"] = coordinator_node
        # mid-run: rows committed, but far from all of them
        wait_for("first commits", lambda: latest and latest[-1].rows >= args["remove_after_rows"],
                 120, thread, outcome)
        by_id = {n.node_id: n for n in nodes}
        victim_name, victim_id = next((name, node) for name, node in sorted(placement.items())
                                      if node != coordinator_node and node in by_id)
        result["rows_at_removal"] = latest[-1].rows
        result["run_alive_at_removal"] = thread.is_alive()
        result["removed_node"] = victim_id
        result["removed_worker"] = victim_name
        result["removed_after_s"] = time.monotonic() - started
        cluster.remove_node(by_id[victim_id], allow_graceful=False)
        replacement = cluster.add_node(**worker_node_args())
        result["replacement_node"] = replacement.node_id
        index = WORKER.match(victim_name).group(1)  # type: ignore[union-attr]

        def restarted() -> str | None:
            for name, node in alive_actors().items():
                m = WORKER.match(name)
                if m and m.group(1) == index and int(m.group(2)) > 0:
                    return node
            return None

        try:
            result["restarted_on"] = wait_for("the restarted worker", restarted, 120, thread,
                                            outcome)
        except RuntimeError:  # the run finished before we saw it alive: the summary tells
            result["restarted_on"] = None
        thread.join(timeout=args.get("timeout_s", 300))
        if thread.is_alive():
            pipeline.stop()
            thread.join(timeout=30)
            raise TimeoutError("the pipeline did not finish in time")
        if "error" in outcome:
            result["error"] = outcome["error"]
            return result
        summary: RunSummary = outcome["summary"]
        result.update(ok=True, rows=summary.rows, dead_letters=summary.dead_letters,
                      elapsed_s=summary.elapsed_s, workers=summary.workers,
                      restarts=sum(w["restarts"] for w in summary.workers),
                      errors=summary.errors, table=summary.table())
        return result
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    try:
        out = main(json.loads(sys.argv[1]))
    except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
        out = {"ok": False, "error": "".join(traceback.format_exception(exc))}
    print("RESULT " + json.dumps(out, default=str), flush=True)
    sys.exit(0 if out.get("ok") else 1)
