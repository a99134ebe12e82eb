"""Expected outcomes computed from the deterministic producer, and Postgres read-backs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import ray

from veltrix_ray import Pipeline, RunSummary, load_config
from veltrix_ray.produce import _BATCH_BYTES, generate, partition_for, produce
from veltrix_ray.runtime.coordinator import NAMESPACE, coordinator_name


@dataclass
class Expected:
    good: set[str] = field(default_factory=set)
    bad: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)
    high_watermarks: dict[int, int] = field(default_factory=dict)
    good_at: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset)

    def good_before(self, next_offsets: dict[int, int | None]) -> set[str]:
        """The good event_ids below the given per-partition offsets."""
        return {e for (p, o), e in self.good_at.items() if o < (next_offsets.get(p) or 0)}


def fill(bootstrap: str, topic: str, events: int, partitions: int, seed: int = 7,
         bad_fraction: float = 0.0, payload_bytes: int = 0, compression: str = "none",
         batch_bytes: int | None = None) -> Expected:
    """`veltrix-ray produce`'s records in `topic`, and what a run must make of them."""
    asyncio.run(produce(bootstrap, topic, events=events, partitions=partitions, seed=seed,
                        bad_fraction=bad_fraction, payload_bytes=payload_bytes,
                        compression=compression,
                        batch_bytes=_BATCH_BYTES if batch_bytes is None else batch_bytes))
    exp = Expected()
    offsets: Counter[int] = Counter()
    for rec in generate(events, seed=seed, bad_fraction=bad_fraction,
                        payload_bytes=payload_bytes):
        p = partition_for(rec.key, partitions)
        if rec.event_id is None:
            exp.bad.add((p, offsets[p]))
        else:
            exp.good.add(rec.event_id)
            exp.good_at[(p, offsets[p])] = rec.event_id
        offsets[p] += 1
    exp.high_watermarks = dict(offsets)
    return exp


def overrides(topic: str, dsn: str, *extra: str) -> list[str]:
    return [f"kafka.topic={topic}", f"postgres.dsn='{dsn}'", "until=drained",
            "progress_interval_s=0.2", *extra]


def forever(topic: str, dsn: str, *extra: str) -> list[str]:
    """overrides() for a run that goes on after the backlog (until=forever)."""
    return [o for o in overrides(topic, dsn, *extra) if o != "until=drained"]


def event_ids(dsn: str, table: str = "events") -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(f'SELECT event_id FROM "{table}"').fetchall()]


def dead_letters(dsn: str) -> list[tuple[int, int]]:
    with psycopg.connect(dsn) as conn:
        return [(p, o) for p, o in conn.execute(
            'SELECT partition, "offset" FROM veltrix_dead_letters').fetchall()]


def offsets(dsn: str, topic: str) -> dict[int, int | None]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT partition, next_offset FROM veltrix_offsets WHERE "
                                 "topic = %s", (topic,)).fetchall())


def assert_exact(dsn: str, topic: str, exp: Expected) -> None:
    ids = event_ids(dsn)
    assert len(ids) == len(exp.good), "row count differs (duplicates or gaps)"
    assert set(ids) == exp.good
    dead = dead_letters(dsn)
    assert len(dead) == len(exp.bad)
    assert set(dead) == exp.bad
    assert offsets(dsn, topic) == exp.high_watermarks


class Background:
    """Runs a pipeline in a thread so a test can act on it mid-run."""

    def __init__(self, over: list[str]) -> None:
        self.pipeline = Pipeline(load_config(over))
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        ended_first = not self.thread.is_alive()
        self.pipeline.stop()
        self.thread.join(timeout=300)
        if exc_type is None:
            return
        # a step of the test failed: if the run had failed or ended, how it ended says why
        if self.error is not None:
            raise AssertionError(f"the pipeline's run failed: {self.error!r}") from self.error
        if ended_first and self.summary is not None:
            raise AssertionError(f"the pipeline's run ended: {self.summary.table()}\n"
                                 f"errors: {self.summary.errors}")

    def coordinator(self) -> ray.actor.ActorHandle[Any]:
        return ray.get_actor(coordinator_name(self.pipeline.settings.pipeline.name),
                             namespace=NAMESPACE)

    def a_worker_pid(self) -> int:
        """A live worker's process id, once the coordinator has its first report (rows can
        commit before that)."""
        pids: list[int] = []

        def known() -> bool:
            pids[:] = sorted(ray.get(self.coordinator().worker_pids.remote()).values())
            return bool(pids)

        self.wait("a worker's report", known)
        return pids[0]

    def wait(self, what: str, pred: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if self.error is not None:
                raise AssertionError(f"pipeline failed while waiting for {what}") from self.error
            assert self.thread.is_alive(), f"pipeline ended before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def join(self, timeout: float = 300) -> RunSummary:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline did not finish"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def committed_rows(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return 0
