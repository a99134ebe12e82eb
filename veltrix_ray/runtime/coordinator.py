"""Coordinator: discovers partitions, assigns them to workers, supervises and reports.

One per pipeline (a Ray actor named after it). A worker that dies is replaced, its
partitions claimed again under a new owner epoch, so the dead one can never commit."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import ray
from ray.exceptions import (
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


@dataclass
class _Slot:
    """One partition set and its current worker incarnation."""

    index: int
    partitions: list[int]
    incarnation: int = 0
    restarts: int = 0
    actor: Any = None
    run_ref: Any = None
    last: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    retiring: bool = False  # being stopped by a rescale; the rescale reaps it
    restart_at: float | None = None  # monotonic time of a scheduled restart
    failures: deque[float] = field(default_factory=deque)  # monotonic times, recent ones
    crashes: deque[float] = field(default_factory=deque)


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
        # partitions the dead-letter limit stopped, and why: no later owner resumes them
        self._stopped: dict[int, str] = {}
        self.waiting: str | None = None  # a claim waiting for another session's lock
        self.metrics = PipelineMetrics(settings.pipeline.name)
        self._ticked = 0.0  # monotonic time of the last metrics tick
        self._steering: Steering | None = None  # veltrix_control: heartbeat, requests

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        s = self.settings
        count = await self._partitions()
        self._schema = output_schema(s)
        await asyncio.to_thread(self._sink.setup, self._schema)
        self._steering = Steering(s, coordinator_name(s.pipeline.name))
        await asyncio.to_thread(self._steering.setup)
        self._baseline = await asyncio.to_thread(self._sink.totals)
        sets = assign(range(count), s.topology.workers)
        self.slots = [_Slot(i, ps) for i, ps in enumerate(sets)]
        for slot in self.slots:
            await self._start(slot)
        try:
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
        name = f"{coordinator_name(s.pipeline.name)}:w{slot.index}.{slot.incarnation}"
        spec = WorkerSpec(s, name, slot.partitions, claims, self._budget, written(self._schema),
                          self._stopped_of(slot.partitions), slot.index)
        options: dict[str, Any] = {
            "name": name, "namespace": NAMESPACE, "num_cpus": s.topology.num_cpus,
            "memory": s.topology.memory_mb * 2**20, "max_restarts": 0,
            "max_concurrency": 8,
        }
        if s.topology.placement == "SPREAD":
            options["scheduling_strategy"] = "SPREAD"
        slot.actor = ray.remote(PartitionWorker).options(**options).remote(spec)
        slot.run_ref = slot.actor.run.remote()
        slot.last = {}
        slot.done = False

    # -- rescale ---------------------------------------------------------------------------

    async def _claim(self, partitions: list[int]) -> dict[int, Claim]:
        """Claim in a thread; while the claim waits for a lock, say who holds it."""
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

    async def rescale(self, workers: int) -> dict[str, Any]:
        """Move to `workers` partition sets, moving as few partitions as possible: a worker
        first gives up what it loses (after committing its batch in flight), then the new
        owners claim those partitions under new epochs. Partitions added to the topic since
        the start are picked up too."""
        if workers < 1:
            raise ConfigError("rescale needs at least 1 worker (topology.workers)")
        async with self._rescaling:
            count = await self._partitions()
            live = [slot for slot in self.slots if not slot.done]
            before = [slot.partitions for slot in live]
            after = assign(range(count), workers, previous=before)
            # 1. give up: stop the sets that go away, release what the others lose
            for i, slot in enumerate(live):
                if i >= len(after):
                    await self._retire(slot)
                    continue
                lose = [p for p in slot.partitions if p not in after[i]]
                if lose and slot.restart_at is not None:  # restarts with what it keeps
                    slot.partitions = [p for p in slot.partitions if p not in lose]
                elif lose:
                    released = await slot.actor.release.remote(lose)
                    self._bank_report(released)
                    slot.partitions = [p for p in slot.partitions if p not in lose]
            # 2. take over: claim under new epochs, then hand to the (new) owners
            for i, target in enumerate(after):
                if i < len(live):
                    slot = live[i]
                    gain = [p for p in target if p not in slot.partitions]
                    if gain and slot.restart_at is not None:
                        slot.partitions = sorted(target)
                    elif gain:
                        claims = await self._claim(gain)
                        try:
                            await slot.actor.acquire.remote(claims, self._stopped_of(gain))
                        except (RayActorError, RayTaskError):
                            # it finished or died meanwhile: a fresh worker takes the whole set
                            await self._retire(slot)
                            slot = self._new_slot(target)
                            await self._start(slot)
                            continue
                        slot.partitions = sorted(target)
                else:
                    await self._start(self._new_slot(target))
            self.slots = [slot for slot in self.slots if not slot.retiring]
            move = {"workers": len(after), "moved": moved(before, after), "sets": after}
            self.moves.append(move)
            self.metrics.rescaled()
            log.info("rescaled to %d workers, %d partitions moved", len(after), move["moved"])
            return move

    def _new_slot(self, partitions: list[int]) -> _Slot:
        slot = _Slot(max(s.index for s in self.slots) + 1, sorted(partitions))
        self.slots.append(slot)
        return slot

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
                await asyncio.sleep(min(interval, 0.25))

    async def _control(self) -> None:
        """Heartbeat and operators' requests (veltrix_ray/control), once per interval."""
        if self._steering is not None:
            await self._steering.tick(self)

    async def _finished(self, slot: _Slot, ref: Any) -> None:
        """A worker's run ended: done, or a fault. A worker that died (process or node lost)
        or failed with a retriable error is restarted under a new owner epoch; anything else
        ends the run with the worker's message."""
        try:
            slot.last = await ref
            self._note_stopped(slot.last)
            slot.done = True
            return
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            reason, crash = f"died ({str(exc).splitlines()[0]})", True
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            if isinstance(cause, FencedError):
                self.metrics.fenced_commit()
            if not isinstance(cause, RetriableError):
                kind = type(cause).__name__ if isinstance(cause, VeltrixError) else "VeltrixError"
                message = str(cause) if isinstance(cause, VeltrixError) else (
                    f"worker {slot.index} (partitions {slot.partitions}) failed: "
                    f"{type(cause).__name__}: {cause}")
                self.errors.append((kind, message))
                slot.done = True
                await self.stop()
                return
            # a service away: not the worker's fault, so a `forever` run never gives up on it
            reason = f"failed: {cause}"
            crash = isinstance(cause, WorkerCrashed) or self.settings.until == "drained"
        if self._stopping:
            slot.done = True
            return
        self._bank_report(slot.last.get("partitions", {}))
        slot.last = {}
        topo = self.settings.topology
        now = time.monotonic()
        for times in (slot.failures, slot.crashes):
            while times and times[0] < now - topo.restart_window_s:
                times.popleft()
        slot.failures.append(now)
        if crash:
            slot.crashes.append(now)
        slot.restarts += 1
        self.metrics.restarted()
        if len(slot.crashes) > topo.max_restarts:
            self.errors.append(("VeltrixError", (
                f"worker {slot.index} (partitions {slot.partitions}) {reason}; that is "
                f"{len(slot.crashes)} times in the last {topo.restart_window_s:g}s. Look at "
                "its log (ray logs), or raise topology.max_restarts / "
                "topology.restart_window_s.")))
            slot.done = True
            await self.stop()
            return
        # exponential backoff over the recent failures, with jitter so that workers that
        # failed together do not all come back at the same instant
        delay = min(topo.restart_backoff_max_s,
                    topo.restart_backoff_s * 2 ** (len(slot.failures) - 1))
        delay *= random.uniform(0.5, 1.0)
        log.warning("worker %d (partitions %s) %s; restarting it in %.1fs under a new owner "
                    "epoch (restart %d)", slot.index, slot.partitions, reason, delay,
                    slot.restarts)
        slot.run_ref = None
        slot.restart_at = now + delay

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
                "target_workers": sum(1 for s in self.slots if not s.retiring)}

    def summary(self) -> dict[str, Any]:
        """The final report: counts and offsets from PostgreSQL, exact across crashes."""
        progress = self.progress()
        for p, total in self._final.items():
            info = progress["partitions"].setdefault(p, {"worker": None, "error": None,
                                                         "high_watermark": None})
            before = self._baseline.get(p, Totals(None, 0, 0))
            info.update(committed=total.next_offset, rows=total.rows - before.rows,
                        dead_letters=total.dead_letters - before.dead_letters)
        for info in progress["partitions"].values():
            if info["error"]:
                progress["errors"].append(("DeadLetterLimitExceeded", info["error"]))
        return progress
