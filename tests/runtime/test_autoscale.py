"""The autoscaling law, table-driven: exact targets, codes and the causes the reasons name.

One worker commits 10,000 rows/s when fully busy in every case; the law sizes for 70 %."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from veltrix_ray.config.schema import AutoscaleConfig
from veltrix_ray.runtime.autoscale import (
    BOUNDS,
    NO_RATE,
    QUIET,
    SCALE_DOWN,
    SCALE_UP,
    SINK_BOUND,
    SINK_HOLD,
    STABILISING,
    STEADY,
    Decision,
    Observation,
    PartitionObs,
    Record,
    decide,
    size_for,
    useful,
)

pytestmark = pytest.mark.unit

NOW = 100_000.0
CONFIG = AutoscaleConfig(enabled=True, min_workers=1, max_workers=8, interval_s=15,
                         scale_down_window_s=300, target_utilisation=0.7, catch_up_s=300,
                         max_step_factor=2, max_step_add=4, stabilise_s=60, stall_s=120,
                         sink_min_gain=0.1, sink_latency_factor=2, sink_hold_s=900)


def obs(workers: int, partitions: int, *, lag: int = 0, busy: float = 0.5,
        heavy: tuple[int, ...] = (), stalled: tuple[int, ...] = (),
        stopped: tuple[int, ...] = (), trend: float = 0.0, rate: float | None = None,
        p95: float = 0.1) -> Observation:
    """`lag` rows on every partition; ×1000 and growing by `trend` rows/s on `heavy` ones;
    `busy` for every worker, at 10,000 rows/s when fully busy."""
    parts = tuple(
        PartitionObs(p, lag * (1_000 if p in heavy else 1), trend if p in heavy else 0.0,
                     progress_at=NOW - (600 if p in stalled else 1), stopped=p in stopped)
        for p in range(partitions))
    committed = workers * busy * 10_000 if rate is None else rate
    return Observation(workers, parts, committed, (busy,) * workers, p95)


def rec(ago: float, workers: int, target: int, code: str, rate: float = 0.0,
        wanted: int | None = None, p95: float = 0.1) -> Record:
    return Record(NOW - ago, workers, target, target if wanted is None else wanted, code, rate,
                  p95)


def quiet(workers: int, wanted: int, since: float) -> list[Record]:
    """A decision every 15 s at `workers`, each wanting `wanted`, the oldest `since` s ago."""
    return [rec(ago, workers, workers, QUIET, wanted=wanted)
            for ago in range(int(since), 0, -15)]


# backlog that asks for 4.5 workers' worth on 6 partitions: R = 20,000 + 3.45M/300 = 31,500
FIVE_ISH = 575_000
HUGE = 10_000_000

CASES = [
    pytest.param(obs(2, 4), [], {}, 2, STEADY, ["sized right"], id="steady-state-holds"),
    pytest.param(obs(2, 6, lag=FIVE_ISH, busy=1.0), [], {}, 6, SCALE_UP,
                 ["scale up 2→6", "needs 6", "busiest worker 3→1"],
                 id="P6-needs-4.5-takes-6-never-5"),
    pytest.param(obs(2, 6, lag=375_000), [], {}, 3, SCALE_UP,
                 ["scale up 2→3", "busiest worker 3→2"], id="P6-needs-2.5-takes-3"),
    pytest.param(obs(1, 6, lag=FIVE_ISH, busy=1.0), [], {}, 3, SCALE_UP,
                 ["scale up 1→3 (step cap 5)", "needs 6"], id="step-cap-then-useful-size"),
    pytest.param(obs(2, 32, lag=HUGE, busy=1.0), [], {"max_workers": 64}, 6, SCALE_UP,
                 ["2→6 (step cap 6)"], id="cap-plus-4"),
    pytest.param(obs(8, 32, lag=HUGE, busy=1.0), [], {"max_workers": 64}, 16, SCALE_UP,
                 ["8→16 (step cap 16)"], id="cap-times-2"),
    pytest.param(obs(2, 4, lag=HUGE, busy=1.0), [], {}, 4, SCALE_UP, ["2→4"],
                 id="never-above-partitions"),
    pytest.param(obs(4, 4, lag=HUGE, busy=1.0), [], {}, 4, STEADY,
                 ["sized right"], id="at-partitions-holds"),
    pytest.param(obs(3, 6, lag=HUGE, busy=1.0), [], {"max_workers": 5}, 3, STEADY,
                 ["needs 6, bounded by 3"], id="max-5-on-P6-is-3"),
    pytest.param(obs(2, 8, lag=HUGE, busy=1.0), [], {"max_workers": 3}, 3, SCALE_UP,
                 ["2→3"], id="never-above-max"),
    pytest.param(obs(1, 4), [], {"min_workers": 2}, 2, BOUNDS, ["outside [2, 4]"],
                 id="below-min-clamped"),
    pytest.param(obs(6, 8), [], {"max_workers": 4}, 4, BOUNDS, ["outside [1, 4]"],
                 id="above-max-clamped"),
    pytest.param(obs(2, 4, busy=0.05), quiet(2, 2, 600), {"min_workers": 2}, 2, STEADY,
                 ["sized right"], id="never-below-min"),
    pytest.param(obs(4, 4, busy=0.125), quiet(4, 1, 300), {}, 2, SCALE_DOWN,
                 ["scale down 4→2", "scale_down_window_s 300"],
                 id="quiet-window-one-step-down"),
    pytest.param(obs(2, 4, busy=0.25), quiet(2, 1, 300), {}, 1, SCALE_DOWN,
                 ["scale down 2→1"], id="quiet-window-down-to-wanted"),
    pytest.param(obs(8, 8, busy=0.0625), quiet(8, 1, 300), {"max_step_factor": 1}, 4,
                 SCALE_DOWN, ["scale down 8→4"], id="step-factor-1-still-steps-down"),
    pytest.param(obs(4, 4, busy=0.125), quiet(4, 1, 200), {}, 4, QUIET,
                 ["quiet for 200s of scale_down_window_s 300s"], id="quiet-window-incomplete"),
    pytest.param(obs(4, 4, busy=0.125), [*quiet(4, 4, 600)[:-14], *quiet(4, 1, 120)], {}, 4,
                 QUIET, ["quiet for 120s"], id="quiet-window-restarts-after-busy"),
    pytest.param(obs(4, 4, busy=0.125),
                 [rec(100, 2, 4, SCALE_UP, 20_000), *quiet(4, 1, 85)], {}, 4, QUIET,
                 ["quiet for 85s"], id="no-scale-down-soon-after-scale-up"),
    pytest.param(obs(4, 4, busy=0.125), [rec(30, 2, 4, SCALE_UP, 20_000)], {}, 4,
                 STABILISING, ["30s ago", "stabilise_s 60"], id="stabilising-after-change"),
    pytest.param(obs(1, 4, lag=50_000, heavy=(0,), stalled=(0,), trend=1_000.0), [], {}, 1,
                 STEADY, ["partitions [0] stalled/stopped/unowned: lag ignored"],
                 id="stalled-partition-lag-ignored"),
    pytest.param(obs(1, 4, lag=50_000, heavy=(2,), stopped=(2,)), [], {}, 1, STEADY,
                 ["partitions [2]"], id="limit-stopped-partition-ignored"),
    pytest.param(obs(1, 4, lag=50_000, heavy=(0,), trend=20_000.0), [], {}, 4, SCALE_UP,
                 ["1→4", "incoming 25,000 rows/s"], id="growing-lag-counts-as-incoming"),
    pytest.param(obs(1, 4, lag=50_000, heavy=(0,)), [], {}, 4, SCALE_UP, ["1→4"],
                 id="same-lag-progressing-scales-up"),
    pytest.param(obs(1, 4, lag=HUGE, rate=0.0), [], {}, 1, NO_RATE,
                 ["no committed rate"], id="no-rate-yet-holds"),
    pytest.param(obs(2, 8, lag=HUGE, busy=1.0, rate=20_800),
                 [rec(120, 1, 2, SCALE_UP, 20_000)], {}, 1, SINK_BOUND,
                 ["sink_bound", "20,000→20,800 rows/s (+4%", "PostgreSQL", "back to 1"],
                 id="sink-gate-reverts"),
    pytest.param(obs(4, 8, lag=HUGE, busy=1.0, rate=72_000),
                 [rec(400, 1, 2, SCALE_UP, 40_000), rec(120, 2, 4, SCALE_UP, 70_000)], {}, 2,
                 SINK_BOUND, ["2→4 workers", "back to 2 (best size seen)"],
                 id="sink-gate-reverts-to-best-of-chain"),
    pytest.param(obs(4, 8, lag=HUGE, busy=1.0, rate=48_000, p95=0.5),
                 [rec(120, 2, 4, SCALE_UP, 40_000, p95=0.2)], {}, 2, SINK_BOUND,
                 ["commit p95 0.2→0.5s", "rate per worker fell 20,000→12,000"],
                 id="latency-up-per-worker-rate-down-gates"),
    pytest.param(obs(4, 8, lag=HUGE, busy=1.0, rate=48_000, p95=0.3),
                 [rec(120, 2, 4, SCALE_UP, 40_000, p95=0.2)], {}, 8, SCALE_UP, ["4→8"],
                 id="latency-up-a-little-does-not-gate"),
    pytest.param(obs(2, 8, lag=HUGE, busy=1.0),
                 [rec(120, 1, 2, SCALE_UP, 10_000)], {}, 4, SCALE_UP, ["2→4"],
                 id="effective-step-continues"),
    pytest.param(obs(1, 8, lag=HUGE, busy=1.0),
                 [rec(400, 1, 2, SCALE_UP, 20_000), rec(300, 2, 1, SINK_BOUND, 20_800)], {},
                 1, SINK_HOLD, ["sink_bound 300s ago", "sink_hold_s 900"],
                 id="sink-hold-blocks-scale-up"),
    pytest.param(obs(1, 8, lag=HUGE, busy=1.0),
                 [rec(1400, 1, 2, SCALE_UP, 20_000), rec(1000, 2, 1, SINK_BOUND, 20_800)], {},
                 4, SCALE_UP, ["1→4 (step cap 5)"], id="after-hold-tries-again"),
    pytest.param(obs(2, 8, busy=0.1, rate=2_000, p95=1.0),
                 [rec(120, 1, 2, SCALE_UP, 10_000, p95=0.1)], {}, 2, QUIET, ["1 would do"],
                 id="drained-after-step-is-no-gate"),
    pytest.param(obs(4, 4, lag=HUGE, busy=1.0, rate=10_500),
                 [rec(120, 1, 4, SCALE_UP, 10_000)], {"max_workers": 4}, 1, SINK_BOUND,
                 ["1→4 workers", "PostgreSQL", "back to 1"],
                 id="a-step-straight-to-the-maximum-is-judged-too"),
    pytest.param(obs(4, 4, lag=HUGE, busy=1.0),
                 [rec(120, 1, 4, SCALE_UP, 10_000)], {"max_workers": 4}, 4, STEADY, [],
                 id="an-effective-step-to-the-maximum-holds"),
]


@pytest.mark.parametrize(("observation", "history", "overrides", "target", "code", "says"),
                         CASES)
def test_law(observation: Observation, history: list[Record], overrides: dict[str, Any],
             target: int, code: str, says: list[str]) -> None:
    d = decide(observation, history, replace(CONFIG, **overrides), NOW)
    assert (d.target, d.code) == (target, code), d.reason
    for fragment in says:
        assert fragment in d.reason, d.reason


@pytest.mark.parametrize(("partitions", "sizes"), [
    (6, [1, 2, 3, 3, 3, 6]),
    (4, [1, 2, 2, 4]),
    (7, [1, 2, 3, 4, 4, 4, 7]),
])
def test_only_sizes_that_lower_the_busiest_worker(partitions: int, sizes: list[int]) -> None:
    assert [useful(partitions, n) for n in range(1, partitions + 1)] == sizes


@pytest.mark.parametrize(("required", "partitions", "workers"), [
    (0.0, 6, 1), (7_000.0, 6, 1), (7_001.0, 6, 2), (14_000.0, 6, 2), (21_000.0, 6, 3),
    (21_001.0, 6, 6), (17_500.0, 7, 4), (1e9, 6, 6),
])
def test_size_for(required: float, partitions: int, workers: int) -> None:
    assert size_for(required, 10_000.0, partitions, 0.7) == workers


def test_backlog_growth_climbs_in_bounded_steps_and_never_past_partitions() -> None:
    """Replays the law tick by tick: each step within the cap, only useful sizes."""
    history: list[Record] = []
    n, now, sizes = 1, NOW, []
    for _ in range(20):
        o = replace(obs(n, 12, lag=HUGE, busy=1.0), workers=n)
        d: Decision = decide(o, history, replace(CONFIG, max_workers=64), now)
        history.append(Record.of(o, d, now))
        if d.target != n:
            assert d.target <= max(2 * n, n + 4)
            sizes.append(d.target)
        n, now = d.target, now + 61
    assert sizes == [4, 6, 12]
