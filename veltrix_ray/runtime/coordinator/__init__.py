"""The coordinator: one per pipeline run (a Ray actor named after it). It discovers the
partitions, assigns them to workers, supervises and rescales them, and reports.

- names.py: the actors' names; pool.py: the WorkerPool port, raypool.py its Ray adapter;
- health.py: what a worker's failure means (restart after a backoff, stop partitions);
- supervision.py: the slots and the supervision tick (what is due now);
- rescale.py: the make-before-break rescale as a pure plan, mover.py its executor;
- ledger.py: the counters (banked, rebanked from PostgreSQL), progress and summary;
- core.py: the coordinator's logic over the port; actor.py: the thin Ray actor."""

from __future__ import annotations

from typing import Any

from veltrix_ray.runtime.coordinator.names import (
    NAMESPACE,
    coordinator_name,
    initial_workers,
    worker_name,
)

__all__ = ["NAMESPACE", "Coordinator", "coordinator_name", "first_workers", "initial_workers",
           "worker_name"]


def __getattr__(name: str) -> Any:
    """The Ray side on first use: its logic and its tests import no Ray."""
    if name == "Coordinator":
        from veltrix_ray.runtime.coordinator.actor import Coordinator
        return Coordinator
    if name == "first_workers":
        from veltrix_ray.runtime.coordinator.raypool import first_workers
        return first_workers
    raise AttributeError(name)
