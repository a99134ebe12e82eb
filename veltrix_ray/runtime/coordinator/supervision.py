"""The slots (partition sets) and the supervision tick: from the slots and the time, what is
due now (pure: no Ray, the clock passed in)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from veltrix_ray.config.schema import TopologyConfig
from veltrix_ray.runtime.coordinator.health import SlotHealth
from veltrix_ray.runtime.coordinator.pool import Worker
from veltrix_ray.runtime.reports import WorkerReport

CONVERGE_EVERY_S = 5.0  # between two repairs of orphaned partitions


@dataclass(eq=False)
class Slot:
    """One partition set and its current worker."""

    index: int
    partitions: list[int]
    health: SlotHealth  # its recent failures: when it comes back, what it stops
    worker: Worker | None = None
    incarnation: int = 0
    restarts: int = 0
    last: WorkerReport | None = None  # the worker's latest progress report
    done: bool = False
    retiring: bool = False  # being stopped by a rescale; the rescale reaps it
    restart_at: float | None = None  # clock time of a scheduled restart
    placing: asyncio.Future[Any] | None = None  # the worker's ready(): where it runs
    node: str | None = None

    @property
    def live(self) -> bool:
        """Its worker runs and owns its set (not ended, not being retired)."""
        return self.worker is not None and not self.done and not self.retiring

    @property
    def running(self) -> bool:
        return self.live and self.restart_at is None


@dataclass(frozen=True)
class Tick:
    restart: list[Slot]  # their restart is due
    orphans: list[int]  # partitions no slot owns: assign them again (a rescale cut short)
    discover: bool  # look for partitions added to the topic
    over: bool  # no worker runs and none is coming: the run is over
    twice: list[int]  # partitions with two owners (the newer epoch fences the older)


class Supervision:
    def __init__(self, topo: TopologyConfig, now: float) -> None:
        self.topo = topo
        self.converge_at = now
        self.discovered_at = now

    def tick(self, now: float, slots: list[Slot], partitions: int, moving: bool,
             stopping: bool = False) -> Tick:
        """`moving`: a rescale is under way or scheduled (it changes the slots: no repair,
        no discovery meanwhile, and the run is not over while it starts workers).
        `stopping`: nothing is repaired or discovered, restarts are not due (the slots
        end instead)."""
        restart = [s for s in slots if s.restart_at is not None and now >= s.restart_at]
        waiting = any(s.restart_at is not None for s in slots)
        over = not moving and not waiting and not any(
            s.live and s.restart_at is None for s in slots)
        orphans: list[int] = []
        discover = False
        if not moving and not stopping:
            orphans = self.orphans(slots, partitions)
            if orphans and now >= self.converge_at:
                self.converge_at = now + CONVERGE_EVERY_S
            else:
                orphans = []
            if not orphans and now - self.discovered_at >= self.topo.partition_discovery_s:
                self.discovered_at = now
                discover = True
        return Tick(restart, orphans, discover, over, self.owned_twice(slots))

    @staticmethod
    def orphans(slots: list[Slot], partitions: int) -> list[int]:
        """Every partition has exactly one owner (a live, restarting or finished slot):
        those with none."""
        held = {p for s in slots if not s.retiring for p in s.partitions}
        return sorted(set(range(partitions)) - held)

    @staticmethod
    def owned_twice(slots: list[Slot]) -> list[int]:
        held = [p for s in slots if not s.retiring for p in s.partitions]
        return sorted({p for p in held if held.count(p) > 1})
