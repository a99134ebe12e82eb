"""Service-grade faults: what heals by itself, against the real services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import ray
from aiokafka import AIOKafkaProducer

from veltrix_ray import Pipeline, load_config
from veltrix_ray.errors import WorkerCrashed
from veltrix_ray.local.kafka import KafkaBroker
from veltrix_ray.local.postgres import LocalPostgres
from veltrix_ray.local.procs import free_port
from veltrix_ray.source.admin import ensure_topic

from .helpers import (
    Background,
    committed_rows,
    dead_letters,
    event_ids,
    fill,
    forever,
    offsets,
    overrides,
)

pytestmark = pytest.mark.usefixtures("ray_local")


def test_compressible_large_records_under_a_small_budget_complete(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    """A gzip topic brings many times the fetch cap once decompressed: batches shrink to fit
    the budget instead of the worker failing."""
    topic = new_topic(1)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type="gzip",
                                    max_request_size=2**21, linger_ms=20)
        await producer.start()
        try:
            for i in range(400):
                value = json.dumps({"event_id": f"big{i}", "ts": "2026-11-26T10:00:00Z",
                                    "user_id": i, "kind": "view", "amount": 1.0,
                                    "country": "DE", "payload": {"blob": "ab" * 250_000}})
                await producer.send(topic, value.encode(), key=str(i).encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    summary = Pipeline(load_config(overrides(
        topic, pg_dsn, "topology.workers=1", "topology.memory_mb=640",
        "topology.memory.overhead_mb=384", "pipeline.max_record_bytes=600000"))).run()
    assert summary.ok
    assert sorted(event_ids(pg_dsn)) == sorted(f"big{i}" for i in range(400))
    assert offsets(pg_dsn, topic) == {0: 400}
    assert summary.workers[0]["peak_rss"] <= 640 * 2**20


OUTAGE_S = 95  # longer than the retry budget that used to end a run (20 attempts, ~76 s)


def test_postgres_down_longer_than_any_retry_budget_a_forever_run_rides_it_out(
        kafka_bootstrap: str, service_dir: Path, new_topic: Callable[[int], str]) -> None:
    pg = LocalPostgres(service_dir / "pg", free_port())
    pg.start()
    try:
        topic = new_topic(4)
        first = fill(kafka_bootstrap, topic, 8_000, 4, seed=1, bad_fraction=0.01)
        with Background(forever(topic, pg.dsn, "topology.workers=2",
                                "batch.max_records=500")) as run:
            run.wait("some rows", lambda: committed_rows(pg.dsn) > 1000)
            pg.stop()
            # events keep arriving while PostgreSQL is away
            second = fill(kafka_bootstrap, topic, 8_000, 4, seed=2, bad_fraction=0.01)
            time.sleep(OUTAGE_S)
            assert run.thread.is_alive() and run.error is None, "the run gave up"
            pg.start()
            good = first.good | second.good
            run.wait("the backlog after the outage", lambda: committed_rows(pg.dsn) == len(good),
                     timeout=180)
        run.join()
        ids = event_ids(pg.dsn)
        assert len(ids) == len(good) and set(ids) == good
        assert len(dead_letters(pg.dsn)) == len(first.bad) + len(second.bad)
    finally:
        pg.stop()


def test_kafka_down_longer_than_the_connect_timeout_with_a_worker_lost_meanwhile(
        service_dir: Path, pg_dsn: str) -> None:
    """The broker goes away; a worker dies while it is away, and its replacement cannot
    reach Kafka (a retriable failure: restarted with backoff, never fatal to `forever`)."""
    broker = KafkaBroker(service_dir / "kafka", free_port(), free_port())
    broker.start()
    try:
        topic = "outage"
        asyncio.run(ensure_topic(broker.bootstrap, topic, 4))
        first = fill(broker.bootstrap, topic, 8_000, 4, seed=1)
        with Background(forever(topic, pg_dsn, f"kafka.bootstrap={broker.bootstrap}",
                                "topology.workers=2", "batch.max_records=500",
                                "kafka.connect_timeout_s=3")) as run:
            run.wait("some rows", lambda: committed_rows(pg_dsn) > 1000)
            broker.stop()
            pid = run.a_worker_pid()
            os.kill(pid, signal.SIGKILL)
            time.sleep(OUTAGE_S)
            assert run.thread.is_alive() and run.error is None, "the run gave up"
            broker.start()
            second = fill(broker.bootstrap, topic, 8_000, 4, seed=2)
            good = first.good | second.good
            run.wait("the events after the outage",
                     lambda: committed_rows(pg_dsn) == len(good), timeout=180)
        summary = run.join()
        ids = event_ids(pg_dsn)
        assert len(ids) == len(good) and set(ids) == good
        assert sum(w["restarts"] for w in summary.workers) >= 2
    finally:
        broker.stop()


def test_a_lock_held_on_the_offsets_is_reported_with_its_backend_then_the_run_proceeds(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    first = fill(kafka_bootstrap, topic, 2_000, 2, seed=1)
    with Background(forever(topic, pg_dsn, "topology.workers=1",
                            "postgres.lock_timeout_s=3")) as run:
        run.wait("the first rows", lambda: committed_rows(pg_dsn) == len(first.good))
        holder = psycopg.connect(pg_dsn)
        try:
            holder.execute("SELECT * FROM veltrix_offsets FOR UPDATE")
            second = fill(kafka_bootstrap, topic, 2_000, 2, seed=2)

            def waiting() -> list[str]:
                report = ray.get(run.coordinator().progress.remote())
                return [w["waiting"] for w in report["workers"] if w.get("waiting")]

            run.wait("the wait to be reported", lambda: bool(waiting()), timeout=60)
            assert f"backend {holder.info.backend_pid} (" in waiting()[0]
            assert "idle in transaction" in waiting()[0]
            assert "partitions [" in waiting()[0]
            time.sleep(4)  # past postgres.lock_timeout_s: retried, not failed
            assert committed_rows(pg_dsn) == len(first.good)
        finally:
            holder.rollback()
            holder.close()
        good = first.good | second.good
        run.wait("the rows after the lock", lambda: committed_rows(pg_dsn) == len(good))
    run.join()
    ids = event_ids(pg_dsn)
    assert len(ids) == len(good) and set(ids) == good


def test_a_claim_blocked_by_a_lock_is_reported_then_proceeds(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    first = fill(kafka_bootstrap, topic, 1_000, 2, seed=1)
    Pipeline(load_config(overrides(topic, pg_dsn))).run()
    second = fill(kafka_bootstrap, topic, 1_000, 2, seed=2)
    holder = psycopg.connect(pg_dsn)
    try:
        holder.execute("SELECT * FROM veltrix_offsets FOR UPDATE")
        with Background(overrides(topic, pg_dsn, "postgres.lock_timeout_s=3")) as run:
            def waiting() -> str | None:
                try:
                    report = ray.get(run.coordinator().progress.remote())
                except ValueError:  # the coordinator is not up yet
                    return None
                return report["waiting"]  # type: ignore[no-any-return]

            try:
                run.wait("the claim's wait to be reported", lambda: bool(waiting()),
                         timeout=60)
                text = waiting() or ""
                assert text.startswith("claiming partitions [")
                assert f"backend {holder.info.backend_pid} (" in text
            finally:
                holder.rollback()  # the run cannot end while the lock is held
            summary = run.join()
    finally:
        holder.close()
    assert summary.ok and summary.rows == len(second.good)
    ids = event_ids(pg_dsn)
    assert len(ids) == len(first.good | second.good) and set(ids) == first.good | second.good


# every worker is killed KILLS times, KILL_EVERY_S apart: each slot dies more than
# topology.max_restarts=2 times within topology.restart_window_s=60 (the crash window
# that used to end a `forever` run), in seconds rather than the minutes the defaults take
KILLS = 5
KILL_EVERY_S = 2.0


def test_a_forever_run_outlives_its_workers_killed_more_often_than_any_window_allows(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    first = fill(kafka_bootstrap, topic, 20_000, 4, seed=1)
    with Background(forever(topic, pg_dsn, "topology.workers=2", "batch.max_records=500",
                            "topology.max_restarts=2", "topology.restart_window_s=60",
                            "topology.restart_backoff_max_s=1")) as run:
        run.wait("some rows", lambda: committed_rows(pg_dsn) > 1000)
        killed: set[int] = set()
        fresh: list[int] = []
        for _ in range(KILLS):
            def both_running() -> bool:  # each slot's current worker, restarted and reporting
                pids = ray.get(run.coordinator().worker_pids.remote()).values()
                fresh[:] = [pid for pid in pids if pid not in killed]
                return len(fresh) == 2

            run.wait("both workers back", both_running, timeout=60)
            for pid in fresh:
                os.kill(pid, signal.SIGKILL)
            killed.update(fresh)
            time.sleep(KILL_EVERY_S)
        assert run.thread.is_alive() and run.error is None, "the run gave up"
        second = fill(kafka_bootstrap, topic, 4_000, 4, seed=2)
        good = first.good | second.good
        run.wait("the events after the kills", lambda: committed_rows(pg_dsn) == len(good),
                 timeout=180)
        status = ray.get(run.coordinator().progress.remote())  # what `status` shows
        assert sorted(w["restarts"] for w in status["workers"]) == [KILLS, KILLS]
    summary = run.join()  # stopped as SIGINT stops it: the batches in flight commit
    assert summary.ok
    ids = event_ids(pg_dsn)
    assert len(ids) == len(good) and set(ids) == good
    assert offsets(pg_dsn, topic) == {
        p: first.high_watermarks[p] + second.high_watermarks[p] for p in range(4)}


def test_a_crash_on_the_same_record_again_and_again_stops_its_partition_the_other_goes_on(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    exp = fill(kafka_bootstrap, topic, 6_000, 2, seed=4)
    victim = exp.good_at[(0, 1000)]
    panics = ("+pipeline.transforms=[{_target_: tests.runtime.transforms.panic_on, "
              f"event_id: '{victim}'}}]")
    with pytest.raises(WorkerCrashed) as raised:
        Pipeline(load_config(overrides(topic, pg_dsn, panics, "topology.workers=2",
                                       "batch.max_records=500", "topology.max_restarts=2",
                                       "topology.restart_backoff_max_s=1"))).run()
    summary = raised.value.summary
    stored = offsets(pg_dsn, topic)
    assert stored[1] == exp.high_watermarks[1]  # the other partition went on to its end
    assert stored[0] is not None and stored[0] <= 1000
    [(kind, message)] = summary.errors
    assert kind == "WorkerCrashed"
    assert f"partition 0 stopped at offset {stored[0]}: " in message
    assert f"Panic: cannot take {victim}" in message
    assert "3 times in the last 300s" in message
    first, last = map(int, message.split("holding offsets ")[1].split(":")[0].split(".."))
    assert first == stored[0] <= 1000 <= last
    ids = event_ids(pg_dsn)
    assert len(ids) == len(set(ids)) and set(ids) == exp.good_before(stored)
