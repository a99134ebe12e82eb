"""What a worker's failure means, and when its partition set comes back (pure: no Ray, the
time passed in).

Two kinds of failure, told apart by the exception's type, never by its text:
- LOST: the process or its node is gone (kill -9, OOM kill, a preempted node) or a service
  the worker needs is away. Not the pipeline's fault: a `forever` run restarts the worker
  with exponential backoff (capped at topology.restart_backoff_max_s) and never gives up, as
  Kubernetes' CrashLoopBackOff does. An `until=drained` run (a batch job) counts them in
  the crash window and ends when there are too many.
- CRASH: an unexpected exception in the worker, in a batch (per partition, the span of
  offsets it held). The same exception again in a batch that overlaps the span of the
  previous ones is deterministic, caused by a record in their common span: more than
  topology.max_restarts times within topology.restart_window_s stops that partition with
  the error and the span, as the dead-letter limit does, while the others go on. (Spans,
  not batch starts: a restarted worker's first batch is small, so each incarnation may
  commit a little before failing again on the same record.)"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from veltrix_ray.config.schema import TopologyConfig

Span = tuple[int, int]  # first and last offset


@dataclass
class _Repeats:
    span: Span  # what the failing batches had in common
    times: deque[float]


class Death(Enum):
    LOST = "lost"
    CRASH = "crash"


@dataclass(frozen=True)
class Failure:
    kind: Death
    reason: str  # for the log: "died (...)", "failed: ..."
    cause: str = ""  # CRASH: the exception's type
    where: Mapping[int, Span] = field(default_factory=dict)  # CRASH: the batch's spans


@dataclass(frozen=True)
class Restart:
    """Start the partition set again after `delay` seconds, without the `stop` partitions
    (partition -> the span the failing record lies in)."""

    delay: float
    stop: Mapping[int, Span] = field(default_factory=dict)
    repeats: int = 0  # how often the stopping crash happened in the window


@dataclass(frozen=True)
class GiveUp:
    repeats: int  # failures in the window


Verdict = Restart | GiveUp


class SlotHealth:
    """The recent failures of one partition set's workers."""

    def __init__(self, topo: TopologyConfig, forever: bool,
                 jitter: Callable[[], float] = random.random) -> None:
        self.topo = topo
        self.forever = forever
        self.jitter = jitter  # in [0, 1): workers that failed together come back apart
        self.failures: deque[float] = deque()  # every failure: the backoff grows with them
        self.lost: deque[float] = deque()  # until=drained: the crash window of LOST ones
        self.repeats: dict[tuple[str, int], _Repeats] = {}  # by exception type, partition

    def failed(self, failure: Failure, now: float) -> Verdict:
        window = self.topo.restart_window_s
        self._forget(now - window)
        self.failures.append(now)
        stop: dict[int, Span] = {}
        repeats = 0
        if failure.kind is Death.LOST and not self.forever:
            self.lost.append(now)
            if len(self.lost) > self.topo.max_restarts:
                return GiveUp(len(self.lost))
        elif failure.kind is Death.CRASH:
            for p, (first, last) in failure.where.items():
                seen = self.repeats.get((failure.cause, p))
                if seen is None or last < seen.span[0] or first > seen.span[1]:
                    seen = self.repeats[(failure.cause, p)] = _Repeats((first, last), deque())
                seen.span = (max(first, seen.span[0]), min(last, seen.span[1]))
                seen.times.append(now)
                if len(seen.times) > self.topo.max_restarts:
                    stop[p] = seen.span
                    repeats = max(repeats, len(seen.times))
        return Restart(self.backoff(), stop, repeats)

    def backoff(self) -> float:
        """Doubles with each failure in the window, up to topology.restart_backoff_max_s; a
        random half of it at most is taken off."""
        topo = self.topo
        delay = min(topo.restart_backoff_max_s,
                    topo.restart_backoff_s * 2 ** max(0, len(self.failures) - 1))
        return float(delay * (0.5 + 0.5 * self.jitter()))

    def _forget(self, before: float) -> None:
        for times in (self.failures, self.lost, *(r.times for r in self.repeats.values())):
            while times and times[0] < before:
                times.popleft()
        self.repeats = {k: r for k, r in self.repeats.items() if r.times}


def stopped_message(worker: str, partition: int, span: Span, reason: str, repeats: int,
                    window_s: float) -> str:
    """Why a crash stopped `partition`, with what fixes it."""
    first, last = span
    return (f"{worker}: partition {partition} stopped at offset {first}: the worker {reason} "
            f"({repeats} times in the last {window_s:g}s on a batch holding offsets "
            f"{first}..{last}: a record among them makes it fail). Look at the worker's log "
            "(ray logs) and fix the cause, then run again; `veltrix-ray reset-offsets --to "
            f"{partition}:<offset>` past the record skips it (topology.max_restarts / "
            "topology.restart_window_s: how often it is tried).")


def give_up_message(worker: str, reason: str, repeats: int, window_s: float) -> str:
    return (f"{worker} {reason}; that is {repeats} times in the last {window_s:g}s. Look at "
            "its log (ray logs), or raise topology.max_restarts / topology.restart_window_s.")
