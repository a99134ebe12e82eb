"""The exactly-once pipeline against real Kafka, PostgreSQL and Ray (no mocks)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
import ray
from aiokafka import AIOKafkaProducer

from veltrix_ray import (
    DeadLetterLimitExceeded,
    FencedError,
    MemoryBudgetExceeded,
    Pipeline,
    VeltrixError,
    load_config,
)
from veltrix_ray.contracts import Advance, WriteBatch
from veltrix_ray.local.kafka import KafkaBroker
from veltrix_ray.local.postgres import LocalPostgres
from veltrix_ray.local.procs import free_port
from veltrix_ray.sink import PostgresSink
from veltrix_ray.source.admin import ensure_topic

from .helpers import (
    Background,
    assert_exact,
    committed_rows,
    event_ids,
    fill,
    forever,
    offsets,
    overrides,
)

pytestmark = pytest.mark.usefixtures("ray_local")


def moved_partitions(move: dict[str, object]) -> list[int]:
    """Every partition of a rescale's partition sets, in order."""
    sets = move["sets"]
    assert isinstance(sets, list)
    return sorted(p for s in sets for p in s)


def test_exact_rows_dead_letters_and_offsets(kafka_bootstrap: str, pg_dsn: str,
                                             new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 12_000, 8, bad_fraction=0.02)
    assert len(exp.bad) == 240
    summary = Pipeline(load_config(overrides(topic, pg_dsn, "topology.workers=2",
                                             "batch.max_records=1000"))).run()
    assert_exact(pg_dsn, topic, exp)
    assert summary.rows == len(exp.good)
    assert summary.dead_letters == len(exp.bad)
    assert {p: i["committed"] for p, i in summary.partitions.items()} == exp.high_watermarks
    with psycopg.connect(pg_dsn) as conn:
        errors = {e for (e,) in conn.execute("SELECT error FROM veltrix_dead_letters")}
        raw = conn.execute("SELECT value FROM veltrix_dead_letters WHERE error LIKE "
                           "'%%not valid UTF-8%%' LIMIT 1").fetchone()
    assert any("Object missing required field" in e for e in errors)
    assert any("exceeds pipeline.max_record_bytes=" in e for e in errors)
    assert any(e.startswith("DecodeError: ") for e in errors)
    assert raw is not None and bytes(raw[0])  # raw bytes are kept as they came


def test_killed_workers_lose_and_duplicate_nothing(kafka_bootstrap: str, pg_dsn: str,
                                                   new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 30_000, 8, bad_fraction=0.01)
    killed: list[int] = []

    def live_pids() -> list[int]:
        pids = ray.get(run.coordinator().worker_pids.remote()).values()
        return sorted(p for p in pids if p not in killed)

    with Background(overrides(topic, pg_dsn, "topology.workers=2", "batch.max_records=300",
                              "topology.max_restarts=10")) as run:
        for round_ in range(3):
            def committed(r: int = round_) -> bool:
                return committed_rows(pg_dsn) > 3000 * (r + 1)

            run.wait("rows to commit", committed)
            run.wait("a live worker", lambda: bool(live_pids()))
            pid = live_pids()[round_ % 2 if len(live_pids()) > 1 else 0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        summary = run.join()
    assert len(killed) == 3
    assert sum(w["restarts"] for w in summary.workers) >= 3
    assert_exact(pg_dsn, topic, exp)
    # the summary counts what PostgreSQL holds, also for what the killed workers committed
    assert (summary.rows, summary.dead_letters) == (len(exp.good), len(exp.bad))


def test_stale_owner_is_fenced_and_writes_nothing(pg_dsn: str) -> None:
    schema = pa.schema([pa.field("event_id", pa.string(), nullable=False)])
    sink = PostgresSink(pg_dsn, db_schema="public", table="events", pipeline="p", topic="t")
    try:
        sink.setup(schema)
        stale = sink.claim([0])[0]
        owner = sink.claim([0])[0]
        assert owner.epoch == stale.epoch + 1
        batch = pa.RecordBatch.from_pylist([{"event_id": "a"}, {"event_id": "b"}], schema)
        with pytest.raises(FencedError, match=r"partition\(s\) 0 \(epoch 1\) now belong to a "
                                              r"newer owner"):
            sink.write(WriteBatch(batch, [], [Advance(0, None, 2, stale.epoch)]))
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
            assert conn.execute("SELECT next_offset, owner_epoch FROM veltrix_offsets"
                                ).fetchone() == (None, 2)
        sink.write(WriteBatch(batch, [], [Advance(0, None, 2, owner.epoch)]))
        with pytest.raises(FencedError):  # a replay of the same batch by the stale owner
            sink.write(WriteBatch(batch, [], [Advance(0, 2, 4, stale.epoch)]))
        with psycopg.connect(pg_dsn) as conn:
            assert sorted(r[0] for r in conn.execute("SELECT event_id FROM events")) == ["a", "b"]
            assert conn.execute("SELECT next_offset FROM veltrix_offsets").fetchone() == (2,)
    finally:
        sink.close()


def test_stop_halfway_then_restart_continues_exactly(kafka_bootstrap: str, pg_dsn: str,
                                                      new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 20_000, 8, bad_fraction=0.01)
    over = overrides(topic, pg_dsn, "topology.workers=2", "batch.max_records=200")
    with Background(over) as run:
        run.wait("some rows", lambda: committed_rows(pg_dsn) > 2000)
        run.pipeline.stop()
        first = run.join()
    stored = offsets(pg_dsn, topic)
    assert sum(v or 0 for v in stored.values()) < sum(exp.high_watermarks.values()), \
        "the stop came too late to test a restart"
    assert first.rows == committed_rows(pg_dsn)
    Pipeline(load_config(over)).run()
    assert_exact(pg_dsn, topic, exp)


def test_stop_asked_during_the_start_ends_the_run(kafka_bootstrap: str, pg_dsn: str,
                                                  new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 20_000, 8, bad_fraction=0.01)
    with Background(forever(topic, pg_dsn, "topology.workers=4",
                            "batch.max_records=200")) as run:
        run.wait("the coordinator", lambda: run.pipeline._coordinator is not None)
        run.pipeline.stop()  # while the first workers are still being handed their partitions
        with pytest.raises(VeltrixError, match="stopping"):
            run.pipeline.rescale(2)
        summary = run.join(timeout=120)  # a `forever` run: only the stop ends it
    assert summary.errors == []
    stored = offsets(pg_dsn, topic)
    assert sorted(event_ids(pg_dsn)) == sorted(exp.good_before(stored))  # each row once


def test_upsert_keeps_the_latest_value_per_key(kafka_bootstrap: str, pg_dsn: str,
                                              new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    events: list[dict[str, Any]] = []
    for i in range(400):
        user = i % 23
        kind = "refund" if i % 10 == 9 else ("view", "click", "purchase")[i % 3]
        events.append({"event_id": f"e{i}", "ts": f"2026-11-26T10:{i // 60:02d}:{i % 60:02d}Z",
                       "user_id": user, "kind": kind, "amount": i + 0.25, "country": "DE",
                       "payload": {"i": i}})

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for e in events:
                await producer.send(topic, json.dumps(e).encode(), key=str(e["user_id"]).encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    latest = {}
    for e in events:
        if e["kind"] != "refund":
            latest[e["user_id"]] = e
    Pipeline(load_config(overrides(topic, pg_dsn, "pipeline=user_totals",
                                   "batch.max_records=7"))).run()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT user_id, last_event_id, last_kind, amount_cents "
                            "FROM user_latest ORDER BY user_id").fetchall()
    assert rows == [(u, e["event_id"], e["kind"], int(e["amount"] * 100))
                    for u, e in sorted(latest.items())]


def test_memory_budget_is_enforced_with_a_clear_error(kafka_bootstrap: str, pg_dsn: str,
                                                      new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    big = json.dumps({"event_id": "x", "ts": "2026-11-26T10:00:00Z", "user_id": 1,
                      "kind": "view", "amount": 1.0, "country": "DE",
                      "payload": {"blob": "x" * 100_000}}).encode()

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2**21)
        await producer.start()
        try:
            for i in range(200):
                await producer.send(topic, big.replace(b'"x"', f'"big{i}"'.encode(), 1),
                                    key=str(i).encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    tiny = overrides(topic, pg_dsn, "topology.memory_mb=120", "topology.memory.overhead_mb=40",
                     "pipeline.max_record_bytes=200000")
    with pytest.raises(MemoryBudgetExceeded, match=r"veltrix:events:w\d\.0 \(partitions \[\d\]\) "
                                                    r"uses \d+ MiB resident, over its budget of "
                                                    r"120 MiB \(topology.memory_mb\).*Raise "
                                                    r"topology.memory_mb"):
        Pipeline(load_config(tiny)).run()
    summary = Pipeline(load_config(overrides(topic, pg_dsn, "topology.memory_mb=768",
                                             "pipeline.max_record_bytes=200000"))).run()
    # the tiny budget committed what it could before failing; the rerun does the rest
    assert sorted(event_ids(pg_dsn)) == sorted(f"big{i}" for i in range(200))
    for worker in summary.workers:
        assert 0 < worker["peak_rss"] < 768 * 2**20


def test_dead_letter_limit_stops_only_the_garbage_partition(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    good = {p: [json.dumps({"event_id": f"p{p}-{i}", "ts": "2026-11-26T10:00:00+01:00",
                            "user_id": i, "kind": "view", "amount": 1, "country": "FR",
                            "payload": None}).encode() for i in range(50)] for p in (1, 2, 3)}

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(300):
                await producer.send(topic, b"\x00garbage" + bytes([i % 256]), partition=0)
            for p, values in good.items():
                for v in values:
                    await producer.send(topic, v, partition=p)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    with pytest.raises(DeadLetterLimitExceeded, match=r"partition 0 stopped at offset (\d+): "
                                                       r"\d+ bad records in a row, over pipeline."
                                                       r"dead_letters.max_consecutive=50") as info:
        Pipeline(load_config(overrides(topic, pg_dsn, "topology.workers=2",
                                       "pipeline.dead_letters.max_consecutive=50"))).run()
    with psycopg.connect(pg_dsn) as conn:
        ids = {r[0] for r in conn.execute("SELECT event_id FROM events")}
        dead = conn.execute("SELECT count(*) FROM veltrix_dead_letters").fetchone()
    assert ids == {f"p{p}-{i}" for p in (1, 2, 3) for i in range(50)}
    # no more than the tolerated run of bad records committed before the stop
    found = re.search(r"stopped at offset (\d+)", str(info.value))
    assert found is not None
    stopped_at = int(found.group(1))
    assert stopped_at <= 50 and dead == (stopped_at,)
    assert offsets(pg_dsn, topic) == {0: stopped_at or None, 1: 50, 2: 50, 3: 50}


def test_postgres_restart_mid_run_is_retried_exactly(kafka_bootstrap: str, service_dir: Path,
                                                     new_topic: Callable[[int], str]) -> None:
    pg = LocalPostgres(service_dir / "pg", free_port())
    pg.start()
    try:
        topic = new_topic(8)
        exp = fill(kafka_bootstrap, topic, 20_000, 8, bad_fraction=0.01)
        with Background(overrides(topic, pg.dsn, "topology.workers=2", "batch.max_records=200",
                                  "postgres.retry.max_backoff_s=1")) as run:
            run.wait("some rows", lambda: committed_rows(pg.dsn) > 2000)
            pg.stop()
            time.sleep(2)
            pg.start()
            summary = run.join()
        assert (summary.rows, summary.dead_letters) == (len(exp.good), len(exp.bad))
        assert committed_rows(pg.dsn) == len(exp.good)
        assert_exact(pg.dsn, topic, exp)
    finally:
        pg.stop()


def test_stored_offset_out_of_range_names_partition_offset_and_fix(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(1)
    fill(kafka_bootstrap, topic, 100, 1)
    over = overrides(topic, pg_dsn)
    Pipeline(load_config(over)).run()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("UPDATE veltrix_offsets SET next_offset = 1000000")
    run_on = forever(topic, pg_dsn)
    with pytest.raises(VeltrixError, match=r"veltrix:events:w0.\d failed \(partition 0 at "
                                           r"offset 1000000\): OffsetOutOfRangeError.*"
                                           r"`veltrix-ray reset-offsets --to earliest`"):
        Pipeline(load_config(run_on)).run()


def test_rescale_mid_run_moves_few_partitions_and_stays_exact(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 60_000, 8, bad_fraction=0.01)
    # forever: no worker finishes (drains) during the rescales
    with Background(forever(topic, pg_dsn, "topology.workers=2",
                            "batch.max_records=200")) as run:
        run.wait("some rows", lambda: committed_rows(pg_dsn) > 2000)
        up = run.pipeline.rescale(4)
        assert up["moved"] == 4  # each of the 2 old workers hands over 2 of its 4
        assert moved_partitions(up) == list(range(8))
        down = run.pipeline.rescale(3)
        assert down["moved"] == 2  # the 4th set's 2 partitions move
        events = ray.get(run.coordinator().progress.remote())["events"]
        run.wait("every row", lambda: committed_rows(pg_dsn) == len(exp.good))
    summary = run.join()
    # make before break: each moved partition's new owner was ready before the old one let go
    ready: dict[int, float] = {}
    released: dict[int, float] = {}
    acquired = []
    for e in events:  # in order
        if e["event"] == "ready":
            ready[e["worker"]] = e["at"]
        for p in e["partitions"] if e["event"] == "released" else []:
            released[p] = e["at"]
        for p in e["partitions"] if e["event"] == "acquired" else []:
            if p not in released:  # the start: the first workers take their partitions
                continue
            acquired.append(p)
            assert ready[e["worker"]] < released.pop(p), (p, events)
    assert sorted(acquired) == [2, 3, 6, 6, 7, 7], events
    assert [m["workers"] for m in summary.moves] == [4, 3]
    assert summary.rows == len(exp.good) and summary.dead_letters == len(exp.bad), summary.table()
    assert_exact(pg_dsn, topic, exp)


def test_rescale_asked_at_the_start_waits_for_it_and_names_are_never_reused(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 20_000, 8, bad_fraction=0.01)
    with Background(forever(topic, pg_dsn, "topology.workers=2",
                            "batch.max_records=200")) as run:
        run.wait("the coordinator", lambda: run.pipeline._coordinator is not None)
        # asked while the first workers are still being handed their partitions
        assert run.pipeline.rescale(4)["moved"] == 4
        assert run.pipeline.rescale(2)["moved"] == 4
        again = run.pipeline.rescale(4)  # partition sets 2 and 3 again, with new workers
        assert moved_partitions(again) == list(range(8))

        def new_names() -> list[str]:
            workers = ray.get(run.coordinator().progress.remote())["workers"]
            return sorted(w["worker"] for w in workers if w["slot"] in (2, 3))

        run.wait("the new workers' reports", lambda: len(new_names()) == 2)
        assert new_names() == ["veltrix:events:w2.1", "veltrix:events:w3.1"]
        run.wait("every row", lambda: committed_rows(pg_dsn) == len(exp.good))
    summary = run.join()
    assert [m["workers"] for m in summary.moves] == [4, 2, 4]
    assert summary.rows == len(exp.good) and summary.dead_letters == len(exp.bad), summary.table()
    assert_exact(pg_dsn, topic, exp)
    # run() returns once Ray has removed the run's actors: the next run may take the names
    left = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("veltrix:events")]
    assert left == []


def test_kafka_restart_mid_run_resumes_exactly(service_dir: Path, pg_dsn: str) -> None:
    broker = KafkaBroker(service_dir / "kafka", free_port(), free_port())
    broker.start()
    try:
        topic = "restarted"
        asyncio.run(ensure_topic(broker.bootstrap, topic, 4))
        exp = fill(broker.bootstrap, topic, 20_000, 4, bad_fraction=0.01)
        with Background(overrides(topic, pg_dsn, f"kafka.bootstrap={broker.bootstrap}",
                                  "topology.workers=2", "batch.max_records=200")) as run:
            run.wait("some rows", lambda: committed_rows(pg_dsn) > 2000)
            broker.stop()
            time.sleep(2)
            broker.start()
            summary = run.join()
        assert (summary.rows, summary.dead_letters) == (len(exp.good), len(exp.bad))
        assert_exact(pg_dsn, topic, exp)
    finally:
        broker.stop()
