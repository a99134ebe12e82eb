"""PartitionWorker: fetch -> decode -> dead-letter limit -> transform -> commit, per batch.

Plain class; the coordinator makes it a Ray actor with the topology's resources."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from veltrix_ray.batch import Decoded, Decoder, columns_from_config
from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Advance, Claim, DeadLetter, Fetched, Reason, WriteBatch
from veltrix_ray.errors import FencedError, TransformError, VeltrixError
from veltrix_ray.runtime.budget import Budget, Watchdog
from veltrix_ray.runtime.deadletters import DeadLetterLimit
from veltrix_ray.sink import make_sink
from veltrix_ray.source.kafka import close_consumer, open_consumer, start_offsets
from veltrix_ray.transform import build_chain

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    partition: int
    epoch: int
    next_offset: int | None  # committed: the next offset to process (None: never committed)
    high_watermark: int | None = None
    stop_at: int | None = None  # until=drained: the high watermark when the run began
    rows: int = 0
    dead_letters: int = 0
    error: str | None = None
    limit: DeadLetterLimit | None = None

    @property
    def done(self) -> bool:
        if self.error is not None:
            return True
        return self.stop_at is not None and (self.next_offset or 0) >= self.stop_at


@dataclass
class WorkerSpec:
    settings: VeltrixConfig
    name: str
    partitions: list[int]
    claims: dict[int, Claim]
    budget: Budget
    output_schema: pa.Schema


@dataclass
class _Commit:
    task: asyncio.Future[None]
    nbytes: int
    rows: dict[int, int]
    dead: dict[int, int]
    advances: list[Advance]
    started: float = field(default_factory=time.perf_counter)


class PartitionWorker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        s = spec.settings
        self.name = spec.name
        self.states = {p: PartitionState(p, spec.claims[p].epoch, spec.claims[p].next_offset,
                                         limit=DeadLetterLimit(s.pipeline.dead_letters))
                       for p in spec.partitions}
        self.decoder = Decoder(columns_from_config(s.pipeline.columns),
                               s.pipeline.max_record_bytes)
        self.chain = build_chain(s.pipeline.transforms)
        self.sink = make_sink(s, f"veltrix-ray {self.name}")
        self.watchdog = Watchdog(spec.budget, self.name, spec.partitions)
        self.held_bytes = 0
        self.batches = 0
        self.latencies: deque[float] = deque(maxlen=10_000)
        self.status = "starting"
        self.first_data_at: float | None = None  # wall clock of the first records fetched
        self._stopping = False
        self._commit: _Commit | None = None
        self._changes: list[tuple[str, Any, asyncio.Future[Any]]] = []
        self._gauge: Any = None

    # -- called by the coordinator -------------------------------------------------------------

    def pid(self) -> int:
        return os.getpid()

    async def stop(self) -> None:
        """Finish the batch in flight, commit it, exit."""
        self._stopping = True

    def progress(self, latencies: bool = True) -> dict[str, Any]:
        return {
            "worker": self.name, "pid": os.getpid(), "status": self.status,
            "first_data_at": self.first_data_at,
            "rss": self.watchdog.rss(),
            "peak_rss": self.watchdog.peak_rss, "held_bytes": self.held_bytes,
            "budget_bytes": self.spec.budget.budget_bytes, "batches": self.batches,
            "latencies": list(self.latencies) if latencies else [],
            "partitions": {p: self._report(st) for p, st in self.states.items()},
        }

    @staticmethod
    def _report(st: PartitionState) -> dict[str, Any]:
        return {"committed": st.next_offset, "high_watermark": st.high_watermark,
                "rows": st.rows, "dead_letters": st.dead_letters, "error": st.error}

    async def run(self) -> dict[str, Any]:
        try:
            from ray.util.metrics import Gauge

            self._gauge = Gauge("veltrix_worker_held_bytes",
                                "bytes of records held between fetch and commit",
                                tag_keys=("worker",))
        except Exception:  # metrics are optional (no Ray metrics agent)
            self._gauge = None
        s = self.spec.settings
        try:
            consumer = await open_consumer(s.kafka, self.spec.budget.batch_bytes, self.name)
        except KafkaError as exc:
            raise self._failure(exc, "check that kafka.bootstrap is reachable from this node "
                                f"(waited kafka.connect_timeout_s={s.kafka.connect_timeout_s:g}s)"
                                ) from exc
        try:
            self.status = "running"
            await self._loop(consumer)
            self.status = "stopped" if self._stopping else "done"
        except FencedError:
            self.status = "fenced"
            raise
        except OffsetOutOfRangeError as exc:
            raise self._failure(exc, "the stored offset is no longer in the topic (retention "
                                "deleted those records); to skip the loss, delete this "
                                "pipeline's rows in veltrix_offsets so kafka.start applies"
                                ) from exc
        except (VeltrixError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self._failure(exc, "see the worker's log (`ray logs`) for the traceback") from exc
        finally:
            self._abandon_changes()
            await close_consumer(consumer)
            self.sink.close()
        return self.progress()

    def _failure(self, exc: BaseException, fix: str) -> VeltrixError:
        where = ", ".join(f"partition {p} at offset {st.next_offset}"
                          for p, st in self.states.items())
        return VeltrixError(f"{self.name} failed ({where}): {type(exc).__name__}: {exc}. "
                            f"Fix: {fix}.")

    # -- the loop ------------------------------------------------------------------------------

    async def _loop(self, consumer: Any) -> None:
        s = self.spec.settings
        tps = await self._bind(consumer)
        paused: set[TopicPartition] = set()
        while not self._stopping:
            if self._changes:
                await self._finish_commit()
                self._apply_changes()
                tps = await self._bind(consumer)
                paused = set()
                continue
            self.watchdog.check(self.held_bytes)
            active = [tps[p] for p, st in self.states.items() if not st.done]
            if not active:
                break
            idle = [tp for tp in tps.values() if tp not in active and tp not in paused]
            if idle:  # drained or failed partitions: stop prefetching them
                consumer.pause(*idle)
                paused.update(idle)
            if self.held_bytes >= self.spec.budget.high_water_bytes:
                await self._finish_commit()  # backpressure: no new fetch until one commits
                continue
            data = await consumer.getmany(*active, timeout_ms=s.kafka.fetch_wait_ms,
                                          max_records=s.batch.max_records)
            for p, st in self.states.items():
                hw = consumer.highwater(tps[p])
                if hw is not None:
                    st.high_watermark = max(hw, st.stop_at or 0)
            if not data:
                await self._finish_commit()
                await self._skip_gaps(consumer, active)
                continue
            await self._process(self._fetched(data))
        await self._finish_commit()

    async def _bind(self, consumer: Any) -> dict[int, TopicPartition]:
        """Assign the consumer exactly this worker's partitions and seek each to its stored
        offset (or kafka.start); until=drained fixes a new partition's end on arrival."""
        s = self.spec.settings
        tps = {p: TopicPartition(s.kafka.topic, p) for p in self.states}
        consumer.assign(list(tps.values()))
        fresh = [tps[p] for p, st in self.states.items() if st.next_offset is None]
        starts = await start_offsets(consumer, fresh, s.kafka.start) if fresh else {}
        for p, st in self.states.items():
            consumer.seek(tps[p], starts[tps[p]] if st.next_offset is None else st.next_offset)
        unset = [tps[p] for p, st in self.states.items() if st.stop_at is None]
        if s.until == "drained" and unset:
            ends = await consumer.end_offsets(unset)
            for tp in unset:
                self.states[tp.partition].stop_at = ends[tp]
                self.states[tp.partition].high_watermark = ends[tp]
        self.watchdog.partitions = sorted(self.states)
        return tps

    # -- ownership changes (rescale), applied between batches ----------------------------------

    async def release(self, partitions: list[int]) -> dict[int, dict[str, Any]]:
        """Give partitions up after the batch in flight commits; returns their final state."""
        if self.status != "running":
            return {p: self._report(self.states.pop(p)) for p in partitions if p in self.states}
        return await self._change("release", partitions)  # type: ignore[no-any-return]

    async def acquire(self, claims: dict[int, Claim]) -> None:
        """Take more partitions (already claimed under new epochs by the coordinator)."""
        if self.status != "running":
            raise VeltrixError(f"{self.name} has finished; it cannot take partitions")
        await self._change("acquire", claims)

    async def _change(self, kind: str, payload: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._changes.append((kind, payload, future))
        return await future

    def _apply_changes(self) -> None:
        limit = self.spec.settings.pipeline.dead_letters
        for kind, payload, future in self._changes:
            if kind == "release":
                future.set_result({p: self._report(self.states.pop(p))
                                   for p in payload if p in self.states})
            else:
                for p, claim in payload.items():
                    self.states[p] = PartitionState(p, claim.epoch, claim.next_offset,
                                                    limit=DeadLetterLimit(limit))
                future.set_result(None)
        self._changes.clear()

    def _abandon_changes(self) -> None:
        for _, _, future in self._changes:
            if not future.done():
                future.set_exception(VeltrixError(f"{self.name} finished before the change"))
        self._changes.clear()

    def _fetched(self, data: dict[TopicPartition, list[Any]]) -> Fetched:
        parts: list[int] = []
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        stamps: list[int] = []
        spans: dict[int, tuple[int, int]] = {}
        for tp, records in data.items():
            st = self.states[tp.partition]
            if st.stop_at is not None:  # drained mode: nothing past the run's high watermark
                records = [r for r in records if r.offset < st.stop_at] \
                    if records[-1].offset >= st.stop_at else records
            if records:
                spans[tp.partition] = (len(parts), len(records))
            parts += [tp.partition] * len(records)
            offsets += [r.offset for r in records]
            keys += [r.key for r in records]
            values += [r.value for r in records]
            stamps += [r.timestamp for r in records]
        return Fetched(parts, offsets, keys, values, stamps, spans, self.spec.settings.kafka.topic)

    async def _skip_gaps(self, consumer: Any, active: list[TopicPartition]) -> None:
        """An idle partition whose position moved past its last record (transaction markers,
        compaction) commits that position, so that lag and `until=drained` can reach zero."""
        advances = []
        for tp in active:
            st = self.states[tp.partition]
            position = await consumer.position(tp)
            if st.stop_at is not None:
                position = min(position, st.stop_at)
            if position > (st.next_offset or 0):
                advances.append(Advance(tp.partition, st.next_offset, position, st.epoch))
        if advances:
            empty = pa.RecordBatch.from_pylist([], schema=self.spec.output_schema)
            await self._submit(empty, [], advances, 0, {}, {})
            await self._finish_commit()

    async def _process(self, fetched: Fetched) -> None:
        if not len(fetched):
            return
        if self.first_data_at is None:
            self.first_data_at = time.time()
        self.held_bytes += fetched.nbytes
        decoded = self.decoder.decode(fetched)
        self.watchdog.check(self.held_bytes)
        decoded, failed = self._apply_limits(fetched, decoded)
        batch, bad = self._transform(fetched, decoded)
        rows = _counts(batch, fetched.partitions)
        dead: dict[int, int] = defaultdict(int)
        for b in bad:
            dead[b.partition] += 1
        advances = [Advance(p, self.states[p].next_offset, fetched.offsets[first + n - 1] + 1,
                            self.states[p].epoch, rows.get(p, 0), dead.get(p, 0))
                    for p, (first, n) in fetched.spans.items() if p not in failed]
        if advances:
            await self._submit(batch, bad, advances, fetched.nbytes, rows, dead)
        else:
            self.held_bytes -= fetched.nbytes

    def _apply_limits(self, fetched: Fetched, decoded: Decoded) -> tuple[Decoded, set[int]]:
        """Stop partitions over the dead-letter limit before anything of them commits."""
        bad_at: dict[int, list[int]] = defaultdict(list)
        for b in decoded.bad:
            bad_at[b.partition].append(b.index - fetched.spans[b.partition][0])
        failed: set[int] = set()
        for p, (first, n) in fetched.spans.items():
            st = self.states[p]
            assert st.limit is not None
            why = st.limit.observe(n, bad_at.get(p, []))
            if why:
                st.error = (f"{self.name}: partition {p} stopped at offset "
                            f"{fetched.offsets[first]}: {why}. A producer is probably "
                            "sending broken records; look at veltrix_dead_letters, fix the "
                            "producer or raise the limit, then run again.")
                failed.add(p)
                log.error(st.error)
        if not failed:
            return decoded, failed
        keep = pc.invert(pc.is_in(decoded.batch.column("_kafka_partition"),
                                  value_set=pa.array(sorted(failed), pa.int32())))
        return Decoded(decoded.batch.filter(keep),
                       [b for b in decoded.bad if b.partition not in failed]), failed

    def _transform(self, fetched: Fetched,
                   decoded: Decoded) -> tuple[pa.RecordBatch, list[DeadLetter]]:
        try:
            return self.chain(decoded.batch), decoded.bad
        except Exception as exc:
            parts = sorted(set(decoded.batch.column("_kafka_partition").to_pylist()))
            offsets = decoded.batch.column("_kafka_offset")
            where = (f"{self.name}, partitions {parts}, offsets "
                     f"{pc.min(offsets).as_py()}..{pc.max(offsets).as_py()}")
            if self.spec.settings.pipeline.on_transform_error == "stop":
                raise TransformError(
                    f"a transform raised {type(exc).__name__}: {exc} ({where}). Fix the "
                    "transform, or set pipeline.on_transform_error=dead_letter to keep going."
                ) from exc
            error = f"transform raised {type(exc).__name__}: {exc}"
            part = decoded.batch.column("_kafka_partition").to_pylist()
            offs = offsets.to_pylist()
            keys = decoded.batch.column("_kafka_key").to_pylist()
            index = decoded.good if decoded.good is not None else range(len(fetched))
            moved = [DeadLetter(p, o, k, fetched.values[i], error, Reason.TRANSFORM, i)
                     for p, o, k, i in zip(part, offs, keys, index, strict=False)]
            empty = pa.RecordBatch.from_pylist([], schema=self.spec.output_schema)
            return empty, decoded.bad + moved

    # -- commits: one in flight while the next batch is fetched and decoded --------------------

    async def _submit(self, batch: pa.RecordBatch, bad: list[DeadLetter],
                      advances: list[Advance], nbytes: int, rows: dict[int, int],
                      dead: dict[int, int]) -> None:
        await self._finish_commit()
        write = WriteBatch(batch, bad, advances)
        task = asyncio.ensure_future(asyncio.to_thread(self.sink.write, write))
        self._commit = _Commit(task, nbytes, rows, dead, advances)
        for a in advances:  # the next batch of a partition continues where this one ends
            self.states[a.partition].next_offset = a.new
        if self._gauge is not None:
            self._gauge.set(self.held_bytes, tags={"worker": self.name})

    async def _finish_commit(self) -> None:
        commit, self._commit = self._commit, None
        if commit is None:
            return
        await commit.task
        self.latencies.append(time.perf_counter() - commit.started)
        self.held_bytes -= commit.nbytes
        self.batches += 1
        for p, n in commit.rows.items():
            self.states[p].rows += n
        for p, n in commit.dead.items():
            self.states[p].dead_letters += n


def _counts(batch: pa.RecordBatch, partitions: list[int]) -> dict[int, int]:
    """Rows per partition; a custom transform that dropped `_kafka_partition` leaves only the
    batch total, booked to its first partition."""
    if batch.num_rows == 0:
        return {}
    if "_kafka_partition" not in batch.schema.names:
        return {partitions[0]: batch.num_rows}
    counts = pc.value_counts(batch.column("_kafka_partition"))
    return {int(v["values"]): int(v["counts"]) for v in counts.to_pylist()}
