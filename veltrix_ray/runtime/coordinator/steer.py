"""Between supervision rounds: learn where workers run, repair orphaned partitions, look for
new partitions, let the autoscaler decide, and stop the partitions a recurring crash
stopped. Each ownership change is a rescale in the background (supervision goes on while it
places workers)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from veltrix_ray.runtime.coordinator.health import Restart, stopped_message
from veltrix_ray.runtime.coordinator.pool import WorkerGone
from veltrix_ray.runtime.coordinator.supervision import Slot, Tick

if TYPE_CHECKING:
    from veltrix_ray.runtime.coordinator.core import Ownership

log = logging.getLogger(__name__)


class Steer:
    def __init__(self, own: Ownership) -> None:
        self.own = own
        self.scaling: asyncio.Future[Any] | None = None  # a rescale the coordinator started

    @property
    def busy(self) -> bool:
        return self.scaling is not None

    def reap(self) -> None:
        """The background rescale, once it ended."""
        if self.scaling is not None and self.scaling.done():
            failed = self.scaling.exception()
            self.scaling = None
            if failed is not None and not self.own.stopping:
                log.error("rescale failed: %s", failed)

    def _rescale(self, workers: int, why: str) -> None:
        self.scaling = asyncio.ensure_future(self.own.rescale(workers, why))

    async def round(self, tick: Tick) -> None:
        own = self.own
        for slot in own.slots:
            if slot.node is None and slot.placing is not None and slot.placing.done():
                try:
                    own.placed(slot, slot.placing.result())
                except WorkerGone:
                    slot.placing = None
        if own.stopping or own.rescaling.locked() or self.scaling is not None:
            return
        if tick.orphans:  # a rescale interrupted halfway (a worker or a service lost mid-move)
            log.warning("partitions %s have no owner: assigning them again", tick.orphans)
            self._rescale(own.target, "converge")
            return
        if tick.discover:
            try:
                count = await own.partitions()
            except Exception as exc:  # noqa: BLE001 - Kafka away: the workers wait, so do we
                log.info("looking for new partitions: %s: %s", type(exc).__name__, exc)
                return
            if count > own.partition_count:
                log.warning("topic %s has %d partitions now (was %d): assigning the new ones",
                            own.settings.kafka.topic, count, own.partition_count)
                self._rescale(own.target, "new partitions")
                return
        self._autoscale()

    def _autoscale(self) -> None:
        own = self.own
        if own.autoscaler is None or not own.autoscaler.due():
            return
        if own.settings.until == "drained" and any(slot.done for slot in own.slots):
            return  # finishing: workers end as their partitions drain, none is missing
        live = [slot for slot in own.slots if not slot.done and not slot.retiring]
        owned = {p for slot in live if slot.running for p in slot.partitions}
        decision = own.autoscaler.decide(own.progress(), len(live), owned)
        if decision.target != len(live):
            self._rescale(decision.target, decision.code)

    def stop_partitions(self, slot: Slot, reason: str, verdict: Restart) -> None:
        """The partitions a crash keeps recurring on stop (their next owner gets them
        stopped); the rest of the set restarts."""
        window = self.own.settings.topology.restart_window_s
        for p, span in verdict.stop.items():
            why = stopped_message(f"worker {slot.index}", p, span, reason, verdict.repeats,
                                  window)
            self.own.ledger.stop(p, why, "WorkerCrashed")
            log.error("%s", why)
