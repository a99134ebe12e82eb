"""Per-worker memory budget: sizes derived from it, and the RSS watchdog that enforces it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from veltrix_ray.config.schema import MemoryConfig
from veltrix_ray.errors import ConfigError, MemoryBudgetExceeded

MIB = 2**20


@dataclass(frozen=True)
class Budget:
    budget_bytes: int
    batch_bytes: int  # fetch size and batch byte cap
    high_water_bytes: int  # above this many bytes held, fetching pauses

    @classmethod
    def derive(cls, memory_mb: int, memory: MemoryConfig) -> Budget:
        working = (memory_mb - memory.overhead_mb) * MIB
        batch = int(working / (memory.expansion * memory.inflight_batches))
        if batch < 64 * 1024:
            need = memory.overhead_mb + (64 * 1024 * memory.expansion *
                                         memory.inflight_batches) // MIB + 1
            raise ConfigError(
                f"topology.memory_mb={memory_mb} leaves {max(working, 0) // MIB} MiB above the "
                f"worker's fixed overhead (topology.memory.overhead_mb={memory.overhead_mb}); "
                f"batches would be under 64 KiB. Raise topology.memory_mb to at least {need}.")
        return cls(memory_mb * MIB, batch, batch * (memory.inflight_batches - 1))


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
