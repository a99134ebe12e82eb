"""The RSS watchdog that enforces a worker's memory budget (derived in config.budget)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
from collections.abc import Sequence

import psutil
import pyarrow as pa

from veltrix_ray.config.budget import MIB, Budget
from veltrix_ray.errors import MemoryBudgetExceeded

__all__ = ["MIB", "Budget", "Watchdog", "release_memory"]

log = logging.getLogger(__name__)


class Watchdog:
    """Looks at this process's RSS for the loop, which sizes batches to the room under the
    budget; keeps the peak, and says once when the ceiling was crossed."""

    def __init__(self, budget: Budget, actor: str, partitions: Sequence[int]) -> None:
        self.budget = budget
        self.actor = actor
        self.partitions = list(partitions)
        self.peak_rss = 0
        self.breached = False
        self._proc = psutil.Process()

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def look(self) -> int:
        """The resident bytes now (and the peak updated)."""
        rss = self.rss()
        self.peak(rss)
        return rss

    def kernel_peak(self) -> int:
        return _kernel_peak()

    def peak(self, rss: int = 0) -> int:
        """The peak RSS so far. It takes in the kernel's high-water mark, which sees the
        moments between two looks (a COPY in the committer's thread); the first time it is
        over the ceiling is said once, as one warning line."""
        self.peak_rss = max(self.peak_rss, rss, self.kernel_peak())
        if self.peak_rss > self.budget.budget_bytes and not self.breached:
            self.breached = True
            log.warning("%s (partitions %s): peak RSS %d MiB went over its %d MiB budget "
                        "(topology.memory_mb); raise topology.memory.expansion or "
                        "topology.memory.overhead_mb so that batches leave more room",
                        self.actor, self.partitions, self.peak_rss // MIB,
                        self.budget.budget_bytes // MIB)
        return self.peak_rss

    def exceeded(self, rss: int, max_records: int) -> MemoryBudgetExceeded:
        return MemoryBudgetExceeded(
            f"{self.actor} (partitions {self.partitions}) uses {rss // MIB} MiB resident, "
            f"over its budget of {self.budget.budget_bytes // MIB} MiB (topology.memory_mb), "
            "with no batch in flight and freed memory let go; its batches were down to "
            f"{max_records} record(s). Raise topology.memory_mb (or "
            "topology.memory.overhead_mb, if the process alone needs more), or lower "
            "pipeline.max_record_bytes."
        )


def _kernel_peak() -> int:
    """The process's peak RSS as the kernel counts it (VmHWM), 0 where there is none."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def release_memory() -> None:
    """Hand freed memory back to the OS, so that RSS tells what is in use: Arrow's pool and
    glibc's heap both keep freed pages otherwise."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
