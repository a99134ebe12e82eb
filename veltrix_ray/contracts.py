"""The two ends of a worker's loop, as protocols, and the small records that cross them.

    PartitionSource (Kafka) -> Fetched -> step (decode, limits, transforms) -> WriteBatch
    -> OffsetSink (PostgreSQL): rows + dead letters + offset advances in one fenced transaction

The loop (veltrix_ray.runtime) knows only these; tests drive it with in-memory fakes."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Protocol

import pyarrow as pa


@dataclass
class Fetched:
    """One fetch of one worker, column-wise; offsets ascend within each partition."""

    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    timestamps: list[int]

    # partition -> (first position, count); each partition's records are contiguous
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    topic: str = ""

    def __post_init__(self) -> None:
        if not self.spans and self.partitions:
            for i, p in enumerate(self.partitions):
                first, n = self.spans.get(p, (i, 0))
                self.spans[p] = (first, n + 1)

    def __len__(self) -> int:
        return len(self.values)

    @cached_property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.values if v is not None)

    def dead_letter(self, index: int, error: str, reason: Reason) -> DeadLetter:
        """The record at fetch position `index`, rejected for `error`."""
        return DeadLetter(self.partitions[index], self.offsets[index], self.keys[index],
                          self.values[index], error, reason, index)


class Reason(str, Enum):
    """Where a record was rejected (the stage that dead-lettered it)."""

    DECODE = "decode"
    TRANSFORM = "transform"
    SINK = "sink"


@dataclass
class DeadLetter:
    """A record that could not become a row: kept with its raw bytes and the reason."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str
    reason: Reason = Reason.DECODE
    index: int = -1  # position in its fetch


@dataclass(frozen=True)
class Claim:
    """Ownership of a partition under `epoch`; processing resumes at `next_offset`
    (None: never committed, kafka.start applies)."""

    partition: int
    next_offset: int | None
    epoch: int


@dataclass(frozen=True)
class Advance:
    """Partition `partition` moves from `expected` (None: never committed) to `new`."""

    partition: int
    expected: int | None
    new: int
    epoch: int
    rows: int = 0  # rows and dead letters the batch writes for this partition
    dead_letters: int = 0


@dataclass(frozen=True)
class Totals:
    """What a partition has committed so far, over all runs (durable, exact)."""

    next_offset: int | None
    rows: int
    dead_letters: int


@dataclass
class WriteBatch:
    """What one fenced transaction applies."""

    rows: pa.RecordBatch  # columns starting with '_' are not written
    dead_letters: list[DeadLetter]
    advances: list[Advance]
    # the records the rows came from, so that a row the database rejects can be dead-lettered
    # with its raw bytes; `origin` (per row, its record's position in `fetched`) defaults to
    # what the rows' `_kafka_partition` and `_kafka_offset` columns say
    fetched: Fetched | None = None
    origin: Sequence[int] | None = None

    def rejected(self, row: int, error: str) -> DeadLetter | None:
        """The dead letter for row `row` rejected at the sink (None: its record is unknown,
        a transform dropped the Kafka metadata columns)."""
        if self.fetched is None:
            return None
        if self.origin is not None:
            return self.fetched.dead_letter(self.origin[row], error, Reason.SINK)
        names = self.rows.schema.names
        if "_kafka_partition" not in names or "_kafka_offset" not in names:
            return None
        partition = self.rows.column("_kafka_partition")[row].as_py()
        offset = self.rows.column("_kafka_offset")[row].as_py()
        first, n = self.fetched.spans.get(partition, (0, 0))
        at = bisect.bisect_left(self.fetched.offsets, offset, first, first + n)
        if at == first + n or self.fetched.offsets[at] != offset:
            return None
        return self.fetched.dead_letter(at, error, Reason.SINK)


def written(schema: pa.Schema) -> pa.Schema:
    """The columns a sink writes: those starting with '_' (Kafka metadata) are not."""
    return pa.schema([f for f in schema if not f.name.startswith("_")])


class PartitionSource(Protocol):
    """Records of an explicit set of partitions of one topic (no consumer group)."""

    async def bind(self, positions: Mapping[int, int | None]) -> dict[int, int]:
        """Own exactly these partitions, each read from its offset (None: where kafka.start
        says); returns the offsets reading starts at."""

    async def fetch(self, partitions: Sequence[int], max_records: int) -> Fetched:
        """The next records of `partitions` (the others are not read); empty when idle."""

    def high_watermark(self, partition: int) -> int | None:
        """The partition's end as last seen by a fetch (None: not seen yet)."""

    async def end_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """The partitions' ends, asked of the broker now."""

    async def position(self, partition: int) -> int:
        """The offset the next fetch of `partition` reads (past markers and gaps)."""

    async def close(self) -> None: ...


class OffsetSink(Protocol):
    """Rows, dead letters and offsets, written together exactly once."""

    def setup(self, schema: pa.Schema) -> None:
        """Create or check the target and the bookkeeping tables for rows of `schema`."""

    def claim(self, partitions: Sequence[int]) -> dict[int, Claim]:
        """Take ownership under new epochs, fencing any older owner."""

    def write(self, batch: WriteBatch) -> list[DeadLetter]:
        """Apply `batch` in one transaction, or raise FencedError and apply nothing. Rows the
        database rejects for a data reason are dead-lettered in the same transaction and
        returned; the rest commits."""

    def add_columns(self, fields: Sequence[pa.Field]) -> None:
        """Schema evolution: add these (nullable) columns to the target if it lacks them, in a
        short transaction of their own, before the batch that first holds them."""

    def totals(self) -> dict[int, Totals]: ...

    def blockers(self) -> str | None:
        """While a write waits for another session's lock: who holds it (called from
        another thread), else None."""

    def close(self) -> None: ...
