"""The control plane's pure parts: `--to` parsing, the reset plan, JSON-safe status, staleness."""

from __future__ import annotations

import datetime as dt

import pytest

from veltrix_ray.control.plane import ControlRow, json_safe, running, stale_after
from veltrix_ray.control.reset import Change, Target, parse_target, plan
from veltrix_ray.control.status import render
from veltrix_ray.control.steering import status_of
from veltrix_ray.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "target"), [
    ("earliest", Target(where="earliest")),
    ("latest", Target(where="latest")),
    (" latest ", Target(where="latest")),
    ("2026-11-26T00:00:00+00:00", Target(where="2026-11-26T00:00:00+00:00")),
    ("2026-11-26 01:30:00+01:00", Target(where="2026-11-26T01:30:00+01:00")),
    ("0:1200,3:0", Target(offsets={0: 1200, 3: 0})),
    ("0 : 5, 1:7,", Target(offsets={0: 5, 1: 7})),
    ("2:9", Target(offsets={2: 9})),
])
def test_to_parses(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize(("text", "message"), [
    ("earlist", "is not earliest, latest"),
    ("2026-11-26T00:00:00", "no time zone"),
    ("0:1,0:2", "partition 0 appears twice"),
    ("0:-1", "negative"),
    ("-1:3", "negative"),
    ("0:abc", "is not earliest, latest"),
    ("", "is not earliest, latest"),
])
def test_to_refuses_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_target(text)


def test_plan_named_target_covers_every_partition_and_bumps_changed_epochs_only() -> None:
    stored = {0: (500, 3), 1: (0, 2)}  # partition 2 has no row yet
    changes = plan(Target(where="earliest"), 3, {0: 0, 1: 0, 2: 0}, stored,
                   beginning={0: 0, 1: 0, 2: 0}, end={0: 500, 1: 400, 2: 300})
    assert changes == [Change(0, 500, 0, 3), Change(1, 0, 0, 2), Change(2, None, 0, None)]
    assert [c.changed for c in changes] == [True, False, True]
    assert [c.new_epoch for c in changes] == [4, 2, 1]
    assert changes[0].line() == "partition    0: 500 -> 0  (epoch 3 -> 4)"
    assert changes[1].line() == "partition    1: 0 (unchanged)"
    assert changes[2].line() == "partition    2: none -> 0  (new row, epoch 1)"


def test_plan_explicit_offsets_touch_only_the_named_partitions() -> None:
    changes = plan(Target(offsets={1: 10}), 3, {}, {0: (5, 1), 1: (50, 1)},
                   beginning={0: 0, 1: 0, 2: 0}, end={0: 60, 1: 60, 2: 60})
    assert changes == [Change(1, 50, 10, 1)]


def test_plan_explicit_offsets_must_exist_in_the_topic() -> None:
    with pytest.raises(ConfigError, match=r"partition 1: offset 70 is outside the topic's "
                                          r"5\.\.60; partition 4 does not exist \(the topic "
                                          r"has 3\)"):
        plan(Target(offsets={4: 0, 1: 70, 0: 60}), 3, {}, {},
             beginning={0: 0, 1: 5, 2: 0}, end={0: 60, 1: 60, 2: 60})


def test_json_safe_status() -> None:
    when = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    assert json_safe({1: {"r": float("nan"), "t": (1, 2), "s": {3}}, "at": when,
                      "e": [("Kind", "msg")]}) == {
        "1": {"r": None, "t": [1, 2], "s": [3]}, "at": "2026-01-02T00:00:00+00:00",
        "e": [["Kind", "msg"]]}


def test_status_of_keeps_percentiles_not_every_latency() -> None:
    out = status_of({"latencies": [0.1, 0.2, 0.3, 0.4], "moves": list(range(9)),
                     "live_workers": 2}, {"owner": "h:1"})
    assert "latencies" not in out
    assert (out["commit_p50_s"], out["commit_p95_s"]) == (0.3, 0.4)
    assert out["moves"] == [4, 5, 6, 7, 8]
    assert out["live_workers"] == 2 and out["owner"] == "h:1"


def _row(age: float | None, interval: float | None = 1.0) -> ControlRow:
    return ControlRow("events", "t", None, 0, 0, False, None, age, interval, None, None,
                      None, {})


def test_running_means_a_recent_heartbeat() -> None:
    assert stale_after(1.0) == 10.0 and stale_after(5.0) == 15.0
    assert running(_row(0.5)) and running(_row(9.9))
    assert not running(_row(10.0)) and not running(_row(None)) and not running(None)
    assert running(_row(14.0, 5.0))


def test_render_a_running_pipeline() -> None:
    text = render({
        "pipeline": "events", "topic": "t", "running": True, "owner": "h:1 veltrix:events",
        "heartbeat_age_s": 0.4, "started_at": "2026-01-02T00:00:00+00:00", "workers": 2,
        "target_workers": 2, "desired_workers": None, "lag": 5, "kafka_error": None,
        "autoscale": {"enabled": True, "paused": False, "target": 2, "decision": "scale_up",
                      "reason": "backlog", "bounds": [1, 4]},
        "partitions": [{"partition": 0, "owner": "veltrix:events:w0.0", "committed": 10,
                        "high_watermark": 15, "lag": 5, "rows": 9, "dead_letters": 1,
                        "stopped": None}],
        "worker_reports": [{"worker": "veltrix:events:w0.0", "node": "abcdef", "status":
                            "running", "busy_ratio": 0.5, "rss": 300 * 2**20,
                            "budget_bytes": 768 * 2**20, "restarts": 0, "waiting": None}],
        "commit_p50_s": 0.01, "commit_p95_s": 0.02, "errors": [], "last_errors": []})
    assert "RUNNING  owner h:1 veltrix:events" in text
    assert "autoscaler 1..4 workers, target 2  last decision scale_up: backlog" in text
    assert "veltrix:events:w0.0" in text and "50%" in text and "300 / 768" in text
