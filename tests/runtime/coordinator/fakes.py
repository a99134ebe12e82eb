"""An in-memory WorkerPool, a claims store, metrics and a clock: the coordinator's logic
(Ownership) driven without Ray, PostgreSQL or Kafka."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Claim, Totals
from veltrix_ray.errors import SinkError
from veltrix_ray.runtime.coordinator.core import Ownership
from veltrix_ray.runtime.coordinator.health import Death, Failure
from veltrix_ray.runtime.coordinator.pool import Outcome, Worker, WorkerGone
from veltrix_ray.runtime.reports import PartitionReport, WorkerReport

from ..fakes import settings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class FakeWorker:
    """What a worker process would hold: its partitions under their claims."""

    name: str
    slot: int
    owned: dict[int, Claim]
    stopped: dict[int, str]
    placed: asyncio.Event = field(default_factory=asyncio.Event)
    run: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    stop_asked: bool = False
    killed: bool = False
    die_on_release: bool = False

    def report(self) -> WorkerReport:
        parts = {p: PartitionReport(committed=c.next_offset, high_watermark=None, rows=0,
                                    dead_letters=0, records=0, reasons={},
                                    error=self.stopped.get(p))
                 for p, c in self.owned.items()}
        return WorkerReport(worker=self.name, slot=self.slot, pid=id(self), node="node-0",
                            status="running", busy_ratio=0.0, commit_p95_s=0.0,
                            first_data_at=None, rss=0, peak_rss=0, held_bytes=0,
                            budget_bytes=1, batches=0, waiting=None, latencies=[],
                            partitions=parts)

    def end(self, outcome: Outcome) -> None:
        if not self.run.done():
            self.run.set_result(outcome)


class FakePool:
    def __init__(self, auto_place: bool = True) -> None:
        self.auto_place = auto_place  # workers connect at once (else: place() them)
        self.workers: list[FakeWorker] = []  # every worker created, in order

    # -- the port --------------------------------------------------------------------------

    def adopt(self, name: str, slot: int) -> Worker:
        fake = FakeWorker(name, slot, {}, {})
        self.workers.append(fake)
        if self.auto_place:
            fake.placed.set()
        return Worker(name, slot, fake)

    async def create(self, name: str, slot: int, partitions: list[int],
                     claims: dict[int, Claim], stopped: dict[int, str]) -> Worker:
        worker = self.adopt(name, slot)
        worker.handle.owned = dict(claims)
        worker.handle.stopped = dict(stopped)
        return worker

    async def ready(self, worker: Worker) -> str | None:
        fake: FakeWorker = worker.handle
        await fake.placed.wait()
        if fake.run.done():
            raise WorkerGone(f"{fake.name} ended")
        return "node-0"

    async def acquire(self, worker: Worker, claims: dict[int, Claim],
                      stopped: dict[int, str]) -> None:
        fake: FakeWorker = worker.handle
        await asyncio.sleep(0)
        if fake.run.done():
            raise WorkerGone(f"{fake.name} has finished")
        fake.owned.update(claims)
        fake.stopped.update(stopped)

    async def release(self, worker: Worker, partitions: list[int]
                      ) -> dict[int, PartitionReport]:
        fake: FakeWorker = worker.handle
        await asyncio.sleep(0)
        if fake.die_on_release:
            self.die(fake)
        if fake.run.done():
            raise WorkerGone(f"{fake.name} died")
        report = fake.report().partitions
        for p in partitions:
            fake.owned.pop(p, None)
        return {p: report[p] for p in partitions if p in report}

    async def stop(self, worker: Worker) -> None:
        fake: FakeWorker = worker.handle
        fake.stop_asked = True
        fake.end(Outcome(report=fake.report()))

    def kill(self, worker: Worker) -> None:
        worker.handle.killed = True
        self.die(worker.handle)

    def ended(self, workers: list[Worker]) -> list[Worker]:
        return [w for w in workers if w.handle.run.done()]

    async def outcome(self, worker: Worker) -> Outcome:
        return await asyncio.shield(worker.handle.run)

    async def poll(self, worker: Worker) -> WorkerReport | None:
        fake: FakeWorker = worker.handle
        return None if fake.run.done() else fake.report()

    # -- what happens to workers -----------------------------------------------------------

    def die(self, fake: FakeWorker) -> None:
        """kill -9, an OOM kill, its node lost."""
        fake.end(Outcome(failure=Failure(Death.LOST, "died (killed)")))

    def crash(self, fake: FakeWorker, where: dict[int, tuple[int, int]]) -> None:
        fake.end(Outcome(failure=Failure(Death.CRASH, "failed: ValueError: boom",
                                         "ValueError", where)))

    def running(self) -> list[FakeWorker]:
        return [w for w in self.workers if not w.run.done()]


class FakeClaims:
    """veltrix_offsets' claims: each bumps the partitions' epochs. `hold()` makes the next
    claims wait until `release()` (a lock held by another session)."""

    def __init__(self) -> None:
        self.epochs: dict[int, int] = {}
        self.claimed: list[list[int]] = []
        self.refuse = 0  # the next claims that fail (a lock not granted in time)
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def claim(self, partitions: list[int]) -> dict[int, Claim]:
        self._open.wait(10)
        if self.refuse:
            self.refuse -= 1
            raise SinkError(f"claiming partitions {partitions}: lock not granted")
        self.claimed.append(list(partitions))
        for p in partitions:
            self.epochs[p] = self.epochs.get(p, 0) + 1
        return {p: Claim(p, 0, self.epochs[p]) for p in partitions}

    def totals(self) -> dict[int, Totals]:
        return {}

    def blockers(self) -> str | None:
        return None


@dataclass
class FakeMetrics:
    restarts: int = 0
    rescales: int = 0
    fenced: int = 0
    ticks: int = 0

    def tick(self, progress: dict[str, Any], *, live: int, target: int) -> None:
        self.ticks += 1

    def restarted(self) -> None:
        self.restarts += 1

    def fenced_commit(self) -> None:
        self.fenced += 1

    def rescaled(self) -> None:
        self.rescales += 1


@dataclass
class Harness:
    own: Ownership
    pool: FakePool
    claims: FakeClaims
    clock: Clock
    metrics: FakeMetrics
    task: asyncio.Task[None] | None = None

    def begin(self, first: bool = True) -> None:
        """The run, with the driver's first workers (or none)."""
        s = self.own.settings
        n = self.own.target if first else 0
        workers: list[Worker | None] = [self.pool.adopt(f"{s.pipeline.name}:w{i}.0", i)
                                        for i in range(n)]
        self.task = asyncio.ensure_future(self.own.run(workers, self.count))

    count: int = 8

    async def until(self, what: str, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            if self.task is not None and self.task.done():
                self.task.result()  # its error, if any
            assert loop.time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.002)

    async def ended(self, timeout: float = 5.0) -> None:
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def owners(self) -> dict[int, list[str]]:
        """Per partition, the running workers that hold it."""
        held: dict[int, list[str]] = {}
        for w in self.pool.running():
            for p in w.owned:
                held.setdefault(p, []).append(w.name)
        return held

    def names(self) -> list[str]:
        return [w.name for w in self.pool.workers]


def harness(*overrides: str, partitions: int = 8,
            autoscaler: Any = None) -> Harness:
    s: VeltrixConfig = settings("until=forever", "progress_interval_s=0.001",
                                "topology.restart_backoff_s=1",
                                "topology.restart_backoff_max_s=8", *overrides)
    pool, claims, clock, metrics = FakePool(), FakeClaims(), Clock(), FakeMetrics()
    h = Harness(None, pool, claims, clock, metrics, count=partitions)  # type: ignore[arg-type]

    async def count() -> int:
        return h.count

    h.own = Ownership(s, pool, claims, count, metrics, clock=clock)
    if autoscaler is not None:
        h.own.autoscaler = autoscaler
    return h


