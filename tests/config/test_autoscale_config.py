"""topology.autoscale.*: defaults load in every topology, bad values are findings naming the key."""

from __future__ import annotations

import pytest

from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.validate import autoscale_findings, static_findings
from veltrix_ray.errors import ConfigError

pytestmark = pytest.mark.unit


def _findings(*overrides: str) -> set[tuple[str, str]]:
    settings = to_settings(load_config(["kafka.topic=t", *overrides]))
    return {(f.level, f.key) for f in autoscale_findings(settings.topology)}


@pytest.mark.parametrize("topology", ["local", "single_node", "cluster"])
def test_defaults_are_off_and_valid(topology: str) -> None:
    settings = to_settings(load_config(["kafka.topic=t", f"topology={topology}"]))
    a = settings.topology.autoscale
    assert (a.enabled, a.min_workers, a.max_workers) == (False, 1, 8)
    assert autoscale_findings(settings.topology) == []


def test_a_valid_enabled_config_has_no_findings() -> None:
    assert _findings("topology.autoscale.enabled=true", "topology.workers=2",
                     "topology.autoscale.min_workers=1", "topology.autoscale.max_workers=4",
                     "topology.autoscale.interval_s=1",
                     "topology.autoscale.scale_down_window_s=5") == set()


K = "topology.autoscale."


@pytest.mark.parametrize(("overrides", "expected"), [
    pytest.param([K + "min_workers=0"], {("error", K + "min_workers")}, id="min-at-least-1"),
    pytest.param([K + "min_workers=4", K + "max_workers=2"], {("error", K + "max_workers")},
                 id="max-at-least-min"),
    pytest.param([K + "interval_s=0"], {("error", K + "interval_s")}, id="interval-positive"),
    pytest.param([K + "catch_up_s=0"], {("error", K + "catch_up_s")}, id="catch-up-positive"),
    pytest.param([K + "stall_s=-1"], {("error", K + "stall_s")}, id="stall-positive"),
    pytest.param([K + "scale_down_window_s=-1"], {("error", K + "scale_down_window_s")},
                 id="window-not-negative"),
    pytest.param([K + "stabilise_s=-1"], {("error", K + "stabilise_s")}, id="stabilise"),
    pytest.param([K + "sink_hold_s=-1"], {("error", K + "sink_hold_s")}, id="hold"),
    pytest.param([K + "sink_min_gain=-0.1"], {("error", K + "sink_min_gain")}, id="gain"),
    pytest.param([K + "target_utilisation=0"], {("error", K + "target_utilisation")},
                 id="utilisation-above-0"),
    pytest.param([K + "target_utilisation=1.2"], {("error", K + "target_utilisation")},
                 id="utilisation-at-most-1"),
    pytest.param([K + "max_step_factor=0.5"], {("error", K + "max_step_factor")},
                 id="step-factor-at-least-1"),
    pytest.param([K + "max_step_factor=1", K + "max_step_add=0"],
                 {("error", K + "max_step_add")}, id="some-step-up-possible"),
    pytest.param([K + "sink_latency_factor=1"], {("error", K + "sink_latency_factor")},
                 id="latency-factor-above-1"),
    pytest.param([K + "enabled=true", K + "interval_s=30", K + "scale_down_window_s=10"],
                 {("warning", K + "scale_down_window_s")}, id="window-shorter-than-interval"),
    pytest.param([K + "enabled=true", "topology.workers=6", K + "max_workers=4"],
                 {("warning", "topology.workers")}, id="workers-outside-bounds"),
    pytest.param([K + "interval_s=30", K + "scale_down_window_s=10", "topology.workers=9"],
                 set(), id="disabled-no-warnings"),
])
def test_findings_name_the_key(overrides: list[str], expected: set[tuple[str, str]]) -> None:
    assert _findings(*overrides) == expected


def test_static_findings_include_autoscale() -> None:
    settings = to_settings(load_config(["kafka.topic=t", "pipeline=events",
                                        K + "min_workers=0"]))
    errors = [f for f in static_findings(settings) if f.level == "error"]
    assert [(f.key, f.message) for f in errors] == [(K + "min_workers", "0 must be at least 1")]


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"topology\.autoscale\.max_worker"):
        load_config(["kafka.topic=t", K + "max_worker=3"])
