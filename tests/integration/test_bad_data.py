"""Bad data never stops a pipeline: the shipped pipelines on the shipped producer's data,
poison rows the database rejects, a transform that raises on one record. Expected tables are
computed independently from the produced records and compared row by row, column by column."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from veltrix_ray import Pipeline, load_config
from veltrix_ray.produce import generate, partition_for, produce

from .helpers import dead_letters, offsets, overrides
from .test_cli_run import run_cli

pytestmark = pytest.mark.usefixtures("ray_local")


@dataclass
class Sent:
    partition: int
    offset: int
    key: bytes
    value: bytes
    good: bool


def produced(bootstrap: str, topic: str, events: int, partitions: int,
             bad_fraction: float, seed: int = 11) -> list[Sent]:
    """What `veltrix-ray produce` writes, with each record's partition and offset."""
    asyncio.run(produce(bootstrap, topic, events=events, partitions=partitions, seed=seed,
                        bad_fraction=bad_fraction))
    out, next_offset = [], dict.fromkeys(range(partitions), 0)
    for rec in generate(events, seed=seed, bad_fraction=bad_fraction):
        p = partition_for(rec.key, partitions)
        out.append(Sent(p, next_offset[p], rec.key, rec.value, rec.event_id is not None))
        next_offset[p] += 1
    return out


def send(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]],
         log: list[Sent], good: bool) -> None:
    """Append (partition, key, value) records, booking their offsets into `log`."""
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            for p, key, value in records:
                meta = await (await producer.send(topic, value, key=key, partition=p))
                log.append(Sent(p, meta.offset, key, value, good))
        finally:
            await producer.stop()

    asyncio.run(go())


def event_row(value: bytes) -> tuple[Any, ...]:
    e = json.loads(value)
    return (e["event_id"], dt.datetime.fromisoformat(e["ts"]), e["user_id"], e["kind"],
            e["amount"], e["country"], e["payload"])


def latest_per_user(log: list[Sent]) -> dict[int, tuple[Any, ...]]:
    """user_totals, computed independently: the latest good non-refund event per user (a
    user's events share a partition, so partition order is event order)."""
    latest: dict[int, tuple[Any, ...]] = {}
    for s in sorted(log, key=lambda s: (s.partition, s.offset)):
        if not s.good:
            continue
        e = json.loads(s.value)
        if e["kind"] == "refund":
            continue
        latest[e["user_id"]] = (e["user_id"], dt.datetime.fromisoformat(e["ts"]), e["kind"],
                                round(e["amount"] * 100), e["country"], e["event_id"])
    return latest


def table(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def high_watermarks(log: list[Sent]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for s in log:
        ends[s.partition] = max(ends.get(s.partition, 0), s.offset + 1)
    return ends


def test_events_pipeline_on_produced_data_writes_every_good_row_exactly(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    log = produced(kafka_bootstrap, topic, 20_000, 4, bad_fraction=0.01)
    summary = Pipeline(load_config(overrides(topic, pg_dsn))).run()
    rows = table(pg_dsn, "SELECT event_id, ts, user_id, kind, amount, country, payload "
                         "FROM events ORDER BY event_id")
    assert rows == sorted(event_row(s.value) for s in log if s.good)
    assert sorted(dead_letters(pg_dsn)) == sorted((s.partition, s.offset)
                                                  for s in log if not s.good)
    assert offsets(pg_dsn, topic) == high_watermarks(log)
    assert summary.ok and summary.rows == 19_800 and summary.dead_letters == 200


def test_user_totals_on_produced_data_is_the_latest_state_per_user(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    """As a newcomer runs it: the CLI, the shipped pipeline, the shipped producer's data."""
    topic = new_topic(4)
    log = produced(kafka_bootstrap, topic, 30_000, 4, bad_fraction=0.005)
    proc = run_cli(["run", "pipeline=user_totals", f"kafka.topic={topic}",
                    f"postgres.dsn={pg_dsn}", "until=drained"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    rows = table(pg_dsn, "SELECT user_id, last_ts, last_kind, amount_cents, country, "
                         "last_event_id FROM user_latest ORDER BY user_id")
    expected = latest_per_user(log)
    assert len(rows) == len(expected) > 1000
    assert rows == [expected[u] for u in sorted(expected)]
    assert sorted(dead_letters(pg_dsn)) == sorted((s.partition, s.offset)
                                                  for s in log if not s.good)
    assert offsets(pg_dsn, topic) == high_watermarks(log)


EVENTS_TABLE = ("CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL, "
                "user_id bigint NOT NULL, kind text NOT NULL, amount double precision NOT NULL "
                "CHECK (amount < 1e12), country varchar(2) NOT NULL, payload jsonb)")
LATEST_TABLE = ("CREATE TABLE user_latest (user_id bigint PRIMARY KEY, last_ts timestamptz "
                "NOT NULL, last_kind text NOT NULL, amount_cents bigint NOT NULL CHECK "
                "(amount_cents < 100000000), country varchar(2) NOT NULL, last_event_id text "
                "NOT NULL)")


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_poison_rows_are_dead_lettered_and_the_rest_commits(
        mode: str, kafka_bootstrap: str, pg_dsn: str,
        new_topic: Callable[[int], str]) -> None:
    partitions = 4
    topic = new_topic(partitions)
    log = produced(kafka_bootstrap, topic, 4_000, partitions, bad_fraction=0.0)
    # poison: valid JSON events that PostgreSQL (or the decoder on its behalf) refuses,
    # for users that already have good events, in every partition; then more good events
    base = [json.loads(s.value) for s in log[:60] if json.loads(s.value)["kind"] != "refund"]
    assert len({e["user_id"] for e in base[:24]}) == 24
    poison, later = [], []
    sorts: list[dict[str, Any]] = [{"country": "D\u0000E"}, {"country": "DEU"},
                                   {"amount": 1e300 if mode == "append" else 2e6}]
    for i, e in enumerate(base[:12]):
        key = str(e["user_id"]).encode()
        p = partition_for(key, partitions)
        bad = {**e, "event_id": f"poison-{i}", **sorts[i % 3]}
        poison.append((p, key, json.dumps(bad).encode()))
        # append: later events of the same users; upsert: of other users, since only the
        # latest row per key of a batch is written (a superseded row is never judged)
        other = e if mode == "append" else base[12 + i]
        okey = str(other["user_id"]).encode()
        later.append((partition_for(okey, partitions), okey,
                      json.dumps({**other, "event_id": f"later-{i}", "kind": "view"}).encode()))
    assert {p for p, _, _ in poison} == set(range(partitions))
    send(kafka_bootstrap, topic, poison, log, good=False)
    send(kafka_bootstrap, topic, later, log, good=True)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(EVENTS_TABLE if mode == "append" else LATEST_TABLE)
    pipeline = [] if mode == "append" else ["pipeline=user_totals"]
    summary = Pipeline(load_config(overrides(topic, pg_dsn, *pipeline))).run()
    assert summary.ok
    if mode == "append":
        rows = table(pg_dsn, "SELECT event_id, ts, user_id, kind, amount, country, payload "
                             "FROM events ORDER BY event_id")
        assert rows == sorted(event_row(s.value) for s in log if s.good)
    else:
        rows = table(pg_dsn, "SELECT user_id, last_ts, last_kind, amount_cents, country, "
                             "last_event_id FROM user_latest ORDER BY user_id")
        expected = latest_per_user(log)
        assert rows == [expected[u] for u in sorted(expected)]
    dead = table(pg_dsn, 'SELECT partition, "offset", value, error FROM veltrix_dead_letters')
    assert sorted((p, o, bytes(v)) for p, o, v, _ in dead) == sorted(
        (s.partition, s.offset, s.value) for s in log if not s.good)
    errors = {json.loads(bytes(v))["event_id"]: e for _, _, v, e in dead}
    for i in range(12):
        code = ("22021", "22001", "23514")[i % 3]
        assert code in errors[f"poison-{i}"], errors[f"poison-{i}"]
    assert offsets(pg_dsn, topic) == high_watermarks(log)


def test_a_transform_raising_for_one_event_dead_letters_only_that_record(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    log = produced(kafka_bootstrap, topic, 3_000, 2, bad_fraction=0.0)
    victim = log[1234]
    event_id = json.loads(victim.value)["event_id"]
    raising = ("+pipeline.transforms=[{_target_: tests.runtime.transforms.raise_on, "
               f"event_id: '{event_id}'}}]")
    summary = Pipeline(load_config(overrides(topic, pg_dsn, raising))).run()
    ids = {r[0] for r in table(pg_dsn, "SELECT event_id FROM events")}
    assert ids == {json.loads(s.value)["event_id"] for s in log} - {event_id}
    dead = table(pg_dsn, 'SELECT partition, "offset", value, error, reason '
                         "FROM veltrix_dead_letters")
    assert [(p, o, bytes(v)) for p, o, v, _, _ in dead] == [
        (victim.partition, victim.offset, victim.value)]
    assert dead[0][3] == ("pipeline.transforms[0] (raise_on) raised ValueError: "
                          f"cannot take {event_id}")
    assert dead[0][4] == "transform"
    assert summary.ok and summary.dead_letters == 1


def test_a_partition_stopped_by_the_limit_shows_in_the_summary_and_exit_status(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    log: list[Sent] = []
    send(kafka_bootstrap, topic, [(0, b"k", b"{not json") for _ in range(30)], log, good=False)
    send(kafka_bootstrap, topic, [(1, b"k", json.dumps(
        {"event_id": f"e{i}", "ts": "2026-11-26T10:00:00Z", "user_id": i, "kind": "view",
         "amount": 1.5, "country": "DE"}).encode()) for i in range(50)], log, good=True)
    proc = run_cli(["run", f"kafka.topic={topic}", f"postgres.dsn={pg_dsn}", "until=drained",
                    "pipeline.dead_letters.max_consecutive=3", "progress_interval_s=0.2"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    assert "stopped (dead-letter limit)" in out
    assert re.search(r"DeadLetterLimitExceeded: veltrix:events:w0.0: partition 0 stopped at "
                     r"offset \d+: \d+ bad records in a row, over "
                     r"pipeline.dead_letters.max_consecutive=3", out), out
    # at most the tolerated run of bad records committed; the rest of partition 0 waits
    stored = offsets(pg_dsn, topic)
    assert stored[1] == 50 and (stored[0] or 0) <= 3
    assert sorted(dead_letters(pg_dsn)) == [(0, o) for o in range(stored[0] or 0)]
