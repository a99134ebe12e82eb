"""What a worker reports to the coordinator (its progress, its final state, the partitions it
gives up): frozen msgspec Structs, not dicts. They pickle across Ray, a renamed or missing
field fails where the report is built (a mistyped one where it is converted or decoded),
and they encode to JSON without a hand-written mapping."""

from __future__ import annotations

import msgspec


class PartitionReport(msgspec.Struct, frozen=True, kw_only=True):
    committed: int | None  # the next offset to process (None: never committed)
    high_watermark: int | None
    rows: int
    dead_letters: int
    records: int  # consumed: records of committed batches
    reasons: dict[str, int]  # dead letters by Reason value
    error: str | None  # why the partition is stopped


class WorkerReport(msgspec.Struct, frozen=True, kw_only=True):
    worker: str  # the actor's name
    slot: int  # the coordinator's partition-set index
    pid: int
    node: str | None
    status: str  # starting, running, stopped, done, failed, fenced
    busy_ratio: float
    commit_p95_s: float
    first_data_at: float | None  # wall clock of the first records fetched
    rss: int
    peak_rss: int
    held_bytes: int
    budget_bytes: int
    batches: int
    waiting: str | None  # what a slow commit waits for
    latencies: list[float]
    partitions: dict[int, PartitionReport]
