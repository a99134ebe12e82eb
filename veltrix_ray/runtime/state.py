"""What a worker knows of each partition it owns."""

from __future__ import annotations

from dataclasses import dataclass, field

from veltrix_ray.config.schema import DeadLetterConfig
from veltrix_ray.runtime.deadletters import DeadLetterLimit
from veltrix_ray.runtime.reports import PartitionReport


@dataclass
class PartitionState:
    partition: int
    epoch: int
    next_offset: int | None  # committed: the next offset to process (None: never committed)
    policy: DeadLetterConfig = field(default_factory=DeadLetterConfig)
    high_watermark: int | None = None
    stop_at: int | None = None  # until=drained: the high watermark when the run began
    rows: int = 0
    dead_letters: int = 0
    records: int = 0  # consumed: records of committed batches (rows, dead letters, skipped)
    reasons: dict[str, int] = field(default_factory=dict)  # dead letters by Reason value
    stopped: str | None = None  # why the partition was stopped (the dead-letter limit)
    limit: DeadLetterLimit = field(init=False)

    def __post_init__(self) -> None:
        self.limit = DeadLetterLimit(self.policy)

    @property
    def done(self) -> bool:
        if self.stopped is not None:
            return True
        return self.stop_at is not None and (self.next_offset or 0) >= self.stop_at

    def report(self) -> PartitionReport:
        return PartitionReport(committed=self.next_offset, high_watermark=self.high_watermark,
                               rows=self.rows, dead_letters=self.dead_letters,
                               records=self.records, reasons=dict(self.reasons),
                               error=self.stopped)
