"""PartitionWorker: the Ray actor around a WorkerLoop with a Kafka source and a PostgreSQL
sink. It opens and closes the two ends and turns failures into messages that name the
actor, the partitions, their offsets and the fix."""

from __future__ import annotations

import asyncio
import gc
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Claim
from veltrix_ray.errors import FencedError, RetriableError, VeltrixError, WorkerCrashed
from veltrix_ray.runtime.budget import Budget
from veltrix_ray.runtime.committer import Committed
from veltrix_ray.runtime.loop import WorkerLoop
from veltrix_ray.runtime.metrics import WorkerMetrics
from veltrix_ray.runtime.reports import PartitionReport, WorkerReport
from veltrix_ray.runtime.state import PartitionState
from veltrix_ray.sink import make_sink
from veltrix_ray.source.kafka import KafkaSource


@dataclass
class WorkerSpec:
    settings: VeltrixConfig
    name: str
    partitions: list[int]
    claims: dict[int, Claim]
    budget: Budget
    output_schema: pa.Schema
    stopped: dict[int, str] = field(default_factory=dict)  # by the dead-letter limit, earlier
    slot: int = 0  # the coordinator's partition-set index, stable across restarts


class PartitionWorker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.sink = make_sink(spec.settings, f"veltrix-ray {self.name}")
        self.loop: WorkerLoop | None = None
        self.status = "starting"
        self._stop_requested = False
        self.metrics = WorkerMetrics(spec.settings.pipeline.name, spec.slot)
        self._started = asyncio.Event()  # Kafka connected and the loop built (or failed)
        self.node = _node_id()

    # -- called by the coordinator -------------------------------------------------------------

    async def ready(self) -> dict[str, Any]:
        """Returns once the worker can take partitions (its Kafka client is connected):
        where it runs and its status ("running" when ready)."""
        await self._started.wait()
        import ray

        return {"status": self.status, "node": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}

    async def stop(self) -> None:
        """Finish the batch in flight, commit it, exit."""
        self._stop_requested = True
        if self.loop is not None:
            self.loop.stop()

    def progress(self, latencies: bool = True) -> WorkerReport:
        loop = self.loop
        dog = loop.watchdog if loop else None
        return WorkerReport(
            worker=self.name, slot=self.spec.slot, pid=os.getpid(), node=self.node,
            status=self.status, busy_ratio=loop.busy.ratio() if loop else 0.0,
            commit_p95_s=loop.commit_p95() if loop else 0.0,
            first_data_at=loop.first_data_at if loop else None,
            rss=dog.rss() if dog else 0, peak_rss=dog.peak() if dog else 0,
            held_bytes=loop.held_bytes if loop else 0,
            budget_bytes=self.spec.budget.budget_bytes,
            batches=loop.batches if loop else 0,
            waiting=loop.committer.waiting if loop else None,
            latencies=list(loop.latencies) if loop and latencies else [],
            partitions=loop.reports() if loop else {})

    async def release(self, partitions: list[int]) -> dict[int, PartitionReport]:
        """Give partitions up after the batch in flight commits; returns their final state."""
        if self.loop is None:  # not started yet: it will start without them
            claims = [self.spec.claims.pop(p) for p in partitions if p in self.spec.claims]
            return {c.partition: PartitionState(c.partition, c.epoch, c.next_offset,
                                                stopped=self.spec.stopped.get(c.partition)
                                                ).report() for c in claims}
        if self.status != "running":
            return {p: self.loop.states.pop(p).report() for p in partitions
                    if p in self.loop.states}
        return await self.loop.release(partitions)

    async def acquire(self, claims: dict[int, Claim], stopped: dict[int, str]) -> None:
        """Take more partitions (already claimed under new epochs by the coordinator);
        `stopped` ones stay stopped (the dead-letter limit stopped them earlier)."""
        if self.status != "running" or self.loop is None:
            raise VeltrixError(f"{self.name} has finished; it cannot take partitions")
        await self.loop.acquire(claims, stopped)

    async def run(self) -> WorkerReport:
        s = self.spec.settings
        try:
            source = await KafkaSource.open(s.kafka, self.spec.budget.batch_bytes, self.name)
        except KafkaError as exc:
            self.sink.close()
            self.status = "failed"
            self._started.set()
            raise self._failure(exc, "check that kafka.bootstrap is reachable from this node "
                                f"(waited kafka.connect_timeout_s={s.kafka.connect_timeout_s:g}s"
                                "; the worker is restarted and waits again)", RetriableError
                                ) from exc
        try:
            self.loop = WorkerLoop(s, self.name, self.spec.claims, self.spec.budget,
                                   self.spec.output_schema, source, self.sink,
                                   self.spec.stopped, on_commit=self._committed)
            self.loop.stopping = self._stop_requested
            _warm_up()
            self.status = "running"
            self._started.set()
            await self.loop.run()
            self.status = "stopped" if self.loop.stopping else "done"
        except FencedError:
            self.status = "fenced"
            raise
        except OffsetOutOfRangeError as exc:
            raise self._failure(exc, "the stored offset is no longer in the topic (retention "
                                "deleted those records); to skip the loss, stop the pipeline "
                                "and run `veltrix-ray reset-offsets --to earliest` (or "
                                "`--to latest`) with the same overrides as `run`"
                                ) from exc
        except (VeltrixError, asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # also a native codec's panic (pyo3's PanicException)
            raise self._crashed(exc) from exc
        finally:
            if self.status == "running":  # it raised: no partition can be handed to it now
                self.status = "failed"
            self._started.set()
            await source.close()
            self.sink.close()
        return self.progress()

    def _committed(self, done: Committed[Any]) -> None:
        self.metrics.committed(done.write_s, done.write.rows.num_rows - len(done.rejected))

    def _failure(self, exc: BaseException, fix: str,
                 kind: type[VeltrixError] = VeltrixError) -> VeltrixError:
        at = ", ".join(f"partition {p} at offset {o}" for p, o in self._positions().items())
        return kind(self._message(exc, at, fix))

    def _crashed(self, exc: BaseException) -> WorkerCrashed:
        """An unexpected failure, with where it happened: the failing batch's partitions (all
        of the worker's when it failed between batches)."""
        where = (self.loop.failed_at if self.loop else {}) or {
            p: (offset or 0, offset or 0) for p, offset in self._positions().items()}
        at = ", ".join(f"partition {p} offsets {first}..{last}"
                       for p, (first, last) in where.items())
        return WorkerCrashed(self._message(exc, at, "see the worker's log (`ray logs`) for "
                                           "the traceback"), type(exc).__name__, where)

    def _positions(self) -> dict[int, int | None]:
        if self.loop is not None and self.loop.states:
            return {p: st.next_offset for p, st in self.loop.states.items()}
        return {p: c.next_offset for p, c in self.spec.claims.items()}

    def _message(self, exc: BaseException, at: str, fix: str) -> str:
        return f"{self.name} failed ({at}): {type(exc).__name__}: {exc}. Fix: {fix}."


def _warm_up() -> None:
    """Pay the process's one-time costs before the first record rather than with it (they made
    the first ~0.2 s of a run's events wait 0.2-0.5 s, the p99 of benchmarks/pipeline.py's
    latency): pyarrow imports pandas at its first conversion of a Python list (~0.2 s), and
    the first full collection walks the whole startup heap (Ray, aiokafka, pyarrow; ~0.1 s).
    That heap lives as long as the process: frozen, the collector no longer walks it."""
    pa.array([], pa.int64())
    gc.collect()
    gc.freeze()


def _node_id() -> str | None:
    """The Ray node this actor runs on (None outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
