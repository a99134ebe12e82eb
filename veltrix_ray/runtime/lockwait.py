"""Waiting for a PostgreSQL call that may wait for a lock: the call runs in a thread; while it
is slow, ask PostgreSQL who holds the locks (also in a thread), so the wait can be named."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def naming_the_wait(task: asyncio.Future[T], slow_s: float,
                          blockers: Callable[[], str | None],
                          say: Callable[[str | None], None]) -> T:
    """`task`'s result. Every `slow_s` while it runs, `say` is told who holds the locks it may
    wait for (None: nobody); once it is done, `say(None)`."""
    while not task.done():
        await asyncio.wait({task}, timeout=slow_s)
        if task.done():
            break
        say(await asyncio.to_thread(blockers))
    say(None)
    return await task
