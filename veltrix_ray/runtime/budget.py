"""The RSS watchdog that enforces a worker's memory budget (derived in config.budget)."""

from __future__ import annotations

from collections.abc import Sequence

import psutil

from veltrix_ray.config.budget import MIB, Budget
from veltrix_ray.errors import MemoryBudgetExceeded

__all__ = ["MIB", "Budget", "Watchdog"]


class Watchdog:
    """Compares this process's RSS with the budget; raises with everything needed to fix it."""

    def __init__(self, budget: Budget, actor: str, partitions: Sequence[int]) -> None:
        self.budget = budget
        self.actor = actor
        self.partitions = list(partitions)
        self.peak_rss = 0
        self._proc = psutil.Process()

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def check(self, held_bytes: int) -> int:
        rss = self.rss()
        self.peak_rss = max(self.peak_rss, rss)
        if rss > self.budget.budget_bytes:
            raise MemoryBudgetExceeded(
                f"{self.actor} (partitions {self.partitions}) uses {rss // MIB} MiB resident, "
                f"over its budget of {self.budget.budget_bytes // MIB} MiB "
                f"(topology.memory_mb); {held_bytes // MIB} MiB of it are records held between "
                f"fetch and commit (batch cap {self.budget.batch_bytes // 1024} KiB). Raise "
                "topology.memory_mb, or lower batch.max_records / pipeline.max_record_bytes, or "
                "raise topology.memory.expansion so batches get smaller."
            )
        return rss
