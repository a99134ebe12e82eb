"""The decoder contract: a pipeline's records -> one Arrow batch per fetch, bad records
isolated. JSON (`json`), the registry formats (`registry`, over `avro` and `protobuf`) and
keys (`keys`) implement it; the worker's step knows only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from veltrix_ray.contracts import DeadLetter, Fetched


@dataclass
class Decoded:
    batch: pa.RecordBatch  # the good rows: schema columns + Kafka metadata columns
    bad: list[DeadLetter] = field(default_factory=list)  # in fetch order
    good: list[int] | None = None  # fetch positions of the batch's rows (None: all of them)
    # fetch positions of tombstones (records with a null value): not events, so neither rows
    # nor dead letters; their offsets are consumed all the same
    skipped: list[int] = field(default_factory=list)
    # partitions whose records cannot be decoded at all (a writer schema the columns cannot
    # follow) -> why: they stop, and nothing of theirs in this fetch commits
    stopped: dict[int, str] = field(default_factory=dict)


class RecordDecoder(Protocol):
    @property
    def schema(self) -> pa.Schema:
        """The decoded columns (without the Kafka metadata columns)."""
        ...

    def decode(self, fetched: Fetched) -> Decoded:
        """The fetch's good rows (schema columns + METADATA), its dead letters, tombstones
        and stopped partitions."""
        ...
