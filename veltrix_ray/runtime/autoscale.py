"""The autoscaling law: a pure function of what the coordinator measured, the decisions it took
before and the time (no Ray, no I/O). docs/scaling.md states the formulas.

Per tick the coordinator builds an `Observation`, calls `decide`, logs the decision's reason,
rescales to `Decision.target` when it differs, and appends `Record.of(...)` to the history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from veltrix_ray.config.schema import AutoscaleConfig

# decision codes
STEADY = "steady"
SCALE_UP = "scale_up"
SCALE_DOWN = "scale_down"
SINK_BOUND = "sink_bound"  # the gate: back to the best size seen
SINK_HOLD = "sink_hold"  # holding after the gate: no scale-up
STABILISING = "stabilising"  # a change too recent to judge
QUIET = "quiet"  # fewer workers would do, the quiet window is not complete yet
NO_RATE = "no_rate"  # demand, but no committed rate measured yet
BOUNDS = "bounds"  # outside [min_workers, min(max_workers, partitions)]
MANUAL = "manual"  # for the coordinator's record of an operator's rescale


@dataclass(frozen=True)
class PartitionObs:
    partition: int
    lag: int  # high watermark - committed offset
    lag_trend: float  # d(lag)/dt in records/s (> 0: growing)
    owned: bool = True  # a live worker owns it
    progress_at: float | None = None  # when its committed offset last advanced
    stopped: bool = False  # stopped by the dead-letter limit


@dataclass(frozen=True)
class Observation:
    workers: int  # the size in force
    partitions: tuple[PartitionObs, ...]
    committed_rate: float  # rows/s committed by all workers over the last interval
    busy: tuple[float, ...]  # per worker: time in decode/transform/commit / wall, in [0, 1]
    commit_p95_s: float = 0.0


@dataclass(frozen=True)
class Decision:
    target: int
    code: str
    reason: str
    wanted: int  # what the sizing formula asked for, before windows, gates and holds


@dataclass(frozen=True)
class Record:
    """One past decision and what was measured when it was taken (at size `workers`)."""

    at: float
    workers: int
    target: int
    wanted: int
    code: str
    committed_rate: float
    commit_p95_s: float = 0.0

    @classmethod
    def of(cls, obs: Observation, decision: Decision, now: float) -> Record:
        return cls(now, obs.workers, decision.target, decision.wanted, decision.code,
                   obs.committed_rate, obs.commit_p95_s)


def busiest(partitions: int, workers: int) -> int:
    """Partitions of the busiest worker: ceil(P/N)."""
    return -(-partitions // workers)


def useful(partitions: int, workers: int) -> int:
    """The smallest size with the same busiest worker as `workers`: ceil(P / ceil(P/N))."""
    return -(-partitions // busiest(partitions, workers))


def stalled(p: PartitionObs, now: float, stall_s: float) -> bool:
    """Lag, a live owner, and no committed progress for stall_s."""
    return (p.owned and p.lag > 0 and p.progress_at is not None
            and now - p.progress_at >= stall_s)


@dataclass(frozen=True)
class Demand:
    incoming: float  # rows/s arriving on the partitions that count
    backlog: int  # their lag
    capacity: float  # rows/s of one fully busy worker (0: unknown)
    ignored: tuple[int, ...]  # stalled, stopped or unowned partitions

    def required(self, catch_up_s: float) -> float:
        return self.incoming + self.backlog / catch_up_s


def demand(obs: Observation, now: float, config: AutoscaleConfig) -> Demand:
    counted = [p for p in obs.partitions
               if p.owned and not p.stopped and not stalled(p, now, config.stall_s)]
    kept = {p.partition for p in counted}
    ignored = tuple(sorted(p.partition for p in obs.partitions if p.partition not in kept))
    incoming = max(0.0, obs.committed_rate + sum(p.lag_trend for p in counted))
    busy = sum(min(max(b, 0.0), 1.0) for b in obs.busy)
    capacity = obs.committed_rate / busy if busy > 1e-6 and obs.committed_rate > 0 else 0.0
    return Demand(incoming, sum(p.lag for p in counted), capacity, ignored)


def size_for(required: float, capacity: float, partitions: int, utilisation: float) -> int:
    """The smallest useful size whose busiest worker carries at most utilisation × capacity,
    partitions carrying required / P each: k = max(1, floor(P·c·u / R)), N = ceil(P/k)."""
    if required <= 0:
        return 1
    k = max(1, math.floor(partitions * capacity * utilisation / required + 1e-9))
    return -(-partitions // k)


def _changes(history: Sequence[Record]) -> list[Record]:
    return [r for r in history if r.target != r.workers]


def _up_chain(history: Sequence[Record], size: int) -> list[Record]:
    """The consecutive scale-ups that led to `size`, newest first."""
    chain: list[Record] = []
    for r in reversed(_changes(history)):
        if r.target != size or r.code != SCALE_UP:
            break
        chain.append(r)
        size = r.workers
    return chain


def _sink_gate(obs: Observation, chain: list[Record], config: AutoscaleConfig
               ) -> tuple[int, str] | None:
    """(best size, why) when the last scale-up did not pay off, else None."""
    last = chain[0]
    before, now_rate = last.committed_rate, obs.committed_rate
    why = None
    if before > 0 and now_rate < before * (1 + config.sink_min_gain):
        why = (f"{last.workers}→{obs.workers} workers moved the committed rate "
               f"{before:,.0f}→{now_rate:,.0f} rows/s ({now_rate / before - 1:+.0%}, less than "
               f"sink_min_gain {config.sink_min_gain:.0%})")
    elif (last.commit_p95_s > 0 and obs.commit_p95_s >= last.commit_p95_s
          * config.sink_latency_factor and now_rate / obs.workers < before / last.workers):
        why = (f"{last.workers}→{obs.workers} workers raised commit p95 "
               f"{last.commit_p95_s:.3g}→{obs.commit_p95_s:.3g}s (≥ ×"
               f"{config.sink_latency_factor:g}) while the rate per worker fell "
               f"{before / last.workers:,.0f}→{now_rate / obs.workers:,.0f} rows/s")
    if why is None:
        return None
    seen = [(r.workers, r.committed_rate) for r in chain]
    top = max(rate for _, rate in seen)
    best = min(n for n, rate in seen if rate >= top / (1 + config.sink_min_gain))
    return best, why


def decide(obs: Observation, history: Sequence[Record], config: AutoscaleConfig,
           now: float) -> Decision:
    n, parts = obs.workers, len(obs.partitions)
    hard_hi = max(1, min(config.max_workers, parts))
    hard_lo = min(config.min_workers, hard_hi)
    hi = useful(parts, hard_hi) if parts else hard_hi
    d = demand(obs, now, config)
    required = d.required(config.catch_up_s)
    raw = wanted = n
    if not parts or required <= 0:
        raw = wanted = hard_lo
    elif d.capacity > 0:
        raw = size_for(required, d.capacity, parts, config.target_utilisation)
        wanted = min(hi, max(hard_lo, raw))
    figures = (f"incoming {d.incoming:,.0f} rows/s, backlog {d.backlog:,} rows "
               f"(drain in {config.catch_up_s:g}s), one worker {d.capacity:,.0f} rows/s at "
               f"{config.target_utilisation:.0%}, P={parts}")
    if d.ignored:
        figures += f", partitions {list(d.ignored)} stalled/stopped/unowned: lag ignored"

    def out(target: int, code: str, reason: str) -> Decision:
        return Decision(target, code, reason, wanted)

    def gated(best: int, why: str) -> Decision:
        best = max(hard_lo, best)
        return out(best, SINK_BOUND, f"sink_bound: {why}: scaling out does not pay off "
                   "(PostgreSQL, or CPU the workers share, is the bottleneck); back to "
                   f"{best} (best size seen), no scale-up for {config.sink_hold_s:g}s")

    if not hard_lo <= n <= hard_hi:
        target = min(hard_hi, max(hard_lo, n))
        return out(target, BOUNDS, f"{n} workers is outside [{hard_lo}, {hard_hi}] "
                   f"(min_workers, min(max_workers, partitions)): {target}")
    changes = _changes(history)
    if changes and now - changes[-1].at < config.stabilise_s:
        return out(n, STABILISING, f"hold {n}: last change {now - changes[-1].at:.0f}s ago, "
                   f"within stabilise_s {config.stabilise_s:g}s")
    if d.capacity <= 0 and required > 0 and parts:
        return out(n, NO_RATE, f"hold {n}: no committed rate measured yet; {figures}")

    chain = _up_chain(history, n)
    if wanted <= n and chain and wanted > chain[0].workers:
        # a step that reached all the demand asked for (often the maximum) is judged too,
        # while the demand still exceeds the size before it
        gate = _sink_gate(obs, chain, config)
        if gate is not None:
            return gated(*gate)

    if wanted > n:
        gates = [r for r in changes if r.code == SINK_BOUND]
        if gates and now - gates[-1].at < config.sink_hold_s:
            return out(n, SINK_HOLD, f"hold {n}: sink_bound {now - gates[-1].at:.0f}s ago, "
                       f"holding for sink_hold_s {config.sink_hold_s:g}s (wanted {wanted}; "
                       f"{figures})")
        gate = _sink_gate(obs, chain, config) if chain else None
        if gate is not None:
            return gated(*gate)
        cap = min(hard_hi, max(math.ceil(n * config.max_step_factor), n + config.max_step_add))
        target = min(wanted, useful(parts, cap))
        if target <= n:
            return out(n, STEADY, f"hold {n}: wanted {wanted}, but the step cap allows no "
                       f"useful size above {n}")
        capped = f" (step cap {cap})" if target < wanted else ""
        return out(target, SCALE_UP, f"scale up {n}→{target}{capped}: needs {wanted} "
                   f"(busiest worker {busiest(parts, n)}→{busiest(parts, target)} partitions); "
                   f"{figures}")

    if wanted < n:
        quiet = [wanted]
        since = now
        for r in reversed(history):
            if r.workers != n or r.wanted >= n:
                break
            quiet.append(r.wanted)
            since = r.at
        if now - since < config.scale_down_window_s:
            return out(n, QUIET, f"hold {n}: {wanted} would do, quiet for {now - since:.0f}s "
                       f"of scale_down_window_s {config.scale_down_window_s:g}s; {figures}")
        floor = useful(parts, max(1, min(n - 1, math.ceil(n / config.max_step_factor))))
        target = max(hard_lo, max(quiet), floor)
        return out(target, SCALE_DOWN, f"scale down {n}→{target}: {max(quiet)} would do for "
                   f"the whole scale_down_window_s {config.scale_down_window_s:g}s; {figures}")

    if raw > n:
        return out(n, STEADY, f"hold {n}: needs {raw}, bounded by {hi} (max_workers "
                   f"{config.max_workers}, P={parts}, useful sizes only); {figures}")
    return out(n, STEADY, f"hold {n}: sized right; {figures}")
