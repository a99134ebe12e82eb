"""The autoscaler's state in the coordinator: turns progress reports into the law's
`Observation` (rates and lag trends over the decision interval), keeps the history of
decisions, and logs each with its reason. The law itself is `autoscale.decide` (pure)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from veltrix_ray.config.schema import AutoscaleConfig
from veltrix_ray.runtime.autoscale import (
    MANUAL,
    Decision,
    Observation,
    PartitionObs,
    Record,
    decide,
)

log = logging.getLogger(__name__)
HISTORY = 500  # decisions kept (hours at the default interval)


@dataclass
class _Seen:
    at: float
    committed: dict[int, int]
    lag: dict[int, int]


class Autoscaler:
    def __init__(self, config: AutoscaleConfig, pipeline: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.pipeline = pipeline
        self.clock = clock
        self.history: deque[Record] = deque(maxlen=HISTORY)
        self.last: Decision | None = None
        self.decisions: deque[dict[str, Any]] = deque(maxlen=50)  # the changes, for status
        self.last_at: float | None = None
        self.paused_until: float | None = None  # after a manual rescale
        self._seen: _Seen | None = None
        self._progress_at: dict[int, float] = {}  # when each partition's offset last moved

    def due(self) -> bool:
        now = self.clock()
        if self.paused_until is not None and now < self.paused_until:
            return False
        return self.last_at is None or now - self.last_at >= self.config.interval_s

    def observe(self, report: dict[str, Any], workers: int, owned: set[int]) -> Observation:
        """The law's inputs from a coordinator progress report; rates over the time since the
        previous observation."""
        now = self.clock()
        committed: dict[int, int] = {}
        lag: dict[int, int] = {}
        stopped: set[int] = set()
        for p, info in report["partitions"].items():
            p = int(p)
            if info.get("error"):
                stopped.add(p)
            if info.get("committed") is not None:
                committed[p] = info["committed"]
            if info.get("high_watermark") is not None:
                lag[p] = max(0, info["high_watermark"] - (info.get("committed") or 0))
        prev = self._seen
        dt = now - prev.at if prev is not None else 0.0
        rate = 0.0
        trends: dict[int, float] = {}
        for p, offset in committed.items():
            before = prev.committed.get(p) if prev is not None else None
            if before is None or offset > before:
                self._progress_at[p] = now
            if prev is not None and dt > 0 and before is not None:
                rate += max(0, offset - before) / dt
        if prev is not None and dt > 0:
            trends = {p: (n - prev.lag[p]) / dt for p, n in lag.items() if p in prev.lag}
        self._seen = _Seen(now, committed, lag)
        p95s = [w.get("commit_p95_s", 0.0) for w in report["workers"]]
        busy = tuple(float(w.get("busy_ratio", 0.0)) for w in report["workers"]
                     if w.get("slot") is not None and w.get("status") == "running")
        parts = tuple(PartitionObs(p, lag.get(p, 0), trends.get(p, 0.0), p in owned,
                                   self._progress_at.get(p), p in stopped)
                      for p in sorted(set(report["partitions"]) | owned))
        return Observation(workers, parts, rate, busy, max(p95s, default=0.0))

    def decide(self, report: dict[str, Any], workers: int, owned: set[int]) -> Decision:
        obs = self.observe(report, workers, owned)
        now = self.clock()
        decision = decide(obs, list(self.history), self.config, now)
        self.history.append(Record.of(obs, decision, now))
        changed = self.last is None or (decision.code, decision.target) != (
            self.last.code, self.last.target)
        self.last, self.last_at = decision, now
        if decision.target != workers:
            self.decisions.append({"at": time.time(), "workers": workers,
                                   "target": decision.target, "decision": decision.code,
                                   "reason": decision.reason})
            log.warning("autoscale %s: %s", self.pipeline, decision.reason)
        elif changed:
            log.info("autoscale %s: %s", self.pipeline, decision.reason)
        return decision

    def manual(self, before: int, workers: int) -> None:
        """An operator's rescale: recorded (the sink gate starts afresh) and autoscaling
        paused for one scale_down_window_s."""
        now = self.clock()
        self.history.append(Record(now, before, workers, workers, MANUAL, 0.0))
        self.paused_until = now + self.config.scale_down_window_s
        log.warning("autoscale %s: manual rescale %d→%d; autoscaling paused for %gs "
                    "(topology.autoscale.scale_down_window_s)", self.pipeline, before, workers,
                    self.config.scale_down_window_s)

    def state(self) -> dict[str, Any]:
        """For status: the last decision and whether autoscaling is paused."""
        last = self.last
        paused = self.paused_until is not None and self.clock() < self.paused_until
        return {"enabled": True, "paused": paused,
                "target": last.target if last else None,
                "decision": last.code if last else None,
                "reason": last.reason if last else None,
                "bounds": [self.config.min_workers, self.config.max_workers],
                "changes": list(self.decisions)}
