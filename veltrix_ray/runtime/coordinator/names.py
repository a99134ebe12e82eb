"""The names of a run's actors, and how many workers it starts with (no Ray)."""

from __future__ import annotations

from veltrix_ray.config.schema import VeltrixConfig

NAMESPACE = "veltrix"


def coordinator_name(pipeline: str) -> str:
    return f"veltrix:{pipeline}"


def worker_name(pipeline: str, slot: int, seq: int) -> str:
    """`seq`: the how-manieth actor of partition set `slot` in this run."""
    return f"{coordinator_name(pipeline)}:w{slot}.{seq}"


def initial_workers(settings: VeltrixConfig) -> int:
    """The number of workers a run starts with: topology.workers, within the autoscaler's
    bounds when it is on."""
    topo = settings.topology
    if not topo.autoscale.enabled:
        return topo.workers
    return min(max(topo.workers, topo.autoscale.min_workers), topo.autoscale.max_workers)


class Names:
    """Worker names of one run: restarts, and a slot index used again after a scale-down,
    take the next number, so a name is never used twice (Ray may not have removed the
    actor that held it yet)."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self._next: dict[int, int] = {}

    def next(self, slot: int) -> str:
        seq = self._next.get(slot, 0)
        self._next[slot] = seq + 1
        return worker_name(self.pipeline, slot, seq)
