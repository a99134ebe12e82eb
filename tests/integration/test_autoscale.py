"""Autoscaling end to end, watched the way an operator does (`status --json` from another
process): a backlog drives the workers up, a quiet window brings them back down."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from .helpers import assert_exact, fill
from .test_operator_verbs import start, status


def test_a_backlog_scales_out_and_the_quiet_window_scales_back_in(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    exp = fill(kafka_bootstrap, topic, 1_000_000, 4, seed=4)
    over = [f"kafka.topic={topic}", f"postgres.dsn={pg_dsn}"]
    run = start(["run", *over, "topology.workers=1", "progress_interval_s=0.5",
                 "topology.autoscale.enabled=true", "topology.autoscale.min_workers=1",
                 "topology.autoscale.max_workers=4", "topology.autoscale.interval_s=2",
                 "topology.autoscale.stabilise_s=5", "topology.autoscale.catch_up_s=1",
                 "topology.autoscale.scale_down_window_s=6"],  # until=forever
                # the Python decode path: with the codec one worker drains this backlog before
                # the first decision, and the test is about the decisions, not the rate
                VELTRIX_NO_CODEC="1")
    seen: list[dict[str, Any]] = []
    try:
        def watch(what: str, pred: Callable[[dict[str, Any]], bool], timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while True:
                assert run.poll() is None, run.communicate()[1][-3000:]
                st = status(over)
                seen.append(st)
                if pred(st):
                    return
                assert time.monotonic() < deadline, f"never {what}: {st}"
                time.sleep(0.5)

        watch("scaled out", lambda st: st["running"] and st["workers"] > 1, 240)
        watch("drained", lambda st: st["running"] and st["lag"] == 0, 300)
        watch("scaled back in", lambda st: st["workers"] == 1 and st["target_workers"] == 1,
              120)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-3000:]
    assert max(st["target_workers"] or 0 for st in seen) > 1
    decisions = [c["decision"] for c in seen[-1]["autoscale"]["changes"]]
    # back to 1 by the quiet window, or earlier by the sink gate when the shared cores (a
    # loaded machine) make two workers no faster than one; the law's tests cover both
    assert "scale_up" in decisions and decisions[-1] in ("scale_down", "sink_bound"), decisions
    assert_exact(pg_dsn, topic, exp)
