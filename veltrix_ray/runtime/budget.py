"""The RSS watchdog that enforces a worker's memory budget (derived in config.budget)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Sequence

import psutil
import pyarrow as pa

from veltrix_ray.config.budget import MIB, Budget
from veltrix_ray.errors import MemoryBudgetExceeded

__all__ = ["MIB", "Budget", "Watchdog", "release_memory"]


class Watchdog:
    """Compares this process's RSS with the budget. A breach first makes batches smaller
    (WorkerLoop._guard_memory); only the smallest batch still over budget is an error."""

    def __init__(self, budget: Budget, actor: str, partitions: Sequence[int]) -> None:
        self.budget = budget
        self.actor = actor
        self.partitions = list(partitions)
        self.peak_rss = 0
        self._proc = psutil.Process()

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def over(self) -> int | None:
        """The resident bytes when over budget, else None."""
        rss = self.rss()
        self.peak_rss = max(self.peak_rss, rss)
        return rss if rss > self.budget.budget_bytes else None

    def exceeded(self, rss: int, held_bytes: int, max_records: int) -> MemoryBudgetExceeded:
        return MemoryBudgetExceeded(
            f"{self.actor} (partitions {self.partitions}) uses {rss // MIB} MiB resident, "
            f"over its budget of {self.budget.budget_bytes // MIB} MiB (topology.memory_mb), "
            f"even with batches cut to {max_records} record(s), one in flight; "
            f"{held_bytes // MIB} MiB of it are records held between fetch and commit. Raise "
            "topology.memory_mb, or lower pipeline.max_record_bytes."
        )


def release_memory() -> None:
    """Hand freed memory back to the OS, so that RSS tells what is in use: Arrow's pool and
    glibc's heap both keep freed pages otherwise."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
