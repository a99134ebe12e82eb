"""A worker's loop over its two ends: fetch -> step -> commit, one commit in flight.

Knows the source and the sink only through veltrix_ray.contracts, so unit tests run it with
in-memory fakes; the Ray actor (worker.py) is a thin shell around it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from veltrix_ray.batch.make import make_decoder
from veltrix_ray.batch.registry import RegistryDecoder
from veltrix_ray.batch.schema import arrow_field
from veltrix_ray.batch.writer import Writer
from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import (
    Advance,
    Claim,
    Fetched,
    OffsetSink,
    PartitionSource,
    Reason,
    WriteBatch,
)
from veltrix_ray.errors import VeltrixError
from veltrix_ray.runtime.budget import MIB, Budget, Watchdog, release_memory
from veltrix_ray.runtime.committer import Committed, Committer
from veltrix_ray.runtime.meter import BusyMeter
from veltrix_ray.runtime.reports import PartitionReport
from veltrix_ray.runtime.state import PartitionState
from veltrix_ray.runtime.step import Step, clip
from veltrix_ray.transform import build_chain

log = logging.getLogger(__name__)
FIRST_FETCH_RECORDS = 10


Span = tuple[int, int]  # the first and the last offset of a partition's records in a batch


def spans(fetched: Fetched) -> dict[int, Span]:
    return {p: (fetched.offsets[i], fetched.offsets[i + n - 1])
            for p, (i, n) in fetched.spans.items()}


def write_spans(write: WriteBatch) -> dict[int, Span]:
    first = spans(write.fetched) if write.fetched is not None else {}
    return {a.partition: (a.expected if a.expected is not None
                          else first.get(a.partition, (a.new - 1, 0))[0], a.new - 1)
            for a in write.advances}


@dataclass(frozen=True)
class Acquire:
    """A change request: take these partitions (claimed under new epochs by the coordinator);
    `stopped` ones stay stopped."""

    claims: dict[int, Claim]
    stopped: dict[int, str]


@dataclass(frozen=True)
class Release:
    """A change request: give these partitions up after the batch in flight commits."""

    partitions: list[int]


@dataclass
class _Booked:
    """What a submitted batch adds to the partitions' counters once it commits."""

    nbytes: int
    rows: dict[int, int] = field(default_factory=dict)
    dead: dict[int, int] = field(default_factory=dict)
    records: dict[int, int] = field(default_factory=dict)
    reasons: dict[tuple[int, str], int] = field(default_factory=dict)  # dead letters


class WorkerLoop:
    def __init__(self, settings: VeltrixConfig, name: str, claims: Mapping[int, Claim],
                 budget: Budget, output_schema: pa.Schema, source: PartitionSource,
                 sink: OffsetSink, stopped: Mapping[int, str] | None = None,
                 watchdog: Watchdog | None = None,
                 on_commit: Callable[[Committed[Any]], None] | None = None,
                 schemas: Callable[[int, str], Writer | None] | None = None) -> None:
        s = settings
        self.settings = settings
        self.name = name
        self.budget = budget
        self.output_schema = output_schema
        self.source = source
        self.sink = sink
        self.states = {p: self._state(c) for p, c in claims.items()}
        for p, why in (stopped or {}).items():  # stopped earlier in this run: stays stopped
            if p in self.states:
                self.states[p].stopped = why
        decoder, self.registries = make_decoder(s)
        if self.registries and schemas is None:
            from veltrix_ray.runtime.schemas import RegistrySchemas
            schemas = RegistrySchemas.from_config(s)
        self.schemas = schemas
        self.step = Step(name, decoder, build_chain(s.pipeline.transforms), output_schema,
                         s.pipeline.on_transform_error)
        self.committer: Committer[_Booked] = Committer(sink, name)
        self.watchdog = watchdog or Watchdog(budget, name, sorted(claims))
        self.held_bytes = 0
        # batch size in records: `fit` (the byte cap over the records' decoded size seen so
        # far) times the share of a full batch the RSS leaves room for, at most `ceiling`
        # (batch.max_records); the first fetch is small, as nothing is known yet of the
        # records' size (compression hides it)
        self.ceiling = s.batch.max_records
        self.fit = FIRST_FETCH_RECORDS
        self.max_records = min(self.ceiling, self.fit)
        self.serial = s.topology.memory.inflight_batches == 1  # one batch alive at a time
        self.degraded = False  # RSS above the high-water mark: smaller batches, one in flight
        self.batches = 0
        self.latencies: deque[float] = deque(maxlen=10_000)
        self.busy = BusyMeter()
        self.write_times: deque[float] = deque(maxlen=200)  # recent commit transactions
        self.on_commit = on_commit  # each finished commit (the worker's metrics)
        self.first_data_at: float | None = None  # wall clock of the first records fetched
        self.stopping = False
        # where the run failed: the failing batch's span of each of its partitions (the
        # coordinator tells a failure that recurs at one place from one that moves on)
        self.failed_at: dict[int, Span] = {}
        self._changes: list[tuple[Acquire | Release, asyncio.Future[Any]]] = []
        self._work = asyncio.Event()  # a change or a stop for a worker with no partitions

    def _state(self, claim: Claim) -> PartitionState:
        return PartitionState(claim.partition, claim.epoch, claim.next_offset,
                              self.settings.pipeline.dead_letters)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._loop()
            await self._finish_commit()
        except BaseException:
            failed = self.committer.failed
            if failed is not None and not self.failed_at:
                self.failed_at = write_spans(failed)
            await self.committer.abandon()
            raise
        finally:
            self._abandon_changes()

    async def _loop(self) -> None:
        await self._bind()
        while not self.stopping:
            if self._changes:
                await self._finish_commit()
                self._apply_changes()
                await self._bind()
                continue
            active = [p for p, st in self.states.items() if not st.done]
            if not self.states:  # a new worker of a rescale: ready, waiting for partitions
                await self._work.wait()
                self._work.clear()
                continue
            # after the wait: a worker fails for memory only once it holds partitions (the
            # coordinator hands a new worker its set while that one waits above)
            self._guard_memory()
            if not active:
                break
            if self.committer.in_flight and (self.serial or self.degraded or
                                             self.held_bytes >= self.budget.high_water_bytes):
                await self._finish_commit()  # backpressure: no new fetch until one commits
                continue
            fetched = await self.source.fetch(active, self.max_records)
            for p, st in self.states.items():
                hw = self.source.high_watermark(p)
                if hw is not None:
                    st.high_watermark = max(hw, st.stop_at or 0)
            fetched = clip(fetched, {p: st.stop_at for p, st in self.states.items()
                                     if st.stop_at is not None})
            if not len(fetched):
                await self._finish_commit()
                await self._skip_gaps(active)
                continue
            await self._process(fetched)

    async def _bind(self) -> None:
        """Read exactly this worker's partitions, each from its stored offset (or
        kafka.start); until=drained fixes a new partition's end on arrival."""
        await self.source.bind({p: st.next_offset for p, st in self.states.items()})
        unset = [p for p, st in self.states.items() if st.stop_at is None]
        if self.settings.until == "drained" and unset:
            for p, end in (await self.source.end_offsets(unset)).items():
                self.states[p].stop_at = end
                self.states[p].high_watermark = end
        self.watchdog.partitions = sorted(self.states)

    async def _process(self, fetched: Fetched) -> None:
        try:
            await self._step(fetched)
        except BaseException:
            self.failed_at = spans(fetched)
            raise

    async def _step(self, fetched: Fetched) -> None:
        if self.first_data_at is None:
            self.first_data_at = time.time()
        self.held_bytes += fetched.nbytes
        self._size_batches(fetched)
        for registry, view in self.registries:
            await self._learn_schemas(view(fetched), registry)
        started = time.perf_counter()
        result = self.step(fetched, self.states)
        self.busy.add(time.perf_counter() - started)
        self.watchdog.look()  # the peak, and a crossed ceiling said once
        for p, why in result.stopped.items():
            self.states[p].stopped = why
        if result.write is None:
            self.held_bytes -= fetched.nbytes
            return
        reasons: Counter[tuple[int, str]] = Counter(
            (d.partition, Reason(d.reason).value) for d in result.write.dead_letters)
        records = {a.partition: fetched.spans[a.partition][1] for a in result.write.advances}
        await self._submit(result.write, _Booked(fetched.nbytes, result.rows, result.dead,
                                                 records, dict(reasons)))

    # -- registry formats: writer schemas, fetched once per id -----------------------------------

    async def _learn_schemas(self, fetched: Fetched, decoder: RegistryDecoder) -> None:
        for sid in decoder.missing(fetched):
            writer = await self._writer(sid, decoder.subject, fetched)
            if writer is None:
                log.warning("%s: schema id %d is not in the registry: its records are dead "
                            "letters", self.name, sid)
                decoder.unknown(sid)
                continue
            plan = decoder.plan(writer)
            if plan.refused is not None:
                decoder.refuse(writer, plan.refused)
                continue
            if plan.add:  # schema evolution: the columns exist before the batch that holds them
                await asyncio.to_thread(self.sink.add_columns, [arrow_field(c) for c in plan.add])
                decoder.extend(plan.add)
                self._reshape()
            decoder.admit(writer)

    async def _writer(self, sid: int, subject: str, fetched: Fetched) -> Writer | None:
        """The writer schema `sid`; while the registry cannot be reached, wait (the records
        wait with it: nothing is dead-lettered for an outage)."""
        from veltrix_ray.registry.client import RegistryUnavailable
        assert self.schemas is not None
        delay, waited, said = 0.2, 0.0, -30.0
        while True:
            try:
                return await asyncio.to_thread(self.schemas, sid, subject)
            except RegistryUnavailable as exc:
                if waited - said >= 30:  # say it now and then, not at every try
                    where = ", ".join(f"{p}@{fetched.offsets[first]}"
                                      for p, (first, _) in fetched.spans.items())
                    log.warning("%s: waiting for the schema registry to fetch schema id %d "
                                "(partitions@offsets %s wait; nothing is dead-lettered): %s. "
                                "Check that it runs (schema_registry.url)", self.name, sid,
                                where, exc)
                    said = waited
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
                if self.stopping:
                    raise

    def _reshape(self) -> None:
        """The transform chain's output once the decoder has more columns."""
        from veltrix_ray.batch.schema import METADATA
        schema = pa.unify_schemas([self.step.decoder.schema, METADATA])
        self.output_schema = self.step.chain(pa.RecordBatch.from_pylist([], schema=schema)).schema
        self.step.output_schema = self.output_schema

    # -- the memory budget: degrade before failing -----------------------------------------------

    def _size_batches(self, fetched: Fetched) -> None:
        """As many records as fit the budget's byte cap, decompressed: the broker's fetch
        limit counts compressed bytes, and a zstd topic can bring many times that."""
        self.fit = max(1, len(fetched) * self.budget.batch_bytes // max(fetched.nbytes, 1))
        self.max_records = min(self.ceiling, self.fit)

    def _guard_memory(self) -> None:
        """Before a fetch: above the high-water mark, let go of freed memory, then size the
        next batch to the room left under the ceiling, one batch in flight; fail only when
        the process is over budget with no batch in flight."""
        b = self.budget
        rss = self.watchdog.look()
        if rss > b.rss_high_water_bytes:
            release_memory()  # freed pages count as resident until handed back
            rss = self.watchdog.look()
        share = b.share(rss)
        if rss > b.budget_bytes and not self.committer.in_flight:
            raise self.watchdog.exceeded(rss, self.max_records)
        self.max_records = max(1, min(self.ceiling, int(self.fit * share)))
        if (share < 1.0) != self.degraded:
            self.degraded = share < 1.0
            log.info("%s: %d MiB resident, %s the %d MiB high-water mark under the %d MiB "
                     "budget (topology.memory_mb): batches %s", self.name, rss // MIB,
                     "above" if self.degraded else "back under", b.rss_high_water_bytes // MIB,
                     b.budget_bytes // MIB,
                     f"now up to {self.max_records} records, one in flight" if self.degraded
                     else "at full size again")

    async def _skip_gaps(self, active: list[int]) -> None:
        """An idle partition whose position moved past its last record (transaction markers,
        compaction) commits that position, so that lag and `until=drained` can reach zero."""
        advances = []
        for p in active:
            st = self.states[p]
            position = await self.source.position(p)
            if st.stop_at is not None:
                position = min(position, st.stop_at)
            if position > (st.next_offset or 0):
                advances.append(Advance(p, st.next_offset, position, st.epoch))
        if advances:
            empty = pa.RecordBatch.from_pylist([], schema=self.output_schema)
            await self._submit(WriteBatch(empty, [], advances), _Booked(0))
            await self._finish_commit()

    # -- commits -------------------------------------------------------------------------------

    async def _submit(self, write: WriteBatch, booked: _Booked) -> None:
        self._book(await self.committer.submit(write, booked))
        for a in write.advances:  # the next batch of a partition continues where this one ends
            self.states[a.partition].next_offset = a.new

    async def _finish_commit(self) -> None:
        self._book(await self.committer.finish())

    def _book(self, done: Committed[_Booked] | None) -> None:
        if done is None:
            return
        self.latencies.append(done.seconds)
        self.busy.add(done.write_s)
        self.write_times.append(done.write_s)
        self.held_bytes -= done.context.nbytes
        self.batches += 1
        booked = done.context
        for p, n in booked.rows.items():
            if p in self.states:
                self.states[p].rows += n
        for p, n in booked.dead.items():
            if p in self.states:
                self.states[p].dead_letters += n
        for p, n in booked.records.items():
            if p in self.states:
                self.states[p].records += n
        reasons = Counter(booked.reasons)
        for bad in done.rejected:  # rows the database refused, dead-lettered instead
            if bad.partition in self.states:
                self.states[bad.partition].rows -= 1
                self.states[bad.partition].dead_letters += 1
                reasons[(bad.partition, Reason.SINK.value)] += 1
        for (p, reason), n in reasons.items():
            if p in self.states:
                st = self.states[p]
                st.reasons[reason] = st.reasons.get(reason, 0) + n
        if self.on_commit is not None:
            self.on_commit(done)

    def commit_p95(self) -> float:
        """Seconds of the recent commit transactions, 95th percentile."""
        if not self.write_times:
            return 0.0
        ordered = sorted(self.write_times)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    # -- ownership changes (rescale), applied between batches ----------------------------------

    def reports(self) -> dict[int, PartitionReport]:
        return {p: st.report() for p, st in self.states.items()}

    async def acquire(self, claims: Mapping[int, Claim], stopped: Mapping[int, str]) -> None:
        """Take more partitions, between two batches."""
        await self._change(Acquire(dict(claims), dict(stopped)))

    async def release(self, partitions: Sequence[int]) -> dict[int, PartitionReport]:
        """Give partitions up after the batch in flight commits; their final state."""
        released: dict[int, PartitionReport] = await self._change(Release(list(partitions)))
        return released

    async def _change(self, request: Acquire | Release) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._changes.append((request, future))
        self._work.set()
        return await future

    def stop(self) -> None:
        """Finish the batch in flight, commit it, end."""
        self.stopping = True
        self._work.set()

    def _apply_changes(self) -> None:
        for request, future in self._changes:
            if isinstance(request, Release):
                future.set_result({p: self.states.pop(p).report()
                                   for p in request.partitions if p in self.states})
                continue
            for p, claim in request.claims.items():
                self.states[p] = self._state(claim)
                self.states[p].stopped = request.stopped.get(p)
            future.set_result(None)
        self._changes.clear()

    def _abandon_changes(self) -> None:
        for _, future in self._changes:
            if not future.done():
                future.set_exception(VeltrixError(f"{self.name} finished before the change"))
        self._changes.clear()

