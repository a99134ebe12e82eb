"""The WorkerPool port: what the coordinator asks of the workers' runtime. One adapter runs
them as Ray actors (raypool.py); tests use an in-memory fake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from veltrix_ray.contracts import Claim
from veltrix_ray.errors import VeltrixError
from veltrix_ray.runtime.coordinator.health import Failure
from veltrix_ray.runtime.reports import PartitionReport, WorkerReport


class WorkerGone(VeltrixError):
    """The worker ended, or failed, before it answered; its run's outcome says why."""


@dataclass(eq=False)
class Worker:
    """A worker the pool created; its run is under way."""

    name: str
    slot: int
    handle: Any = None  # the adapter's own (Ray: the actor and its run and ready refs)


@dataclass(frozen=True)
class Fatal:
    """A failure that ends the run: its error class's name and message."""

    kind: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """How a worker's run ended: its final report, or a failure to restart after, or one
    that ends the run. `fenced`: a newer owner epoch refused its commit."""

    report: WorkerReport | None = None
    failure: Failure | None = None
    fatal: Fatal | None = None
    fenced: bool = False


class WorkerPool(Protocol):
    async def create(self, name: str, slot: int, partitions: list[int],
                     claims: dict[int, Claim], stopped: dict[int, str]) -> Worker:
        """Start a worker; without claims it connects and waits for `acquire`."""

    async def ready(self, worker: Worker) -> str | None:
        """Once the worker can take partitions: the node it runs on. WorkerGone if it
        failed first."""

    async def acquire(self, worker: Worker, claims: dict[int, Claim],
                      stopped: dict[int, str]) -> None:
        """Hand over partitions claimed under new epochs (`stopped` ones stay stopped)."""

    async def release(self, worker: Worker, partitions: list[int]
                      ) -> dict[int, PartitionReport]:
        """After its batch in flight commits, the worker gives `partitions` up; their final
        counters."""

    async def stop(self, worker: Worker) -> None:
        """Ask the worker to finish its batch in flight and end (a gone one: nothing)."""

    def kill(self, worker: Worker) -> None:
        """End its process now (after it ended or was stopped: frees its resources)."""

    def ended(self, workers: list[Worker]) -> list[Worker]:
        """Those whose run has ended (without waiting)."""

    async def outcome(self, worker: Worker) -> Outcome:
        """How the run of an ended (or stopping) worker ended."""

    async def poll(self, worker: Worker) -> WorkerReport | None:
        """The worker's latest progress; None when it does not answer in time."""
