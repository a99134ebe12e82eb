"""Per-worker memory budget: the sizes derived from topology.memory_mb (arithmetic only).

The budget is a ceiling, not a target. Above the fixed overhead, the working memory holds
`inflight_batches` batches of `expansion` bytes per fetched byte each, plus the peak of the
largest record a batch can hold (pipeline.max_record_bytes, decompressed, times expansion):
a batch ends past its byte cap by up to one record. The RSS high-water mark leaves room for
one such batch under the ceiling; above it, batches shrink to the room left and only one is
in flight, so the next batch's growth cannot cross the ceiling (docs/memory.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from veltrix_ray.config.schema import MemoryConfig
from veltrix_ray.errors import ConfigError

MIB = 2**20
# below this, a batch is mostly per-batch overhead (transaction, COPY set-up)
MIN_BATCH_BYTES = 64 * 1024


class BudgetError(ConfigError):
    """A budget that cannot work; `key` is the config key the finding is filed under."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Budget:
    budget_bytes: int
    batch_bytes: int  # fetch size and batch byte cap
    high_water_bytes: int  # above this many bytes held, fetching pauses
    # above this RSS, batches shrink to the room left and one is in flight at a time
    rss_high_water_bytes: int
    # what the largest admitted record costs while decoded, transformed and written
    record_peak_bytes: int

    @property
    def headroom_bytes(self) -> int:
        """The largest batch's footprint: what the high-water mark leaves under the ceiling."""
        return self.budget_bytes - self.rss_high_water_bytes

    def share(self, rss: int) -> float:
        """The share of a full batch that fits beside `rss` under the ceiling: 1 up to the
        high-water mark, then falling linearly to 0 where not even the largest record fits."""
        if rss <= self.rss_high_water_bytes:
            return 1.0
        full = self.budget_bytes - self.record_peak_bytes - self.rss_high_water_bytes
        room = self.budget_bytes - self.record_peak_bytes - rss
        return max(0.0, room / full) if full > 0 else 0.0

    @classmethod
    def derive(cls, memory_mb: int, memory: MemoryConfig, max_record_bytes: int) -> Budget:
        if memory.inflight_batches < 1:
            raise BudgetError("topology.memory.inflight_batches",
                              f"topology.memory.inflight_batches={memory.inflight_batches} must "
                              "be at least 1 (1: fetch only after the last batch committed).")
        if memory.expansion <= 0:
            raise BudgetError("topology.memory.expansion",
                              f"topology.memory.expansion={memory.expansion:g} must be > 0 "
                              "(peak bytes held per fetched byte, typically 8-16).")
        if memory.overhead_mb < 0:
            raise BudgetError("topology.memory.overhead_mb",
                              f"topology.memory.overhead_mb={memory.overhead_mb} must be >= 0.")
        working = (memory_mb - memory.overhead_mb) * MIB
        record_peak = math.ceil(max(max_record_bytes, 0) * memory.expansion)
        slots = memory.expansion * memory.inflight_batches
        # the smallest budget that holds the record's peak and inflight batches of at least
        # the record (and of at least MIN_BATCH_BYTES)
        need = memory.overhead_mb + -(-int(record_peak + max(MIN_BATCH_BYTES, max_record_bytes)
                                           * slots) // MIB)
        # a budget too small for any batch is topology.memory_mb's problem, not the record's
        if MIN_BATCH_BYTES * slots <= working < record_peak:
            raise BudgetError(
                "pipeline.max_record_bytes",
                f"a single record of pipeline.max_record_bytes={max_record_bytes} bytes needs "
                f"{record_peak // MIB} MiB while decoded and written (expansion "
                f"{memory.expansion:g}), more than the {working // MIB} MiB that "
                f"topology.memory_mb={memory_mb} leaves above topology.memory.overhead_mb="
                f"{memory.overhead_mb}, so the worker could not stay under its budget: lower "
                f"pipeline.max_record_bytes to at most "
                f"{int(working / (memory.expansion + slots))}, or raise topology.memory_mb to "
                f"at least {need}")
        batch = int((working - record_peak) / slots)
        if batch < MIN_BATCH_BYTES:
            raise BudgetError(
                "topology.memory_mb",
                f"topology.memory_mb={memory_mb} leaves {max(working, 0) // MIB} MiB above the "
                f"worker's fixed overhead (topology.memory.overhead_mb={memory.overhead_mb}); "
                f"batches would be under {MIN_BATCH_BYTES // 1024} KiB. Raise "
                f"topology.memory_mb to at least {need}.")
        if max_record_bytes > batch:
            raise BudgetError(
                "pipeline.max_record_bytes",
                f"pipeline.max_record_bytes={max_record_bytes} does not fit the batch byte cap "
                f"of {batch} bytes that topology.memory_mb={memory_mb} allows (after "
                f"topology.memory.overhead_mb={memory.overhead_mb}, the largest record's peak "
                f"and expansion {memory.expansion:g} x {memory.inflight_batches} batches in "
                f"flight): lower pipeline.max_record_bytes to at most "
                f"{int(working / (memory.expansion + slots))}, or raise topology.memory_mb to "
                f"at least {need}")
        budget = memory_mb * MIB
        headroom = int(memory.expansion * batch) + record_peak
        return cls(budget, batch, batch * (memory.inflight_batches - 1), budget - headroom,
                   record_peak)
