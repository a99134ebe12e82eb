"""One commit in flight: the next batch is fetched and decoded while the last one commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from veltrix_ray.contracts import DeadLetter, OffsetSink, WriteBatch
from veltrix_ray.runtime.lockwait import naming_the_wait

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Committed(Generic[T]):
    """A finished commit: what was submitted with it, and the rows the sink dead-lettered."""

    write: WriteBatch
    context: T
    rejected: list[DeadLetter]
    seconds: float  # from submit to finish: what the batch waited for its commit
    write_s: float = 0.0  # the sink's write itself (the transaction)


@dataclass
class _InFlight(Generic[T]):
    task: asyncio.Future[tuple[list[DeadLetter], float]]
    write: WriteBatch
    context: T
    started: float = field(default_factory=time.perf_counter)


class Committer(Generic[T]):
    def __init__(self, sink: OffsetSink, name: str = "", slow_s: float = 2.0) -> None:
        self.sink = sink
        self.name = name
        self.slow_s = slow_s  # a commit slower than this: ask who it waits for
        self.waiting: str | None = None  # the sessions a slow commit waits for
        self._current: _InFlight[T] | None = None
        self.failed: WriteBatch | None = None  # the batch whose commit raised

    @property
    def in_flight(self) -> bool:
        return self._current is not None

    async def submit(self, write: WriteBatch, context: T) -> Committed[T] | None:
        """Start committing `write` (in a thread: psycopg blocks) after the one in flight
        has finished; returns that one."""
        done = await self.finish()
        task = asyncio.ensure_future(asyncio.to_thread(self._write, write))
        self._current = _InFlight(task, write, context)
        return done

    async def finish(self) -> Committed[T] | None:
        """Wait for the commit in flight; its error (FencedError, SinkError) is raised here."""
        current, self._current = self._current, None
        if current is None:
            return None
        partitions = [a.partition for a in current.write.advances]

        def say(held: str | None) -> None:
            waiting = f"partitions {partitions} wait for {held}" if held else None
            if waiting and waiting != self.waiting:
                log.warning("%s: the commit of partitions %s waits for a lock held by %s",
                            self.name, partitions, held)
            self.waiting = waiting

        try:
            rejected, write_s = await naming_the_wait(current.task, self.slow_s,
                                                      self.sink.blockers, say)
        except BaseException:
            self.failed = current.write
            raise
        return Committed(current.write, current.context, rejected,
                         time.perf_counter() - current.started, write_s)

    def _write(self, write: WriteBatch) -> tuple[list[DeadLetter], float]:
        started = time.perf_counter()
        rejected = self.sink.write(write)
        return rejected, time.perf_counter() - started

    async def abandon(self) -> None:
        """On failure: let the commit in flight end before the sink is closed under it (its
        outcome no longer matters: the stored offsets say what was committed)."""
        current, self._current = self._current, None
        if current is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(current.task)
