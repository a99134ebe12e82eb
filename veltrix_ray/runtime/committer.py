"""One commit in flight: the next batch is fetched and decoded while the last one commits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from veltrix_ray.contracts import DeadLetter, OffsetSink, WriteBatch

T = TypeVar("T")


@dataclass
class Committed(Generic[T]):
    """A finished commit: what was submitted with it, and the rows the sink dead-lettered."""

    write: WriteBatch
    context: T
    rejected: list[DeadLetter]
    seconds: float


@dataclass
class _InFlight(Generic[T]):
    task: asyncio.Future[list[DeadLetter]]
    write: WriteBatch
    context: T
    started: float = field(default_factory=time.perf_counter)


class Committer(Generic[T]):
    def __init__(self, sink: OffsetSink) -> None:
        self.sink = sink
        self._current: _InFlight[T] | None = None

    @property
    def in_flight(self) -> bool:
        return self._current is not None

    async def submit(self, write: WriteBatch, context: T) -> Committed[T] | None:
        """Start committing `write` (in a thread: psycopg blocks) after the one in flight
        has finished; returns that one."""
        done = await self.finish()
        task = asyncio.ensure_future(asyncio.to_thread(self.sink.write, write))
        self._current = _InFlight(task, write, context)
        return done

    async def finish(self) -> Committed[T] | None:
        """Wait for the commit in flight; its error (FencedError, SinkError) is raised here."""
        current, self._current = self._current, None
        if current is None:
            return None
        rejected = await current.task
        return Committed(current.write, current.context, rejected,
                         time.perf_counter() - current.started)

    async def abandon(self) -> None:
        """On failure: let the commit in flight end before the sink is closed under it (its
        outcome no longer matters: the stored offsets say what was committed)."""
        current, self._current = self._current, None
        if current is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(current.task)
