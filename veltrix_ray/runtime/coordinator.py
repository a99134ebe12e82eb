"""Coordinator: discovers partitions, assigns them to workers, supervises and reports.

One per pipeline (a Ray actor named after it). A worker that dies is replaced, its
partitions claimed again under a new owner epoch, so the dead one can never commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
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
from veltrix_ray.contracts import Claim, Totals, written
from veltrix_ray.control.steering import Steering
from veltrix_ray.errors import (
    ConfigError,
    FencedError,
    RetriableError,
    VeltrixError,
    WorkerCrashed,
)
from veltrix_ray.runtime.assignment import assign, moved
from veltrix_ray.runtime.budget import Budget
from veltrix_ray.runtime.metrics import PipelineMetrics
from veltrix_ray.runtime.scaler import Autoscaler
from veltrix_ray.runtime.supervision import (
    Death,
    Failure,
    GiveUp,
    SlotHealth,
    give_up_message,
    stopped_message,
)
from veltrix_ray.runtime.worker import PartitionWorker, WorkerSpec
from veltrix_ray.sink import make_sink
from veltrix_ray.source.admin import partition_count
from veltrix_ray.source.kafka import client_options
from veltrix_ray.transform import output_schema

log = logging.getLogger(__name__)
NAMESPACE = "veltrix"
CLAIM_SLOW_S = 2.0  # a claim slower than this: ask PostgreSQL who it waits for


def coordinator_name(pipeline: str) -> str:
    return f"veltrix:{pipeline}"


def initial_workers(settings: VeltrixConfig) -> int:
    """The number of workers a run starts with: topology.workers, within the autoscaler's
    bounds when it is on."""
    topo = settings.topology
    if not topo.autoscale.enabled:
        return topo.workers
    return min(max(topo.workers, topo.autoscale.min_workers), topo.autoscale.max_workers)


def worker_name(pipeline: str, slot: int, seq: int) -> str:
    """`seq`: the how-manieth actor of partition set `slot` in this run (restarts, and a slot
    index used again after a scale-down, take the next)."""
    return f"{coordinator_name(pipeline)}:w{slot}.{seq}"


def _free_name(name: str, timeout_s: float = 10.0) -> None:
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
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.05)
    raise VeltrixError(f"the Ray actor name {name} is still taken {timeout_s:g}s after its "
                       f"holder was stopped; see `ray list actors --filter name={name}`")


def worker_actor(settings: VeltrixConfig, slot: int, seq: int, budget: Budget,
                 schema: pa.Schema, partitions: list[int] | None = None,
                 claims: dict[int, Claim] | None = None,
                 stopped: dict[int, str] | None = None) -> Any:
    """A PartitionWorker actor for partition set `slot`; without partitions it starts
    connected and waits for `acquire`."""
    s = settings
    name = worker_name(s.pipeline.name, slot, seq)
    spec = WorkerSpec(s, name, partitions or [], claims or {}, budget, written(schema),
                      stopped or {}, slot)
    options: dict[str, Any] = {
        "name": name, "namespace": NAMESPACE, "num_cpus": s.topology.num_cpus,
        "memory": s.topology.memory_mb * 2**20, "max_restarts": 0, "max_concurrency": 8,
    }
    if s.topology.placement == "SPREAD":
        options["scheduling_strategy"] = "SPREAD"
    actor = ray.remote(PartitionWorker).options(**options)
    try:
        return actor.remote(spec)
    except ActorAlreadyExistsError:
        _free_name(name)
        return actor.remote(spec)


def first_workers(settings: VeltrixConfig) -> list[Any]:
    """The run's first workers, created by the driver beside the Coordinator, so that their
    processes start (and import) while the Coordinator's starts and sets up; it hands them
    their partitions once claimed."""
    budget = Budget.derive(settings.topology.memory_mb, settings.topology.memory)
    schema = output_schema(settings)
    return [worker_actor(settings, i, 0, budget, schema)
            for i in range(initial_workers(settings))]


@dataclass
class _Slot:
    """One partition set and its current worker incarnation."""

    index: int
    partitions: list[int]
    health: SlotHealth  # its recent failures: when it comes back, what it stops
    incarnation: int = 0
    restarts: int = 0
    actor: Any = None
    run_ref: Any = None
    last: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    retiring: bool = False  # being stopped by a rescale; the rescale reaps it
    restart_at: float | None = None  # monotonic time of a scheduled restart
    ready_ref: Any = None  # the worker's ready(): where it runs, once connected
    node: str | None = None


class Coordinator:
    def __init__(self, settings: VeltrixConfig) -> None:
        self.settings = settings
        self.slots: list[_Slot] = []
        self.errors: list[tuple[str, str]] = []
        self.started = time.time()
        self.finished: float | None = None
        self.moves: list[dict[str, Any]] = []
        self._stopping = False
        self._sink = make_sink(settings, f"veltrix-ray coordinator {settings.pipeline.name}")
        self._schema: pa.Schema | None = None
        self._budget = Budget.derive(settings.topology.memory_mb, settings.topology.memory)
        # counters per partition committed by workers that no longer own it
        self._banked: dict[int, dict[str, Any]] = {}
        self._retired: list[dict[str, Any]] = []  # final reports of rescaled-away workers
        # the durable per-partition counters in veltrix_offsets, before and after the run
        self._baseline: dict[int, Totals] = {}
        self._final: dict[int, Totals] = {}
        self._rescaling = asyncio.Lock()
        self._started = asyncio.Event()  # the first workers have their partitions (or failed)
        # partitions the dead-letter limit or a recurring crash stopped, and why: no later
        # owner resumes them; the error kind of those a crash stopped
        self._stopped: dict[int, str] = {}
        self._stop_kinds: dict[int, str] = {}
        self.waiting: str | None = None  # a claim waiting for another session's lock
        self.metrics = PipelineMetrics(settings.pipeline.name)
        self._ticked = 0.0  # monotonic time of the last metrics tick
        self._steering: Steering | None = None  # veltrix_control: heartbeat, requests
        auto = settings.topology.autoscale
        self.autoscaler = Autoscaler(auto, settings.pipeline.name) if auto.enabled else None
        self.target = initial_workers(settings)  # the size asked for (config, rescale)
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)  # ownership changes
        self._partition_count = 0
        self._discovered = time.monotonic()
        self._scaling: asyncio.Future[Any] | None = None  # a rescale the coordinator started
        self._converge_at = 0.0  # monotonic: the next repair of orphaned partitions
        # the driver's first workers (actor, run ref, ready ref), until each takes its set
        self._first: list[tuple[Any, Any, Any] | None] = []
        self._seq: dict[int, int] = {}  # per slot index: the next worker actor's name number

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, first: list[Any] | None = None) -> dict[str, Any]:
        """`first`: workers the driver created (first_workers), without partitions yet."""
        s = self.settings
        # connecting to Kafka while the tables are set up
        self._first = [(actor, actor.run.remote(), actor.ready.remote()) for actor in first or ()]
        self._seq = {i: 1 for i in range(len(self._first))}  # the driver named them .0
        count = await self._partitions()
        self._schema = output_schema(s)
        await asyncio.to_thread(self._sink.setup, self._schema)
        self._steering = Steering(s, coordinator_name(s.pipeline.name))
        await asyncio.to_thread(self._steering.setup)
        self._baseline = await asyncio.to_thread(self._sink.totals)
        log.debug("set up %.2fs after start; %d workers from the driver",
                  time.time() - self.started, len(self._first))
        self._partition_count = count
        sets = assign(range(count), self.target)
        self.slots = [self._slot(i, ps) for i, ps in enumerate(sets)]
        try:
            try:
                for slot in self.slots:
                    await self._start(slot)
                await self._drop_first()
            finally:
                self._started.set()  # a rescale asked for meanwhile goes on from here
            if self._stopping:  # asked to stop during the start: the late starters too
                await self.stop()
            await self._supervise()
            self.finished = time.time()
            self._final = await asyncio.to_thread(self._sink.totals)
            self._tick(force=True)
        finally:
            self._sink.close()
            self.finished = self.finished or time.time()
            if self._steering is not None:  # not running from now on, for `status`
                await self._steering.finish(self)
        return self.summary()

    async def _partitions(self) -> int:
        s = self.settings
        count = await partition_count(s.kafka.bootstrap, s.kafka.topic,
                                      options=client_options(s.kafka))
        if count is None:
            raise ConfigError(f"Topic {s.kafka.topic!r} does not exist on {s.kafka.bootstrap}; "
                              "create it (e.g. `veltrix-ray produce --topic ...`) or fix "
                              "kafka.topic.")
        return count

    async def _drop_first(self) -> None:
        """Stops the driver's workers left without a partition set (fewer partitions than
        workers)."""
        left, self._first = [f for f in self._first if f is not None], []
        for actor, run_ref, _ in left:
            try:
                await actor.stop.remote()
                await run_ref
            except (RayError, VeltrixError):
                pass
            ray.kill(actor)

    async def stop(self) -> None:
        self._stopping = True
        for slot in self.slots:
            if slot.actor is not None and not slot.done:
                try:
                    await slot.actor.stop.remote()
                except RayActorError:
                    pass

    async def _start(self, slot: _Slot) -> None:
        s = self.settings
        assert self._schema is not None
        claims = await self._claim(slot.partitions)
        if slot.incarnation:  # after a fault: what the lost incarnation committed, exactly
            totals = await asyncio.to_thread(self._sink.totals)
            for p in slot.partitions:
                if p in totals:
                    self._rebank(p, totals[p])
        slot.last = {}
        slot.done = False
        first = self._first[slot.index] if slot.index < len(self._first) else None
        if first is not None and not slot.incarnation and claims:
            slot.actor, slot.run_ref, slot.ready_ref = first
            self._first[slot.index] = None
            self._event("started", slot, slot.partitions)
            try:
                info = await slot.ready_ref
                if info.get("status") == "running":
                    await slot.actor.acquire.remote(claims, self._stopped_of(slot.partitions))
                    self._event("acquired", slot, slot.partitions)
                    log.debug("worker %d (the driver's) took partitions %s", slot.index,
                              slot.partitions)
            except (RayError, VeltrixError) as exc:  # its run's outcome decides (supervision)
                log.info("worker %d could not take its partitions: %s", slot.index,
                         str(exc).splitlines()[0])
            return
        seq = self._seq.get(slot.index, 0)
        self._seq[slot.index] = seq + 1
        slot.actor = worker_actor(s, slot.index, seq, self._budget, self._schema,
                                  slot.partitions, claims, self._stopped_of(slot.partitions))
        slot.run_ref = slot.actor.run.remote()
        slot.ready_ref = slot.actor.ready.remote()
        self._event("started", slot, slot.partitions)

    # -- rescale ---------------------------------------------------------------------------

    async def _claim(self, partitions: list[int]) -> dict[int, Claim]:
        """Claim in a thread; while the claim waits for a lock, say who holds it."""
        if not partitions:
            return {}
        task = asyncio.ensure_future(asyncio.to_thread(self._sink.claim, partitions))
        while not task.done():
            await asyncio.wait({task}, timeout=CLAIM_SLOW_S)
            if task.done():
                break
            held = await asyncio.to_thread(self._sink.blockers)
            waiting = f"claiming partitions {partitions} waits for {held}" if held else None
            if waiting and waiting != self.waiting:
                log.warning("%s", waiting)
            self.waiting = waiting
        self.waiting = None
        return task.result()

    async def rescale(self, workers: int, why: str = "manual") -> dict[str, Any]:
        """Move to `workers` partition sets, make before break: new workers are placed and
        connected before any partition moves; then each old owner gives up what it loses
        (after committing its batch in flight) and the new owners claim those partitions
        under new epochs. Retirees are chosen node by node, so that whole nodes go idle.
        Partitions added to the topic are picked up too. `why` "manual" (an operator) pauses
        the autoscaler."""
        if workers < 1:
            raise ConfigError("rescale needs at least 1 worker (topology.workers)")
        await self._started.wait()
        async with self._rescaling:
            if self._stopping:
                raise VeltrixError("the pipeline is stopping; it cannot be rescaled")
            try:
                return await self._move(workers, why)
            finally:
                if self._stopping:  # a stop came during the move: what it started stops too
                    await self.stop()

    async def _move(self, workers: int, why: str) -> dict[str, Any]:
        count = await self._partitions()
        self._partition_count = count
        live = self._by_retirement([slot for slot in self.slots
                                    if not slot.done and not slot.retiring])
        before = [slot.partitions for slot in live]
        after = assign(range(count), workers, previous=before)
        if why == "manual" and self.autoscaler is not None:
            self.autoscaler.manual(len(live), len(after))
        self.target = len(after)
        if len(after) > len(live):
            self._request_resources(len(after))
        # 1. make: the new workers, placed and connected, still without partitions
        fresh = [self._new_slot([]) for _ in range(len(after) - len(live))]
        try:
            for slot in fresh:
                await self._start(slot)
            await self._wait_ready(fresh)
        except BaseException:
            for slot in fresh:  # nothing moved: the run goes on at its size
                if slot.actor is not None:
                    await self._retire(slot)
            self.slots = [slot for slot in self.slots if not slot.retiring]
            self.target = len(live)
            raise
        owners = live + fresh
        # 2. break: retirees stop, the others give up what they lose
        for i, slot in enumerate(live):
            if i >= len(after):
                await self._retire(slot)
                self._event("released", slot, before[i])
                continue
            lose = [p for p in slot.partitions if p not in after[i]]
            if lose and slot.restart_at is not None:  # restarts with what it keeps
                slot.partitions = [p for p in slot.partitions if p not in lose]
            elif lose:
                released = await slot.actor.release.remote(lose)
                self._bank_report(released)
                slot.partitions = [p for p in slot.partitions if p not in lose]
            if lose:
                self._event("released", slot, lose)
        # 3. move: claim under new epochs, hand to the (new) owners
        for slot, target in zip(owners, after, strict=False):
            gain = [p for p in target if p not in slot.partitions]
            if gain and slot.restart_at is not None:
                slot.partitions = sorted(target)
            elif gain:
                claims = await self._claim(gain)
                try:
                    await slot.actor.acquire.remote(claims, self._stopped_of(gain))
                except (RayActorError, RayTaskError) as exc:
                    log.warning("worker %d could not take partitions %s (%s); a new "
                                "worker takes its whole set", slot.index, gain,
                                str(exc).splitlines()[0])
                    await self._retire(slot)
                    slot = self._new_slot(target)
                    await self._start(slot)
                    continue
                slot.partitions = sorted(target)
                self._event("acquired", slot, gain)
        self.slots = [slot for slot in self.slots if not slot.retiring]
        if len(after) < len(live):
            self._request_resources(len(after))
        move = {"workers": len(after), "moved": moved(before, after), "sets": after,
                "why": why}
        self.moves.append(move)
        self.metrics.rescaled()
        log.info("rescaled to %d workers (%s), %d partitions moved", len(after), why,
                 move["moved"])
        return move

    def _by_retirement(self, live: list[_Slot]) -> list[_Slot]:
        """Survivors first, retirees last: the slots on the nodes with the fewest slots go
        first (so that their nodes empty and the cluster can remove them); among equals,
        the newest."""
        per_node: dict[str | None, int] = {}
        for slot in live:
            per_node[slot.node] = per_node.get(slot.node, 0) + 1
        return sorted(live, key=lambda slot: (-per_node[slot.node], slot.index))

    async def _wait_ready(self, slots: list[_Slot]) -> None:
        """Until each new worker is placed and connected to Kafka (on an autoscaling
        cluster a new node boots first), within topology.place_timeout_s."""
        timeout = self.settings.topology.place_timeout_s
        for slot in slots:
            try:
                info = await asyncio.wait_for(asyncio.shield(slot.ready_ref), timeout)
            except asyncio.TimeoutError as exc:
                raise VeltrixError(
                    f"rescale: worker {slot.index} was not placed within "
                    f"topology.place_timeout_s={timeout:g}s (no node with "
                    f"{self.settings.topology.num_cpus} CPU and "
                    f"{self.settings.topology.memory_mb} MiB free?); no partition moved. "
                    "Add nodes or lower topology.num_cpus / memory_mb.") from exc
            slot.node = info.get("node")
            self._event("ready", slot, [], node=slot.node)

    def _request_resources(self, workers: int) -> None:
        """On a cluster: tell Ray's autoscaler how many workers' resources to keep."""
        from veltrix_ray.config.ray_address import is_local

        topo = self.settings.topology
        if is_local(topo.address):
            return
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[{"CPU": topo.num_cpus}] * workers)
        except Exception as exc:  # no autoscaler on this cluster: nothing to ask
            log.info("request_resources(%d workers) not applied: %s", workers, exc)

    def _event(self, kind: str, slot: _Slot, partitions: list[int], **extra: Any) -> None:
        self.events.append({"at": time.time(), "event": kind, "worker": slot.index,
                            "partitions": sorted(partitions)} | extra)

    def _new_slot(self, partitions: list[int]) -> _Slot:
        slot = self._slot(max((s.index for s in self.slots), default=-1) + 1, sorted(partitions))
        self.slots.append(slot)
        return slot

    def _slot(self, index: int, partitions: list[int]) -> _Slot:
        health = SlotHealth(self.settings.topology, self.settings.until == "forever")
        return _Slot(index, partitions, health)

    async def _retire(self, slot: _Slot) -> None:
        slot.retiring = True
        slot.restart_at = None
        try:
            await slot.actor.stop.remote()
            final = await slot.run_ref
        except (RayActorError, RayTaskError):
            final = slot.last
        self._bank_report(final.get("partitions", {}))
        if final:
            self._retired.append(final)
        slot.done = True
        ray.kill(slot.actor)  # its process ends now, so its CPU (and maybe its node) is free

    # -- supervision -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        interval = self.settings.progress_interval_s
        while True:
            await self._control()
            for slot in self.slots:
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    slot.restart_at = None
                    slot.incarnation += 1
                    await self._start(slot)
            live = {slot.run_ref: slot for slot in self.slots
                    if not slot.done and not slot.retiring and slot.run_ref is not None}
            waiting = any(slot.restart_at is not None for slot in self.slots)
            if not live:
                if self._rescaling.locked() or waiting:  # new workers are about to start
                    await asyncio.sleep(0.05)
                    continue
                return
            ready, _ = ray.wait(list(live), num_returns=len(live), timeout=0)
            for ref in ready:
                if not live[ref].retiring:
                    await self._finished(live[ref], ref)
            if not ready:
                await self._poll()
                self._tick()
                await self._steer()
                await asyncio.sleep(min(interval, 0.25))

    async def _steer(self) -> None:
        """Between polls: learn where workers run, look for new partitions, let the
        autoscaler decide; each change is a rescale in the background (supervision goes on
        while it places workers)."""
        for slot in self.slots:
            if slot.node is None and slot.ready_ref is not None:
                ready, _ = ray.wait([slot.ready_ref], timeout=0)
                if ready:
                    try:
                        slot.node = (await slot.ready_ref).get("node")
                        self._event("ready", slot, [], node=slot.node)
                    except RayError:
                        slot.ready_ref = None
        if self._scaling is not None and self._scaling.done():
            failed = self._scaling.exception()
            self._scaling = None
            if failed is not None and not self._stopping:
                log.error("rescale failed: %s", failed)
        if self._stopping or self._rescaling.locked():
            return
        if self._scaling is not None:
            return
        now = time.monotonic()
        orphans = self._orphans()
        if orphans and now >= self._converge_at:
            # a rescale interrupted halfway (a worker or a service lost mid-move)
            log.warning("partitions %s have no owner: assigning them again", orphans)
            self._converge_at = now + 5.0
            self._scaling = asyncio.ensure_future(self.rescale(self.target, "converge"))
            return
        if now - self._discovered >= self.settings.topology.partition_discovery_s:
            self._discovered = now
            try:
                count = await self._partitions()
            except Exception as exc:  # Kafka away: the workers wait for it, so do we
                log.info("looking for new partitions: %s: %s", type(exc).__name__, exc)
                return
            if count > self._partition_count:
                log.warning("topic %s has %d partitions now (was %d): assigning the new ones",
                            self.settings.kafka.topic, count, self._partition_count)
                self._scaling = asyncio.ensure_future(self.rescale(self.target,
                                                                   "new partitions"))
                return
        if self.autoscaler is None or not self.autoscaler.due():
            return
        if self.settings.until == "drained" and any(slot.done for slot in self.slots):
            return  # finishing: workers end as their partitions drain, none is missing
        live = [slot for slot in self.slots if not slot.done and not slot.retiring]
        owned = {p for slot in live if slot.restart_at is None and slot.run_ref is not None
                 for p in slot.partitions}
        decision = self.autoscaler.decide(self.progress(), len(live), owned)
        if decision.target != len(live):
            self._scaling = asyncio.ensure_future(self.rescale(decision.target,
                                                               decision.code))

    async def _control(self) -> None:
        """Heartbeat and operators' requests (veltrix_ray/control), once per interval."""
        if self._steering is not None:
            await self._steering.tick(self)

    def _orphans(self) -> list[int]:
        """The desired assignment's check: every partition has exactly one owner (a live,
        restarting or finished slot); returns those with none."""
        held = [p for slot in self.slots if not slot.retiring for p in slot.partitions]
        twice = sorted({p for p in held if held.count(p) > 1})
        if twice:
            log.error("partitions %s have two owners; the newer epoch fences the older",
                      twice)
        return sorted(set(range(self._partition_count)) - set(held))

    async def _finished(self, slot: _Slot, ref: Any) -> None:
        """A worker's run ended: done, or a failure. A lost worker (process or node gone, a
        service away) and one that crashed are restarted under a new owner epoch, as the
        slot's health says (runtime/supervision.py); anything else ends the run with the
        worker's message."""
        try:
            slot.last = await ref
            self._note_stopped(slot.last)
            slot.done = True
            return
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            failure = Failure(Death.LOST, f"died ({str(exc).splitlines()[0]})")
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            if isinstance(cause, FencedError):
                self.metrics.fenced_commit()
            if isinstance(cause, WorkerCrashed):
                failure = Failure(Death.CRASH, f"failed: {cause}", cause.cause, cause.where)
            elif isinstance(cause, RetriableError):  # a service away: not the worker's fault
                failure = Failure(Death.LOST, f"failed: {cause}")
            else:
                kind = type(cause).__name__ if isinstance(cause, VeltrixError) else "VeltrixError"
                message = str(cause) if isinstance(cause, VeltrixError) else (
                    f"worker {slot.index} (partitions {slot.partitions}) failed: "
                    f"{type(cause).__name__}: {cause}")
                self.errors.append((kind, message))
                slot.done = True
                await self.stop()
                return
        if self._stopping:
            slot.done = True
            return
        self._bank_report(slot.last.get("partitions", {}))
        slot.last = {}
        topo = self.settings.topology
        verdict = slot.health.failed(failure, time.monotonic())
        slot.restarts += 1
        self.metrics.restarted()
        who = f"worker {slot.index} (partitions {slot.partitions})"
        if isinstance(verdict, GiveUp):
            self.errors.append(("VeltrixError", give_up_message(
                who, failure.reason, verdict.repeats, topo.restart_window_s)))
            slot.done = True
            await self.stop()
            return
        for p, span in verdict.stop.items():
            self._stopped[p] = stopped_message(f"worker {slot.index}", p, span,
                                               failure.reason, verdict.repeats,
                                               topo.restart_window_s)
            self._stop_kinds[p] = "WorkerCrashed"
            log.error("%s", self._stopped[p])
        log.warning("%s %s; restarting it in %.1fs under a new owner epoch (restart %d)", who,
                    failure.reason, verdict.delay, slot.restarts)
        slot.run_ref = None
        slot.restart_at = time.monotonic() + verdict.delay

    def _stopped_of(self, partitions: list[int]) -> dict[int, str]:
        return {p: self._stopped[p] for p in partitions if p in self._stopped}

    def _note_stopped(self, report: dict[str, Any]) -> None:
        for p, info in report.get("partitions", {}).items():
            if info.get("error"):
                self._stopped[p] = info["error"]

    def _bank_report(self, partitions: dict[int, dict[str, Any]]) -> None:
        self._note_stopped({"partitions": partitions})
        for p, info in partitions.items():
            bank = self._bank(p)
            for key in ("rows", "dead_letters", "records"):
                bank[key] += info.get(key, 0)
            for reason, n in info.get("reasons", {}).items():
                bank["reasons"][reason] = bank["reasons"].get(reason, 0) + n

    def _bank(self, p: int) -> dict[str, Any]:
        return self._banked.setdefault(p, {"rows": 0, "dead_letters": 0, "records": 0,
                                           "reasons": {}})

    def _rebank(self, p: int, total: Totals) -> None:
        """Rows and dead letters of a partition so far, from PostgreSQL: a worker lost
        between two progress reports took its last commits' counts along."""
        before = self._baseline.get(p, Totals(None, 0, 0))
        bank = self._bank(p)
        bank["rows"] = max(bank["rows"], total.rows - before.rows)
        bank["dead_letters"] = max(bank["dead_letters"], total.dead_letters - before.dead_letters)

    def _tick(self, force: bool = False) -> None:
        """Metrics from the latest progress, at most once per progress_interval_s."""
        now = time.monotonic()
        if not force and now - self._ticked < min(self.settings.progress_interval_s, 5.0):
            return
        self._ticked = now
        report = self.progress()
        self.metrics.tick(report, live=report["live_workers"], target=report["target_workers"])

    async def _poll(self) -> None:
        """Latest progress of each live worker. A slow answer is skipped, never cancelled:
        cancelling a Ray call on an async actor can cancel the actor's running tasks."""
        slots = [s for s in self.slots if not s.done and not s.retiring and s.actor is not None]
        calls = {asyncio.ensure_future(s.actor.progress.remote(False)): s for s in slots}
        if not calls:
            return
        done, _ = await asyncio.wait(calls, timeout=5)
        for call in done:
            try:
                calls[call].last = call.result()
                self._note_stopped(calls[call].last)
            except RayError:  # a dying worker: supervision sees it through its run
                continue

    # -- reporting -------------------------------------------------------------------------

    def worker_pids(self) -> dict[str, int]:
        return {s.last["worker"]: s.last["pid"] for s in self.slots
                if s.last and not s.done and "pid" in s.last}

    def progress(self) -> dict[str, Any]:
        parts: dict[int, dict[str, Any]] = {}
        for p, bank in self._banked.items():
            parts[p] = {"worker": None, "committed": None, "high_watermark": None,
                        "error": None} | bank
        workers = []
        latencies: list[float] = []
        reports: list[tuple[int | None, int, list[int], dict[str, Any]]] = [
            (slot.index, slot.restarts, slot.partitions, slot.last) for slot in self.slots]
        reports += [(None, 0, [], info) for info in self._retired]
        for index, restarts, owned, info in reports:
            for p in owned:
                cur = info.get("partitions", {}).get(p, {})
                bank = self._banked.get(p, {})
                reasons = dict(bank.get("reasons", {}))
                for reason, n in cur.get("reasons", {}).items():
                    reasons[reason] = reasons.get(reason, 0) + n
                parts[p] = {"worker": index, "committed": cur.get("committed"),
                            "high_watermark": cur.get("high_watermark"),
                            "rows": bank.get("rows", 0) + cur.get("rows", 0),
                            "dead_letters": bank.get("dead_letters", 0)
                            + cur.get("dead_letters", 0),
                            "records": bank.get("records", 0) + cur.get("records", 0),
                            "reasons": reasons, "error": cur.get("error")}
            if info:
                workers.append({k: info[k] for k in ("worker", "pid", "status", "rss",
                                                     "first_data_at", "peak_rss",
                                                     "held_bytes", "budget_bytes", "batches")}
                               | {"restarts": restarts, "waiting": info.get("waiting"),
                                  "node": info.get("node"),
                                  "slot": index, "busy_ratio": info.get("busy_ratio", 0.0)})
                latencies += info.get("latencies", [])
        end = self.finished or time.time()
        first = min((w["first_data_at"] for w in workers if w["first_data_at"]), default=None)
        return {"pipeline": self.settings.pipeline.name, "topic": self.settings.kafka.topic,
                "elapsed_s": end - self.started,
                "processing_s": end - first if first is not None else 0.0,
                "partitions": parts, "workers": workers, "latencies": latencies,
                "errors": list(self.errors), "moves": list(self.moves),
                "waiting": self.waiting,
                "live_workers": sum(1 for s in self.slots if s.actor is not None
                                    and s.run_ref is not None and not s.done
                                    and not s.retiring),
                "target_workers": self.target,
                "autoscale": self.autoscaler.state() if self.autoscaler else None,
                "events": list(self.events)}

    def summary(self) -> dict[str, Any]:
        """The final report: counts and offsets from PostgreSQL, exact across crashes."""
        progress = self.progress()
        for p, total in self._final.items():
            info = progress["partitions"].setdefault(p, {"worker": None, "error": None,
                                                         "high_watermark": None})
            before = self._baseline.get(p, Totals(None, 0, 0))
            info.update(committed=total.next_offset, rows=total.rows - before.rows,
                        dead_letters=total.dead_letters - before.dead_letters)
        for p, info in progress["partitions"].items():
            if info["error"]:
                progress["errors"].append((self._stop_kinds.get(p, "DeadLetterLimitExceeded"),
                                           info["error"]))
        return progress
