"""The coordinator's slots and their workers: start (claim, then a new worker or the
driver's), retire, and the claims that name the lock they wait for."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Claim, Totals
from veltrix_ray.runtime.coordinator.health import SlotHealth
from veltrix_ray.runtime.coordinator.ledger import Ledger
from veltrix_ray.runtime.coordinator.names import Names
from veltrix_ray.runtime.coordinator.pool import Worker, WorkerGone, WorkerPool
from veltrix_ray.runtime.coordinator.supervision import Slot
from veltrix_ray.runtime.lockwait import naming_the_wait

log = logging.getLogger(__name__)
CLAIM_SLOW_S = 2.0  # a claim slower than this: ask PostgreSQL who it waits for


class Claims(Protocol):
    """The sink's side the coordinator uses (blocking: called in threads)."""

    def claim(self, partitions: list[int]) -> dict[int, Claim]: ...

    def totals(self) -> dict[int, Totals]: ...

    def blockers(self) -> str | None: ...


class Workers:
    """Ownership's half that starts and retires workers (the state is Ownership's)."""

    settings: VeltrixConfig
    pool: WorkerPool
    store: Claims
    ledger: Ledger
    names: Names
    slots: list[Slot]
    waiting: str | None
    _first: list[Worker | None]

    # -- slots and their workers -----------------------------------------------------------

    def slot(self, index: int, partitions: list[int]) -> Slot:
        health = SlotHealth(self.settings.topology, self.settings.until == "forever")
        return Slot(index, sorted(partitions), health)

    def new_slot(self, partitions: list[int]) -> Slot:
        slot = self.slot(max((s.index for s in self.slots), default=-1) + 1, partitions)
        self.slots.append(slot)
        return slot

    async def start(self, slot: Slot) -> None:
        claims = await self.claim(slot.partitions)
        if slot.incarnation:  # after a fault: what the lost incarnation committed, exactly
            self.ledger.rebank(await asyncio.to_thread(self.store.totals), slot.partitions)
        slot.last = None
        slot.done = False
        stopped = self.ledger.stopped_of(slot.partitions)
        first = self._first[slot.index] if slot.index < len(self._first) else None
        if first is not None and not slot.incarnation and claims:
            self._first[slot.index] = None
            self._started(slot, first)
            try:
                assert slot.placing is not None
                await asyncio.shield(slot.placing)
                await self.pool.acquire(first, claims, stopped)
                self.ledger.event("acquired", slot.index, slot.partitions)
            except WorkerGone as exc:  # its run's outcome decides (supervision)
                log.info("worker %d could not take its partitions: %s", slot.index, exc)
            return
        worker = await self.pool.create(self.names.next(slot.index), slot.index,
                                        slot.partitions, claims, stopped)
        self._started(slot, worker)

    def _started(self, slot: Slot, worker: Worker) -> None:
        slot.worker = worker
        slot.node = None
        slot.placing = asyncio.ensure_future(self.pool.ready(worker))
        # its failure shows in its run's outcome; nobody need ask the placing for it
        slot.placing.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.ledger.event("started", slot.index, slot.partitions)

    def placed(self, slot: Slot, node: str | None) -> None:
        slot.node = node
        self.ledger.event("ready", slot.index, [], node=node)

    async def _drop_first(self) -> None:
        """Stops the driver's workers left without a partition set (fewer partitions than
        workers)."""
        left, self._first = [w for w in self._first if w is not None], []
        for worker in left:
            await self.pool.stop(worker)
            await self.pool.outcome(worker)
            self.pool.kill(worker)

    async def retire(self, slot: Slot) -> None:
        slot.retiring = True
        slot.restart_at = None
        final = slot.last
        if slot.worker is not None:
            await self.pool.stop(slot.worker)
            final = (await self.pool.outcome(slot.worker)).report or slot.last
            self.pool.kill(slot.worker)  # its process ends now: its CPU (maybe node) is free
        if final is not None:
            self.ledger.bank_report(final.partitions)
            self.ledger.retired.append(final)
        slot.done = True

    async def claim(self, partitions: list[int]) -> dict[int, Claim]:
        """Claim in a thread; while the claim waits for a lock, say who holds it."""
        if not partitions:
            return {}

        def say(held: str | None) -> None:
            waiting = f"claiming partitions {partitions} waits for {held}" if held else None
            if waiting and waiting != self.waiting:
                log.warning("%s", waiting)
            self.waiting = waiting

        task = asyncio.ensure_future(asyncio.to_thread(self.store.claim, partitions))
        return await naming_the_wait(task, CLAIM_SLOW_S, self.store.blockers, say)

