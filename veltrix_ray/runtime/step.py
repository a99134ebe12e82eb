"""The per-batch step, pure: fetched records -> decode -> transforms -> dead-letter limit ->
rows + dead letters + offset advances. No Ray, no network: unit-testable with plain data."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from veltrix_ray.batch.contract import RecordDecoder
from veltrix_ray.contracts import Advance, DeadLetter, Fetched, Reason, WriteBatch
from veltrix_ray.errors import TransformError
from veltrix_ray.runtime.state import PartitionState
from veltrix_ray.transform import Chain, TransformFailed

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    write: WriteBatch | None  # None: nothing to commit (every partition of the fetch stopped)
    rows: dict[int, int] = field(default_factory=dict)  # per partition
    dead: dict[int, int] = field(default_factory=dict)
    stopped: dict[int, str] = field(default_factory=dict)  # partitions the limit stopped now


class Step:
    def __init__(self, worker: str, decoder: RecordDecoder,
                 chain: Chain, output_schema: pa.Schema,
                 on_transform_error: str = "dead_letter") -> None:
        self.worker = worker
        self.decoder = decoder
        self.chain = chain
        self.output_schema = output_schema
        self.on_transform_error = on_transform_error

    def __call__(self, fetched: Fetched, states: Mapping[int, PartitionState]) -> StepResult:
        decoded = self.decoder.decode(fetched)
        good = decoded.good if decoded.good is not None else range(len(fetched))
        rows, moved = self._transform(fetched, decoded.batch, good)
        bad = decoded.bad + moved
        stopped = self._limits(fetched, bad, states)
        for p, why in decoded.stopped.items():
            stopped[p] = f"{self.worker}: {why}"
            log.error(stopped[p])
        if stopped:  # nothing of a stopped partition commits: redo the batch without it
            keep = pc.invert(pc.is_in(decoded.batch.column("_kafka_partition"),
                                      value_set=pa.array(sorted(stopped), pa.int32())))
            kept = [i for i, k in zip(good, keep.to_pylist(), strict=True) if k]
            rows, moved = self._transform(fetched, decoded.batch.filter(keep), kept)
            bad = [b for b in decoded.bad + moved if b.partition not in stopped]
        counts = _counts(rows, fetched)
        dead: dict[int, int] = defaultdict(int)
        for b in bad:
            dead[b.partition] += 1
        advances = [Advance(p, states[p].next_offset, fetched.offsets[first + n - 1] + 1,
                            states[p].epoch, counts.get(p, 0), dead.get(p, 0))
                    for p, (first, n) in fetched.spans.items() if p not in stopped]
        if not advances:
            return StepResult(None, stopped=stopped)
        write = WriteBatch(rows, bad, advances, fetched)
        return StepResult(write, counts, dict(dead), stopped)

    def _transform(self, fetched: Fetched, batch: pa.RecordBatch, good: Sequence[int],
                   ) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        """The chain's output, and a dead letter for each record a transform raised on
        (found by retrying on halves; `good[i]` is row i's position in the fetch)."""
        if self.on_transform_error == "stop":
            try:
                return self.chain(batch), []
            except TransformFailed as exc:
                raise TransformError(
                    f"{exc} ({self.worker}, {_where(batch)}). Fix the transform, or set "
                    "pipeline.on_transform_error=dead_letter to dead-letter the records it "
                    "raises on.") from exc.cause
        outs, failed = self.chain.isolating(batch)
        moved = [fetched.dead_letter(good[i], str(exc), Reason.TRANSFORM) for i, exc in failed]
        if failed:
            log.warning("%s: %d record(s) dead-lettered by a transform, e.g. %s", self.worker,
                        len(failed), failed[0][1])
        if len(outs) == 1:
            return outs[0], moved
        if not outs:
            return pa.RecordBatch.from_pylist([], schema=self.output_schema), moved
        return pa.concat_batches(outs), moved

    def _limits(self, fetched: Fetched, bad: list[DeadLetter],
                states: Mapping[int, PartitionState]) -> dict[int, str]:
        """Partitions over the dead-letter limit: stopped before anything of them commits.
        Decode and transform dead letters both count; tombstones do not."""
        bad_at: dict[int, list[int]] = defaultdict(list)
        for b in bad:
            bad_at[b.partition].append(b.index - fetched.spans[b.partition][0])
        stopped: dict[int, str] = {}
        for p, (first, n) in fetched.spans.items():
            why = states[p].limit.observe(n, sorted(bad_at.get(p, [])))
            if why:
                stopped[p] = (f"{self.worker}: partition {p} stopped at offset "
                              f"{fetched.offsets[first]}: {why}. A producer is probably "
                              "sending broken records, or a transform fails on them; look at "
                              "veltrix_dead_letters, fix the cause or raise the limit, then "
                              "run again.")
                log.error(stopped[p])
        return stopped


def _where(batch: pa.RecordBatch) -> str:
    parts = sorted(set(batch.column("_kafka_partition").to_pylist()))
    offsets = batch.column("_kafka_offset")
    return (f"partitions {parts}, offsets {pc.min(offsets).as_py()}.."
            f"{pc.max(offsets).as_py()}")


def _counts(rows: pa.RecordBatch, fetched: Fetched) -> dict[int, int]:
    """Rows per partition; a custom transform that dropped `_kafka_partition` leaves only the
    batch total, booked to the fetch's first partition."""
    if rows.num_rows == 0:
        return {}
    if "_kafka_partition" not in rows.schema.names:
        return {fetched.partitions[0]: rows.num_rows}
    counts = pc.value_counts(rows.column("_kafka_partition"))
    return {int(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


def clip(fetched: Fetched, ends: Mapping[int, int]) -> Fetched:
    """The records below each partition's end in `ends` (until=drained: nothing past the
    high watermark the run began with)."""
    cut: dict[int, int] = {}
    for p, (first, n) in fetched.spans.items():
        end = ends.get(p)
        if end is not None and fetched.offsets[first + n - 1] >= end:
            cut[p] = sum(1 for o in fetched.offsets[first:first + n] if o < end)
    if not cut:
        return fetched
    keep = [i for p, (first, n) in fetched.spans.items()
            for i in range(first, first + cut.get(p, n))]
    return Fetched([fetched.partitions[i] for i in keep], [fetched.offsets[i] for i in keep],
                   [fetched.keys[i] for i in keep], [fetched.values[i] for i in keep],
                   [fetched.timestamps[i] for i in keep], topic=fetched.topic)
