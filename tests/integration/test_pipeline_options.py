"""Pipeline options end to end: transforms, metadata columns, start positions, errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from veltrix_ray import DeadLetterLimitExceeded, Pipeline, SinkError, TransformError, load_config

from .helpers import dead_letters, event_ids, fill, offsets, overrides

pytestmark = pytest.mark.usefixtures("ray_local")

DIVIDE_BY_ZERO = ("+pipeline.transforms=[{_target_: veltrix_ray.transform.Compute, name: x, "
                  "function: divide, args: [user_id, 0]}]")


def test_kafka_metadata_columns_can_be_written(kafka_bootstrap: str, pg_dsn: str,
                                               new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    exp = fill(kafka_bootstrap, topic, 2000, 4, bad_fraction=0.01)
    select = ("+pipeline.transforms=[{_target_: veltrix_ray.transform.Select, columns: "
              "[event_id], rename: {_kafka_topic: kafka_topic, _kafka_partition: "
              "kafka_partition, _kafka_offset: kafka_offset}}]")
    Pipeline(load_config(overrides(topic, pg_dsn, "pipeline.table=located", select))).run()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT kafka_topic, kafka_partition, kafka_offset, event_id "
                            "FROM located").fetchall()
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'located' "
            "ORDER BY ordinal_position")]
    assert cols == ["event_id", "kafka_topic", "kafka_partition", "kafka_offset"]
    assert {(p, o): e for t, p, o, e in rows if t == topic} == exp.good_at
    assert len(rows) == len(exp.good_at)


def test_a_transform_failing_on_every_record_stops_at_the_dead_letter_limit(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    """A broken deploy stops its partitions instead of emptying the topic into dead letters."""
    topic = new_topic(2)
    fill(kafka_bootstrap, topic, 500, 2, bad_fraction=0.02)
    with pytest.raises(DeadLetterLimitExceeded, match=r"partition 0 stopped at offset \d+: \d+ "
                       r"bad records in a row, over pipeline.dead_letters.max_consecutive=50"):
        Pipeline(load_config(overrides(topic, pg_dsn, DIVIDE_BY_ZERO,
                                       "pipeline.dead_letters.max_consecutive=50"))).run()
    assert event_ids(pg_dsn) == []
    # at most the tolerated run of dead letters (the first, sampling fetch) before the stop
    stored = offsets(pg_dsn, topic)
    assert all((o or 0) <= 50 for o in stored.values()) and set(stored) == {0, 1}
    assert len(dead_letters(pg_dsn)) == sum(o or 0 for o in stored.values())


def test_a_failing_transform_can_stop_the_pipeline(kafka_bootstrap: str, pg_dsn: str,
                                                   new_topic: Callable[[int], str]) -> None:
    topic = new_topic(1)
    fill(kafka_bootstrap, topic, 100, 1)
    with pytest.raises(TransformError, match=r"pipeline.transforms\[0\] \(Compute\) raised "
                                             r"ArrowInvalid: divide by zero \(veltrix:events:"
                                             r"w0.0, partitions \[0\], offsets 0..\d+\).*"
                                             r"pipeline.on_transform_error=dead_letter"):
        Pipeline(load_config(overrides(topic, pg_dsn, DIVIDE_BY_ZERO,
                                       "pipeline.on_transform_error=stop"))).run()
    assert offsets(pg_dsn, topic) == {0: None}


def test_start_latest_and_start_at_a_timestamp(kafka_bootstrap: str, pg_dsn: str,
                                               new_topic: Callable[[int], str]) -> None:
    topic = new_topic(1)
    old_ms, new_ms = 1_000_000, int(time.time() * 1000)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(20):
                event = {"event_id": f"e{i}", "ts": "2026-11-26T10:00:00Z", "user_id": i,
                         "kind": "view", "amount": 0, "country": "DE", "payload": {}}
                await producer.send(topic, json.dumps(event).encode(), partition=0,
                                    timestamp_ms=old_ms if i < 12 else new_ms)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    Pipeline(load_config(overrides(topic, pg_dsn, "kafka.start=latest",
                                   "pipeline.name=from_latest"))).run()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert conn.execute("SELECT next_offset FROM veltrix_offsets WHERE pipeline = "
                            "'from_latest'").fetchone() == (20,)
    Pipeline(load_config(overrides(topic, pg_dsn, "kafka.start='2000-01-01T00:00:00+00:00'",
                                   "pipeline.name=from_2000"))).run()
    assert sorted(event_ids(pg_dsn)) == sorted(f"e{i}" for i in range(12, 20))


def test_a_permanent_postgres_error_stops_with_table_partition_and_offsets(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    """Not a data error of a row (those are dead-lettered): the table refuses every insert."""
    topic = new_topic(1)
    fill(kafka_bootstrap, topic, 300, 1)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL, "
                     "user_id bigint NOT NULL, kind text NOT NULL, amount double precision "
                     "NOT NULL, country text NOT NULL, payload jsonb)")
        conn.execute("CREATE FUNCTION closed() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'events is closed for maintenance'; END $$")
        conn.execute("CREATE TRIGGER closed BEFORE INSERT ON events FOR EACH ROW "
                     "EXECUTE FUNCTION closed()")
    with pytest.raises(SinkError, match=r"(?s)PostgreSQL rejected a batch for public.events "
                                        r"\(partition 0 offsets start..\d+\): RaiseException: "
                                        r"events is closed for maintenance.*not retried"):
        Pipeline(load_config(overrides(topic, pg_dsn))).run()
    assert offsets(pg_dsn, topic) == {0: None}
    assert event_ids(pg_dsn) == []
