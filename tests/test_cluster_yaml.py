"""cluster.yaml stays a valid Ray cluster launcher config that can host the cluster topology."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from veltrix_ray import load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert isinstance(config, dict), "cluster.yaml must be a YAML mapping"
    return config


@pytest.fixture(scope="module")
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` validates: the file merged with the AWS defaults (no cloud calls)."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: node for name, node in config["available_node_types"].items()
            if name != config["head_node_type"]}


def test_file_matches_ray_schema_as_written(raw: dict[str, Any]) -> None:
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(raw, json.loads(schema_path.read_text()))


def test_passes_ray_up_validation(prepared: dict[str, Any]) -> None:
    assert prepared["cluster_name"] == "veltrix-ray"
    provider = prepared["provider"]
    assert provider["type"] == "aws"
    assert provider["region"] == "us-east-1"
    assert provider["cache_stopped_nodes"] is False
    assert prepared["auth"]["ssh_user"] == "ubuntu"


def test_head_and_worker_node_types(prepared: dict[str, Any]) -> None:
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    assert head in types
    assert types[head]["max_workers"] == 0
    workers = _worker_types(prepared)
    assert workers, "cluster.yaml needs a worker node type besides the head"
    for name, node in types.items():
        assert "CPU" in node["resources"], f"node type {name} must declare its CPU"
        assert node["node_config"].get("InstanceType"), f"node type {name} needs InstanceType"
    for name, node in workers.items():
        assert "memory" in node["resources"], f"worker type {name} must declare memory"
        assert 0 <= node["min_workers"] <= node["max_workers"], name
        assert node["max_workers"] <= prepared["max_workers"], name
    assert sum(n["min_workers"] for n in workers.values()) <= prepared["max_workers"]
    assert any(n["max_workers"] > n["min_workers"] for n in workers.values()), \
        "no worker type can scale up: max_workers must exceed min_workers somewhere"


def test_worker_nodes_fit_the_cluster_topology(prepared: dict[str, Any]) -> None:
    topology = load_config(["topology=cluster", "kafka.topic=any"]).topology
    for name, node in _worker_types(prepared).items():
        resources = node["resources"]
        assert resources["CPU"] >= topology.num_cpus, name
        assert resources["memory"] >= topology.memory_mb * 2**20, (
            f"worker type {name} offers {resources['memory']} bytes of memory; one "
            f"topology=cluster worker reserves {topology.memory_mb} MiB")


def test_setup_installs_veltrix_ray_from_the_mounted_checkout(prepared: dict[str, Any]) -> None:
    commands = prepared["head_setup_commands"] + prepared["worker_setup_commands"]
    installs = [c for c in commands if "pip install" in c and "veltrix-ray" in c]
    assert installs, f"no setup command installs veltrix-ray: {commands}"
    for command in prepared["setup_commands"]:
        assert "git+" not in command and "://" not in command, \
            f"setup must not fetch the project from a network host: {command}"
    mounts = prepared["file_mounts"]
    remote_roots = {os.path.dirname(remote) for remote in mounts}
    assert any(root in " ".join(installs) for root in remote_roots), (installs, mounts)
    assert any(remote.endswith("/pyproject.toml") for remote in mounts)
    for remote, local in mounts.items():
        assert (ROOT / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    assert any(c.startswith("ray start --head") or "ray start --head" in c
               for c in prepared["head_start_ray_commands"])
