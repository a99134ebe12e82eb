"""An explicit topology.metrics_port takes effect or stops the run, also on the stack's head."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.fakes import settings
from veltrix_ray.errors import ConfigError
from veltrix_ray.local.ray_head import RayHead
from veltrix_ray.runtime.pipeline import refuse_metrics_port

pytestmark = pytest.mark.unit


def head(metrics_port: int | None) -> RayHead:
    return RayHead(Path("/nonexistent"), Path("/nonexistent"), 16379, 2, metrics_port)


def test_a_port_the_head_does_not_export_on_is_refused_naming_the_fix() -> None:
    topo = settings("topology.metrics_port=19555").topology
    with pytest.raises(ConfigError) as refused:
        refuse_metrics_port(head(None), topo)
    for part in ("topology.metrics_port=19555", "127.0.0.1:16379", "without --with-prometheus",
                 "local up --with-prometheus"):
        assert part in str(refused.value), str(refused.value)
    with pytest.raises(ConfigError, match="exports metrics on 127.0.0.1:19100") as elsewhere:
        refuse_metrics_port(head(19100), topo)
    assert "set topology.metrics_port=19100" in str(elsewhere.value)
    assert "local up" not in str(elsewhere.value)  # the head already exports


def test_the_heads_own_port_or_none_is_taken() -> None:
    refuse_metrics_port(head(None), settings().topology)
    refuse_metrics_port(head(19100), settings().topology)
    refuse_metrics_port(head(19100), settings("topology.metrics_port=19100").topology)
