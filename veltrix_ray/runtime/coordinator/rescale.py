"""The make-before-break rescale: a pure plan of who keeps, loses and gains which partitions,
and its executor (new workers placed and connected before any partition moves; then each
old owner gives up what it loses, after committing its batch in flight, and the new owners
claim those partitions under new epochs)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from veltrix_ray.errors import VeltrixError
from veltrix_ray.runtime.assignment import assign, moved
from veltrix_ray.runtime.coordinator.pool import WorkerGone
from veltrix_ray.runtime.coordinator.supervision import Slot

if TYPE_CHECKING:
    from veltrix_ray.runtime.coordinator.core import Ownership

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """From the live sets `before` (survivors first) to `after`: set i of `after` continues
    set i of `before`; the sets of `before` past `after`'s end retire."""

    before: list[list[int]]
    after: list[list[int]]

    @property
    def fresh(self) -> int:
        """New workers to make first."""
        return max(0, len(self.after) - len(self.before))

    def retires(self, i: int) -> bool:
        return i >= len(self.after)

    def lose(self, i: int) -> list[int]:
        keep = self.after[i] if i < len(self.after) else []
        return [p for p in self.before[i] if p not in keep]

    def gain(self, i: int) -> list[int]:
        had = self.before[i] if i < len(self.before) else []
        return [p for p in self.after[i] if p not in had]

    @property
    def moved(self) -> int:
        return moved(self.before, self.after)


def by_retirement(live: list[Slot]) -> list[Slot]:
    """Survivors first, retirees last: the slots on the nodes with the fewest slots go first
    (so that their nodes empty and the cluster can remove them); among equals, the newest."""
    per_node: dict[str | None, int] = {}
    for slot in live:
        per_node[slot.node] = per_node.get(slot.node, 0) + 1
    return sorted(live, key=lambda slot: (-per_node[slot.node], slot.index))


def plan(live: list[Slot], partitions: int, workers: int) -> tuple[list[Slot], Plan]:
    """The live slots in plan order, and the plan to `workers` sets of `partitions`."""
    ordered = by_retirement(live)
    before = [list(slot.partitions) for slot in ordered]
    return ordered, Plan(before, assign(range(partitions), workers, previous=before))


async def execute(own: Ownership, live: list[Slot], move: Plan) -> None:
    """Carry the plan out over the pool. A new worker that cannot be placed (or fails
    before) undoes the make step: nothing moved, the run goes on at its size."""
    fresh = [own.new_slot([]) for _ in range(move.fresh)]
    try:
        for slot in fresh:
            await own.start(slot)
        await _placed(own, fresh)
    except BaseException:
        for slot in fresh:
            if slot.worker is not None:
                await own.retire(slot)
        own.slots = [slot for slot in own.slots if not slot.retiring]
        own.target = len(live)
        raise
    # break: retirees stop, the others give up what they lose
    for i, slot in enumerate(live):
        lose = move.lose(i)
        if move.retires(i):
            await own.retire(slot)
        elif lose and slot.restart_at is not None:  # restarts with what it keeps
            slot.partitions = [p for p in slot.partitions if p not in lose]
        elif lose:
            assert slot.worker is not None
            own.ledger.bank_report(await own.pool.release(slot.worker, lose))
            slot.partitions = [p for p in slot.partitions if p not in lose]
        if lose:
            own.ledger.event("released", slot.index, lose)
    # move: claim under new epochs, hand to the (new) owners
    for i, (slot, target) in enumerate(zip(live + fresh, move.after, strict=False)):
        gain = move.gain(i)
        if gain and slot.restart_at is not None:
            slot.partitions = sorted(target)
        elif gain:
            await _hand(own, slot, gain, target)
    own.slots = [slot for slot in own.slots if not slot.retiring]


async def _hand(own: Ownership, slot: Slot, gain: list[int], target: list[int]) -> None:
    claims = await own.claim(gain)
    assert slot.worker is not None
    try:
        await own.pool.acquire(slot.worker, claims, own.ledger.stopped_of(gain))
    except WorkerGone as exc:
        await own.retire(slot)
        if own.stopping:  # stopped meanwhile: no new worker
            return
        log.warning("worker %d could not take partitions %s (%s); a new worker takes its "
                    "whole set", slot.index, gain, exc)
        await own.start(own.new_slot(target))
        return
    slot.partitions = sorted(target)
    own.ledger.event("acquired", slot.index, gain)


async def _placed(own: Ownership, slots: list[Slot]) -> None:
    """Until each new worker is placed and connected to Kafka (on an autoscaling cluster a
    new node boots first), within topology.place_timeout_s."""
    topo = own.settings.topology
    for slot in slots:
        if slot.placing is None:  # failed first (supervision saw it)
            continue
        try:
            node: Any = await asyncio.wait_for(asyncio.shield(slot.placing),
                                               topo.place_timeout_s)
        except asyncio.TimeoutError as exc:
            raise VeltrixError(
                f"rescale: worker {slot.index} was not placed within "
                f"topology.place_timeout_s={topo.place_timeout_s:g}s (no node with "
                f"{topo.num_cpus} CPU and {topo.memory_mb} MiB free?); no partition moved. "
                "Add nodes or lower topology.num_cpus / memory_mb.") from exc
        except WorkerGone:  # failed first: taking partitions fails, and it is replaced
            node = None
        own.placed(slot, node)
