"""topology.address: its values, statically, and `check` on a private Ray."""

from __future__ import annotations

import pytest

from veltrix_ray.check import run_checks
from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.validate import static_findings


def _address_errors(address: str) -> list[str]:
    settings = to_settings(load_config(["kafka.topic=t", f"topology.address={address}"]))
    return [f.message for f in static_findings(settings)
            if f.level == "error" and f.key == "topology.address"]


@pytest.mark.parametrize("address", ["local", "null", "auto", "127.0.0.1:6379", "head:6379",
                                     "ray://head:10001"])
def test_every_kind_of_address_is_accepted(address: str) -> None:
    assert _address_errors(address) == []


@pytest.mark.parametrize("address", ["loacl", "head", "head:port", "ray://head", ":6379"])
def test_a_malformed_address_names_the_accepted_forms(address: str) -> None:
    (message,) = _address_errors(address)
    assert repr(address) in message and "local" in message and "host:port" in message


def test_check_sizes_a_local_address_against_this_machine() -> None:
    settings = to_settings(load_config(["kafka.topic=t", "topology.address=local"]))
    ray_findings = [f for f in run_checks(settings) if f.key in ("ray", "topology.address")]
    assert [f.level for f in ray_findings] == ["ok"], ray_findings
    import ray

    # a Ray this process already runs (an earlier test's) is the one a run would use
    where = "on the connected Ray" if ray.is_initialized() else "on this machine (a private Ray)"
    assert where in ray_findings[0].message
