"""In-memory fakes of the two contracts (PartitionSource, OffsetSink) and a runner for the
worker loop: the loop's logic, tested without Kafka, PostgreSQL or Ray."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.budget import Budget
from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Claim, DeadLetter, Fetched, Totals, WriteBatch, written
from veltrix_ray.errors import FencedError
from veltrix_ray.runtime.budget import Watchdog
from veltrix_ray.runtime.loop import WorkerLoop
from veltrix_ray.transform import output_schema

Log = Sequence[tuple[bytes | None, bytes | None]]  # (key, value) at offsets 0, 1, ...


def event(i: int, **change: Any) -> bytes:
    """A standard event (the `events` pipeline's columns), as its producer would send it."""
    e = {"event_id": f"e{i}", "ts": "2026-11-26T10:00:00+00:00", "user_id": i,
         "kind": "view", "amount": 1.25, "country": "DE", "payload": {"n": i}}
    e.update(change)
    return json.dumps(e).encode()


class FakeSource:
    def __init__(self, logs: Mapping[int, Log], per_fetch: int = 1_000_000) -> None:
        self.logs = dict(logs)
        self.per_fetch = per_fetch
        self.pos: dict[int, int] = {}
        self.fetched_partitions: list[set[int]] = []

    async def bind(self, positions: Mapping[int, int | None]) -> dict[int, int]:
        self.pos = {p: 0 if o is None else o for p, o in positions.items()}
        return dict(self.pos)

    async def fetch(self, partitions: Sequence[int], max_records: int) -> Fetched:
        await asyncio.sleep(0)
        self.fetched_partitions.append(set(partitions))
        parts, offs, keys, vals = [], [], [], []
        budget = min(max_records, self.per_fetch)
        for p in partitions:
            log = self.logs[p]
            start = self.pos[p]
            take = log[start:start + budget]
            budget -= len(take)
            for i, (k, v) in enumerate(take):
                parts.append(p)
                offs.append(start + i)
                keys.append(k)
                vals.append(v)
            self.pos[p] = start + len(take)
        return Fetched(parts, offs, keys, vals, [0] * len(parts), topic="t")

    def high_watermark(self, partition: int) -> int | None:
        return len(self.logs[partition])

    async def end_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: len(self.logs[p]) for p in partitions}

    async def position(self, partition: int) -> int:
        return self.pos[partition]

    async def close(self) -> None:
        pass


class FakeSink:
    """Applies writes like the PostgreSQL sink: fenced on (epoch, expected offset); `reject`
    plays the database refusing a row for a data reason."""

    def __init__(self, reject: Callable[[dict[str, Any]], str | None] | None = None,
                 delay_s: float = 0.0) -> None:
        self.reject = reject
        self.delay_s = delay_s
        self.offsets: dict[int, int | None] = {}
        self.epochs: dict[int, int] = {}
        self.rows: list[dict[str, Any]] = []
        self.dead: list[DeadLetter] = []
        self.writes = 0
        self._active = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def setup(self, schema: pa.Schema) -> None:
        pass

    def add_columns(self, fields: Sequence[pa.Field]) -> None:
        self.added = [*getattr(self, "added", []), *(f.name for f in fields)]

    def claim(self, partitions: Sequence[int]) -> dict[int, Claim]:
        out = {}
        for p in partitions:
            self.epochs[p] = self.epochs.get(p, 0) + 1
            out[p] = Claim(p, self.offsets.get(p), self.epochs[p])
        return out

    def write(self, batch: WriteBatch) -> list[DeadLetter]:
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        try:
            time.sleep(self.delay_s)
            for a in batch.advances:
                if (self.epochs.get(a.partition), self.offsets.get(a.partition)) != \
                        (a.epoch, a.expected):
                    raise FencedError(f"partition {a.partition} fenced")
            rejected = []
            names = written(batch.rows.schema).names
            for i, row in enumerate(batch.rows.select(names).to_pylist()):
                why = self.reject(row) if self.reject else None
                if why is None:
                    self.rows.append(row)
                else:
                    bad = batch.rejected(i, why)
                    assert bad is not None
                    rejected.append(bad)
            self.dead += batch.dead_letters + rejected
            for a in batch.advances:
                self.offsets[a.partition] = a.new
            self.writes += 1
            return rejected
        finally:
            with self._lock:
                self._active -= 1

    def totals(self) -> dict[int, Totals]:
        return {p: Totals(n, 0, 0) for p, n in self.offsets.items()}

    def blockers(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def settings(*overrides: str) -> VeltrixConfig:
    return to_settings(load_config(["kafka.topic=t", "until=drained", *overrides]))


class ScriptedWatchdog(Watchdog):
    """A watchdog whose process has `resident` bytes for the first `looks` looks (-1: for
    all), and none after."""

    def __init__(self, budget: Budget, looks: int, resident: int) -> None:
        super().__init__(budget, "w0", [])
        self.looks = looks
        self.resident = resident
        self.seen = 0

    def kernel_peak(self) -> int:
        return 0  # the scripted bytes only, not the test process's own peak

    def rss(self) -> int:
        self.seen += 1
        return self.resident if self.looks < 0 or self.seen <= self.looks else 0


def run_loop(s: VeltrixConfig, source: FakeSource, sink: FakeSink,
             stopped: Mapping[int, str] | None = None, timeout: float = 30.0,
             breaches: int = 0, resident: Callable[[Budget], int] | None = None
             ) -> WorkerLoop:
    """Runs a worker loop over the fakes to the end (until=drained), in a thread so that a
    loop that never yields fails the test instead of hanging it."""
    claims = sink.claim(sorted(source.logs))
    budget = Budget.derive(s.topology.memory_mb, s.topology.memory,
                           s.pipeline.max_record_bytes)
    # `breaches` looks see `resident(budget)` bytes (default: just over the budget)
    dog = ScriptedWatchdog(budget, breaches, resident(budget) if resident else
                           budget.budget_bytes + 1) if breaches else None
    loop = WorkerLoop(s, "w0", claims, budget, written(output_schema(s)), source, sink,
                      stopped, dog)
    error: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(loop.run())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the worker loop did not finish within {timeout}s"
    if error:
        raise error[0]
    return loop
