"""The autoscaler's bookkeeping around the pure law: rates and lag trends from progress
reports, owned/stopped partitions, manual rescales pausing it."""

from __future__ import annotations

from typing import Any

import pytest

from veltrix_ray.config.schema import AutoscaleConfig
from veltrix_ray.runtime.scaler import Autoscaler

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(committed: dict[int, int], hw: dict[int, int], busy: float = 0.5,
           stopped: frozenset[int] = frozenset()) -> dict[str, Any]:
    return {"partitions": {p: {"committed": c, "high_watermark": hw[p],
                               "error": "limit" if p in stopped else None}
                           for p, c in committed.items()},
            "workers": [{"slot": 0, "status": "running", "busy_ratio": busy,
                         "commit_p95_s": 0.02}]}


def test_rates_and_trends_come_from_the_interval_between_two_reports() -> None:
    clock = Clock()
    scaler = Autoscaler(AutoscaleConfig(enabled=True, interval_s=10), "p", clock)
    scaler.observe(report({0: 0, 1: 0}, {0: 1000, 1: 1000}), 1, {0, 1})
    clock.now += 10
    obs = scaler.observe(report({0: 500, 1: 100}, {0: 2000, 1: 1000}, stopped=frozenset({1})),
                         1, {0})
    assert obs.committed_rate == pytest.approx(60.0)  # (500 + 100) / 10 s
    by = {p.partition: p for p in obs.partitions}
    assert by[0].lag == 1500 and by[0].lag_trend == pytest.approx(50.0)
    assert by[1].lag == 900 and by[1].stopped and not by[1].owned
    assert by[0].progress_at == clock.now
    assert obs.busy == (0.5,) and obs.commit_p95_s == 0.02


def test_a_growing_backlog_scales_up_and_a_manual_rescale_pauses_it() -> None:
    clock = Clock()
    cfg = AutoscaleConfig(enabled=True, min_workers=1, max_workers=4, interval_s=5,
                          stabilise_s=0, catch_up_s=10)
    scaler = Autoscaler(cfg, "p", clock)
    owned = {0, 1, 2, 3}
    hw = dict.fromkeys(range(4), 100_000)
    assert scaler.due()
    scaler.decide(report(dict.fromkeys(range(4), 0), hw, busy=1.0), 1, owned)
    clock.now += 5
    decision = scaler.decide(report(dict.fromkeys(range(4), 1_000), hw, busy=1.0), 1, owned)
    assert decision.code == "scale_up" and decision.target == 4  # cap max(×2, +4)
    assert not scaler.due()
    clock.now += 5
    assert scaler.due()
    scaler.manual(2, 3)
    assert not scaler.due() and scaler.state()["paused"]
    clock.now += cfg.scale_down_window_s
    assert scaler.due()
    assert scaler.state()["decision"] == "scale_up"
