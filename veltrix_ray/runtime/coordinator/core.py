"""The coordinator's logic over the WorkerPool port, a store of claims and an injected clock:
start the slots, supervise them (a tick per round), rescale, stop. No Ray here: actor.py
wires it to Ray, the unit tests to fakes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.errors import ConfigError, VeltrixError
from veltrix_ray.runtime.assignment import assign
from veltrix_ray.runtime.coordinator.health import GiveUp, give_up_message
from veltrix_ray.runtime.coordinator.ledger import Ledger
from veltrix_ray.runtime.coordinator.names import Names, initial_workers
from veltrix_ray.runtime.coordinator.pool import Worker, WorkerPool
from veltrix_ray.runtime.coordinator.rescale import execute, plan
from veltrix_ray.runtime.coordinator.steer import Steer
from veltrix_ray.runtime.coordinator.supervision import Slot, Supervision
from veltrix_ray.runtime.coordinator.workers import Claims, Workers
from veltrix_ray.runtime.scaler import Autoscaler

log = logging.getLogger(__name__)


class Metrics(Protocol):
    def tick(self, progress: dict[str, Any], *, live: int, target: int) -> None: ...

    def restarted(self) -> None: ...

    def fenced_commit(self) -> None: ...

    def rescaled(self) -> None: ...


class Ownership(Workers):
    def __init__(self, settings: VeltrixConfig, pool: WorkerPool, store: Claims,
                 partitions: Callable[[], Awaitable[int]], metrics: Metrics, *,
                 clock: Callable[[], float] = time.monotonic,
                 control: Callable[[Ownership], Awaitable[None]] | None = None,
                 request_resources: Callable[[int], None] = lambda workers: None) -> None:
        s = settings
        self.settings = settings
        self.pool = pool
        self.store = store
        self.partitions = partitions  # the topic's partition count, asked of Kafka
        self.metrics = metrics
        self.clock = clock
        self.control = control  # the control plane's heartbeat and requests, per round
        self.request_resources = request_resources
        self.ledger = Ledger(s.pipeline.name, s.kafka.topic)
        self.names = Names(s.pipeline.name)
        self.slots: list[Slot] = []
        self.supervision = Supervision(s.topology, clock())
        auto = s.topology.autoscale
        self.autoscaler = Autoscaler(auto, s.pipeline.name, clock) if auto.enabled else None
        self.steer = Steer(self)
        self.target = initial_workers(s)  # the size asked for (config, rescale)
        self.partition_count = 0
        self.waiting: str | None = None  # a claim waiting for another session's lock
        self.stopping = False
        self.rescaling = asyncio.Lock()
        self.started = asyncio.Event()  # the first workers have their partitions (or failed)
        self._first: list[Worker | None] = []  # the driver's workers, until each takes a set
        self._ticked = -float("inf")  # clock time of the last metrics tick

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, first: list[Worker | None], partitions: int) -> None:
        """`first`: workers the driver created (slot i's named .0), without partitions."""
        self._first = list(first)
        for i in range(len(first)):  # .0 is the driver's (or an earlier run's leftover)
            self.names.next(i)
        self.partition_count = partitions
        self.slots = [self.slot(i, ps) for i, ps in enumerate(assign(range(partitions),
                                                                     self.target))]
        try:
            for slot in self.slots:
                await self.start(slot)
            await self._drop_first()
        finally:
            self.started.set()  # a rescale asked for meanwhile goes on from here
        if self.stopping:  # asked to stop during the start: the late starters too
            await self.stop()
        while await self.step():  # noqa: ASYNC110 - a periodic tick, not a wait for one event
            await asyncio.sleep(min(self.settings.progress_interval_s, 0.25))
        self.ledger.finished = self.ledger.wall()
        self.tick_metrics(force=True)

    async def step(self) -> bool:
        """One supervision round; False once the run is over."""
        if self.control is not None:
            await self.control(self)
        self.steer.reap()
        tick = self.supervision.tick(self.clock(), self.slots, self.partition_count,
                                     self.rescaling.locked() or self.steer.busy,
                                     self.stopping)
        if tick.twice:
            log.error("partitions %s have two owners; the newer epoch fences the older",
                      tick.twice)
        for slot in tick.restart:
            slot.restart_at = None
            if self.stopping:  # no new worker the stop would miss
                slot.done = True
                continue
            slot.incarnation += 1
            await self.start(slot)
        if tick.over:
            return False
        ended = self.pool.ended([s.worker for s in self.slots if s.running and s.worker])
        for worker in ended:
            await self.finished(next(s for s in self.slots if s.worker is worker))
        if not ended:
            await self.poll()
            self.tick_metrics()
            await self.steer.round(tick)
        return True

    async def stop(self) -> None:
        self.stopping = True
        for slot in self.slots:
            if slot.worker is not None and not slot.done:
                await self.pool.stop(slot.worker)

    async def rescale(self, workers: int, why: str = "manual") -> dict[str, Any]:
        """Move to `workers` partition sets, make before break (rescale.py). Partitions
        added to the topic are picked up too. `why` "manual" (an operator) pauses the
        autoscaler."""
        if workers < 1:
            raise ConfigError("rescale needs at least 1 worker (topology.workers)")
        await self.started.wait()
        async with self.rescaling:
            if self.stopping:
                raise VeltrixError("the pipeline is stopping; it cannot be rescaled")
            try:
                return await self._move(workers, why)
            finally:
                if self.stopping:  # a stop came during the move: what it started stops too
                    await self.stop()

    async def _move(self, workers: int, why: str) -> dict[str, Any]:
        self.partition_count = count = await self.partitions()
        live = [slot for slot in self.slots if not slot.done and not slot.retiring]
        ordered, move = plan(live, count, workers)
        if why == "manual" and self.autoscaler is not None:
            self.autoscaler.manual(len(live), len(move.after))
        self.target = len(move.after)
        if len(move.after) > len(live):
            self.request_resources(len(move.after))
        await execute(self, ordered, move)
        if len(move.after) < len(live):
            self.request_resources(len(move.after))
        record = {"workers": len(move.after), "moved": move.moved, "sets": move.after,
                  "why": why}
        self.ledger.moves.append(record)
        self.metrics.rescaled()
        log.info("rescaled to %d workers (%s), %d partitions moved", len(move.after), why,
                 move.moved)
        return record

    async def finished(self, slot: Slot) -> None:
        """A worker's run ended: done, or a failure. Lost and crashed workers are restarted
        under a new owner epoch as the slot's health says; anything else ends the run with
        the worker's message."""
        assert slot.worker is not None
        out = await self.pool.outcome(slot.worker)
        if out.fenced:
            self.metrics.fenced_commit()
        if out.report is not None or out.fatal is not None or self.stopping:
            if out.report is not None:
                slot.last = out.report
                self.ledger.note_stopped(out.report.partitions)
            slot.done = True
            if out.fatal is not None:
                self.ledger.errors.append((out.fatal.kind, out.fatal.message))
                await self.stop()
            return
        assert out.failure is not None
        failure = out.failure
        if slot.last is not None:
            self.ledger.bank_report(slot.last.partitions)
        slot.last = None
        topo = self.settings.topology
        verdict = slot.health.failed(failure, self.clock())
        slot.restarts += 1
        self.metrics.restarted()
        who = f"worker {slot.index} (partitions {slot.partitions})"
        if isinstance(verdict, GiveUp):
            self.ledger.errors.append(("VeltrixError", give_up_message(
                who, failure.reason, verdict.repeats, topo.restart_window_s)))
            slot.done = True
            await self.stop()
            return
        self.steer.stop_partitions(slot, failure.reason, verdict)
        log.warning("%s %s; restarting it in %.1fs under a new owner epoch (restart %d)", who,
                    failure.reason, verdict.delay, slot.restarts)
        slot.worker = None
        slot.restart_at = self.clock() + verdict.delay

    async def poll(self) -> None:
        """Latest progress of each live worker."""
        slots = [s for s in self.slots if s.live and s.worker is not None]
        reports = await asyncio.gather(*(self.pool.poll(s.worker) for s in slots
                                         if s.worker is not None))
        for slot, report in zip(slots, reports, strict=True):
            if report is not None and slot.live:
                slot.last = report
                self.ledger.note_stopped(report.partitions)

    # -- reporting -------------------------------------------------------------------------

    def tick_metrics(self, force: bool = False) -> None:
        """Metrics from the latest progress, at most once per progress_interval_s."""
        now = self.clock()
        if not force and now - self._ticked < min(self.settings.progress_interval_s, 5.0):
            return
        self._ticked = now
        report = self.progress()
        self.metrics.tick(report, live=report["live_workers"], target=report["target_workers"])

    def worker_pids(self) -> dict[str, int]:
        return {s.last.worker: s.last.pid for s in self.slots
                if s.last is not None and not s.done}

    def progress(self) -> dict[str, Any]:
        return self.ledger.progress(
            self.slots, waiting=self.waiting,
            live_workers=sum(1 for s in self.slots if s.running),
            target_workers=self.target,
            autoscale=self.autoscaler.state() if self.autoscaler else None)

    def summary(self) -> dict[str, Any]:
        return self.ledger.summary(self.progress())
