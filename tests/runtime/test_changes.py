"""Ownership changes reach the worker loop as typed requests (Acquire, Release), applied
between batches: a released partition's final state comes back, an acquired one is read
from its claim."""

from __future__ import annotations

import asyncio

import pytest

from veltrix_ray.config.budget import Budget
from veltrix_ray.contracts import written
from veltrix_ray.errors import VeltrixError
from veltrix_ray.runtime.loop import WorkerLoop
from veltrix_ray.transform import output_schema

from .fakes import FakeSink, FakeSource, event, settings


def test_partitions_are_released_and_acquired_between_batches() -> None:
    logs = {0: [(None, event(i)) for i in range(50)],
            1: [(None, event(100 + i)) for i in range(30)]}
    s = settings("until=forever", "batch.max_records=10")
    sink, source = FakeSink(), FakeSource(logs)
    budget = Budget.derive(s.topology.memory_mb, s.topology.memory, s.pipeline.max_record_bytes)
    loop = WorkerLoop(s, "w0", sink.claim([0]), budget, written(output_schema(s)), source,
                      sink)

    async def until(*, partition: int, offset: int) -> None:
        while sink.offsets.get(partition) != offset:  # noqa: ASYNC110 - polls a fake sink
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        run = asyncio.ensure_future(loop.run())
        await until(partition=0, offset=50)
        released = await loop.release([0, 7])  # 7: not its own, nothing to say
        assert list(released) == [0] and released[0].committed == 50
        assert released[0].rows == 50
        await loop.acquire(sink.claim([1]), {})
        await until(partition=1, offset=30)
        loop.stop()
        await run

    asyncio.run(asyncio.wait_for(scenario(), 20))
    assert list(loop.states) == [1]
    assert len(sink.rows) == 80


def test_a_change_asked_of_a_finished_loop_fails_naming_it() -> None:
    s = settings("until=forever")
    sink, source = FakeSink(), FakeSource({0: []})
    budget = Budget.derive(s.topology.memory_mb, s.topology.memory, s.pipeline.max_record_bytes)
    loop = WorkerLoop(s, "w0", {}, budget, written(output_schema(s)), source, sink)

    async def scenario() -> None:
        run = asyncio.ensure_future(loop.run())
        await asyncio.sleep(0.01)  # waiting for partitions
        change = asyncio.ensure_future(loop.acquire(sink.claim([0]), {}))
        await asyncio.sleep(0)  # asked, not applied yet
        loop.stop()
        await run
        with pytest.raises(VeltrixError, match="w0 finished before the change"):
            await change

    asyncio.run(asyncio.wait_for(scenario(), 20))
