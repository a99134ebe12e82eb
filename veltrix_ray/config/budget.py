"""Per-worker memory budget: the sizes derived from topology.memory_mb (arithmetic only)."""

from __future__ import annotations

from dataclasses import dataclass

from veltrix_ray.config.schema import MemoryConfig
from veltrix_ray.errors import ConfigError

MIB = 2**20


@dataclass(frozen=True)
class Budget:
    budget_bytes: int
    batch_bytes: int  # fetch size and batch byte cap
    high_water_bytes: int  # above this many bytes held, fetching pauses

    @classmethod
    def derive(cls, memory_mb: int, memory: MemoryConfig) -> Budget:
        if memory.inflight_batches < 1:
            raise ConfigError(f"topology.memory.inflight_batches={memory.inflight_batches} must "
                              "be at least 1 (1: fetch only after the last batch committed).")
        if memory.expansion <= 0:
            raise ConfigError(f"topology.memory.expansion={memory.expansion:g} must be > 0 "
                              "(peak bytes held per fetched byte, typically 8-16).")
        if memory.overhead_mb < 0:
            raise ConfigError(f"topology.memory.overhead_mb={memory.overhead_mb} must be >= 0.")
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
