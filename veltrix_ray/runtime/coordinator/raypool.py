"""The WorkerPool on Ray: each worker a PartitionWorker actor. Ray's exceptions stop here,
turned into the port's Outcome by their type."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
from ray.exceptions import (
    ActorAlreadyExistsError,
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    RayError,
    RayTaskError,
)

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Claim, written
from veltrix_ray.errors import FencedError, RetriableError, VeltrixError, WorkerCrashed
from veltrix_ray.runtime.budget import Budget
from veltrix_ray.runtime.coordinator.health import Death, Failure
from veltrix_ray.runtime.coordinator.names import NAMESPACE, initial_workers, worker_name
from veltrix_ray.runtime.coordinator.pool import Fatal, Outcome, Worker, WorkerGone
from veltrix_ray.runtime.reports import PartitionReport, WorkerReport
from veltrix_ray.runtime.worker import PartitionWorker, WorkerSpec
from veltrix_ray.transform import output_schema

log = logging.getLogger(__name__)
POLL_TIMEOUT_S = 5.0  # a progress answer slower than this is skipped this round
FREE_NAME_TIMEOUT_S = 10.0


@dataclass(eq=False)
class _Handle:
    actor: Any
    run: Any  # ObjectRef of its run(): its final report, or its failure
    ready: Any  # ObjectRef of its ready()


def worker_actor(settings: VeltrixConfig, name: str, slot: int, budget: Budget,
                 schema: pa.Schema, partitions: list[int], claims: dict[int, Claim],
                 stopped: dict[int, str]) -> Any:
    """A PartitionWorker actor for partition set `slot` (ActorAlreadyExistsError when the
    name is held)."""
    s = settings
    spec = WorkerSpec(s, name, partitions, claims, budget, written(schema), stopped, slot)
    options: dict[str, Any] = {
        "name": name, "namespace": NAMESPACE, "num_cpus": s.topology.num_cpus,
        "memory": s.topology.memory_mb * 2**20, "max_restarts": 0, "max_concurrency": 8,
    }
    if s.topology.placement == "SPREAD":
        options["scheduling_strategy"] = "SPREAD"
    return ray.remote(PartitionWorker).options(**options).remote(spec)


def first_workers(settings: VeltrixConfig) -> list[Any]:
    """The run's first workers (slot i named .0), created by the driver beside the
    Coordinator, so that their processes start (and import) while the Coordinator's starts
    and sets up; it hands them their partitions once claimed. A name still held by an
    earlier run's worker: none for that slot (the Coordinator starts one under the next)."""
    budget = Budget.derive(settings.topology.memory_mb, settings.topology.memory,
                           settings.pipeline.max_record_bytes)
    schema = output_schema(settings)
    first = []
    for i in range(initial_workers(settings)):
        name = worker_name(settings.pipeline.name, i, 0)
        try:
            first.append(worker_actor(settings, name, i, budget, schema, [], {}, {}))
        except ActorAlreadyExistsError:
            first.append(None)
    return first


class RayPool:
    def __init__(self, settings: VeltrixConfig, budget: Budget, schema: pa.Schema) -> None:
        self.settings = settings
        self.budget = budget
        self.schema = schema

    def adopt(self, actor: Any, name: str, slot: int) -> Worker:
        """A worker created elsewhere (the driver's first ones)."""
        return Worker(name, slot, _Handle(actor, actor.run.remote(), actor.ready.remote()))

    async def create(self, name: str, slot: int, partitions: list[int],
                     claims: dict[int, Claim], stopped: dict[int, str]) -> Worker:
        args = (self.settings, name, slot, self.budget, self.schema, partitions, claims,
                stopped)
        try:
            actor = worker_actor(*args)
        except ActorAlreadyExistsError:
            await _free_name(name)
            actor = worker_actor(*args)
        return self.adopt(actor, name, slot)

    async def ready(self, worker: Worker) -> str | None:
        try:
            info = await worker.handle.ready
        except RayError as exc:
            raise WorkerGone(f"{worker.name}: {str(exc).splitlines()[0]}") from exc
        if info.get("status") != "running":
            raise WorkerGone(f"{worker.name} is {info.get('status')}")
        return info.get("node")  # type: ignore[no-any-return]

    async def acquire(self, worker: Worker, claims: dict[int, Claim],
                      stopped: dict[int, str]) -> None:
        try:
            await worker.handle.actor.acquire.remote(claims, stopped)
        except RayError as exc:
            raise WorkerGone(f"{worker.name}: {str(exc).splitlines()[0]}") from exc

    async def release(self, worker: Worker, partitions: list[int]
                      ) -> dict[int, PartitionReport]:
        try:
            return dict(await worker.handle.actor.release.remote(partitions))
        except RayError as exc:
            raise WorkerGone(f"{worker.name}: {str(exc).splitlines()[0]}") from exc

    async def stop(self, worker: Worker) -> None:
        try:
            await worker.handle.actor.stop.remote()
        except RayError:  # gone already: its run's outcome says how it ended
            pass

    def kill(self, worker: Worker) -> None:
        ray.kill(worker.handle.actor)

    def ended(self, workers: list[Worker]) -> list[Worker]:
        if not workers:
            return []
        refs = {w.handle.run: w for w in workers}
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        return [refs[ref] for ref in done]

    async def outcome(self, worker: Worker) -> Outcome:
        try:
            return Outcome(report=await worker.handle.run)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            return Outcome(failure=Failure(Death.LOST, f"died ({str(exc).splitlines()[0]})"))
        except RayTaskError as exc:
            return classify(exc.cause if isinstance(exc.cause, BaseException) else exc,
                            worker.slot)

    async def poll(self, worker: Worker) -> WorkerReport | None:
        """Never cancelled when slow: cancelling a Ray call on an async actor can cancel the
        actor's running tasks."""
        call = asyncio.ensure_future(worker.handle.actor.progress.remote(False))
        done, _ = await asyncio.wait({call}, timeout=POLL_TIMEOUT_S)
        if not done:
            return None
        try:
            report: WorkerReport = call.result()
            return report
        except RayError:  # a dying worker: supervision sees it through its run
            return None


def classify(cause: BaseException, slot: int) -> Outcome:
    """A worker's failure by the type of its exception."""
    fenced = isinstance(cause, FencedError)
    if isinstance(cause, WorkerCrashed):
        return Outcome(failure=Failure(Death.CRASH, f"failed: {cause}", cause.cause,
                                       cause.where))
    if isinstance(cause, RetriableError):  # a service away: not the worker's fault
        return Outcome(failure=Failure(Death.LOST, f"failed: {cause}"))
    if isinstance(cause, VeltrixError):
        return Outcome(fatal=Fatal(type(cause).__name__, str(cause)), fenced=fenced)
    return Outcome(fatal=Fatal("VeltrixError", f"worker {slot} failed: "
                               f"{type(cause).__name__}: {cause}"))


async def _free_name(name: str) -> None:
    """Stops the actor holding `name`: a worker of an earlier run of this pipeline that Ray
    has not removed yet (its owner is gone). It cannot commit any more: the partitions were
    claimed again under newer epochs."""
    try:
        old = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return
    log.warning("%s still held by a worker of an earlier run of this pipeline; stopping it",
                name)
    ray.kill(old, no_restart=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FREE_NAME_TIMEOUT_S
    while loop.time() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        await asyncio.sleep(0.05)
    raise VeltrixError(f"the Ray actor name {name} is still taken {FREE_NAME_TIMEOUT_S:g}s "
                       f"after its holder was stopped; see `ray list actors --filter "
                       f"name={name}`")
