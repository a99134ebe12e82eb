"""topology.address: a private Ray on this machine, or a cluster to join, and whether it answers.

null or `local` starts a Ray of the run's own, even when another Ray runs on this machine or
$RAY_ADDRESS is set: a notebook user's `ray start --head` is never joined by accident. `auto`,
`host:port` and `ray://host:port` join a running cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

LOCAL = "local"
AUTO = "auto"
JOIN_FIX = ("start the cluster (`ray start --head`, `ray up cluster.yaml`) or fix "
            "topology.address / $RAY_ADDRESS (null or `local` runs a private Ray on this "
            "machine)")

# run in a child process: ray.init retries an unanswering cluster for minutes, and a child can
# be killed after a timeout without leaving this process connected to (or stuck in) Ray
_RESOURCES = ("import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
              "from veltrix_ray.config.ray_address import has_autoscaler; "
              "print(json.dumps({'resources': ray.cluster_resources(), "
              "'autoscaler': has_autoscaler()}))")


def has_autoscaler() -> bool:
    """Whether the connected Ray cluster can add nodes on demand. Ray's monitor (v1) publishes
    its status in the GCS for every cluster; one started without an autoscaling config (a
    laptop, `ray start` by hand) gives each node an anonymous type, `node_<id>`. A v2
    autoscaler (KubeRay) says so in the GCS."""
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        status = _internal_kv_get("__autoscaling_status")
        if status is not None:
            types = json.loads(status).get("autoscaler_report", {}).get("node_type_mapping", {})
            return any(kind != f"node_{node}" for node, kind in types.items())
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        return bool(is_autoscaler_v2(fetch_from_server=True))
    except Exception:  # noqa: BLE001 - a Ray without these internals: take it for a fixed cluster
        return False


def is_local(address: str | None) -> bool:
    """Whether the run starts its own Ray rather than joining one."""
    return address is None or address == LOCAL


def address_problem(address: str | None) -> str | None:
    """Why `address` is not a value of topology.address; None when it is one."""
    if address is None or address in (LOCAL, AUTO):
        return None
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if colon and host and port.isdigit() and 0 < int(port) < 2**16:
        return None
    return (f"{address!r} is not null, local (a private Ray on this machine), auto, host:port "
            "or ray://host:port")


def probe(address: str, timeout_s: float) -> tuple[dict[str, float], bool]:
    """The resources of the cluster at `address` and whether it autoscales; raises
    ConnectionError saying why not, within about timeout_s. An explicit address gets a TCP
    probe first: the quickest, clearest answer when refused."""
    if address != AUTO:
        host, _, port = address.removeprefix("ray://").rpartition(":")
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    try:
        child = subprocess.run([sys.executable, "-c", _RESOURCES, address], capture_output=True,
                               text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ConnectionError(f"no answer within topology.join_timeout_s={timeout_s:g} s; is "
                              "it a Ray head's GCS port (6379 by default)?") from exc
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines() or [f"exit code {child.returncode}"]
        raise ConnectionError(lines[-1])
    found = json.loads(child.stdout.strip().splitlines()[-1])
    return dict(found["resources"]), bool(found["autoscaler"])
