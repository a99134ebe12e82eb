"""Transforms for the worker-loop tests, referenced by `_target_` like a user's own."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def raise_on(batch: pa.RecordBatch, event_id: str) -> pa.RecordBatch:
    if pc.any(pc.equal(batch.column("event_id"), event_id)).as_py():
        raise ValueError(f"cannot take {event_id}")
    return batch


def reject_negative(batch: pa.RecordBatch) -> pa.RecordBatch:
    if pc.any(pc.less(batch.column("amount"), 0)).as_py():
        raise ValueError("negative amount")
    return batch


class Panic(BaseException):
    """What a native codec's panic raises (pyo3's PanicException is no Exception either): no
    transform isolation catches it, the worker fails on it."""


def panic_on(batch: pa.RecordBatch, event_id: str) -> pa.RecordBatch:
    if pc.any(pc.equal(batch.column("event_id"), event_id)).as_py():
        raise Panic(f"cannot take {event_id}")
    return batch
