"""Elastic scaling against real services: the sink gate holds when PostgreSQL serialises the
commits, and partitions added to the topic mid-run are consumed without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import ray
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from .helpers import Background, assert_exact, committed_rows, fill, forever

pytestmark = pytest.mark.usefixtures("ray_local")

# every transaction that writes rows takes one lock and holds it 0.1 s: commits are serial,
# so more workers cannot raise the committed rate
SERIALISE = """
CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL, user_id bigint NOT NULL,
    kind text NOT NULL, amount double precision NOT NULL, country text NOT NULL, payload jsonb);
CREATE FUNCTION one_at_a_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(42); PERFORM pg_sleep(0.1); RETURN NULL; END $$;
CREATE TRIGGER one_at_a_time BEFORE INSERT ON events FOR EACH STATEMENT
    EXECUTE FUNCTION one_at_a_time();
"""


def test_the_sink_gate_holds_when_postgresql_is_the_bottleneck(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(8)
    exp = fill(kafka_bootstrap, topic, 300_000, 8, seed=3)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(SERIALISE)
    auto = ["topology.workers=1", "batch.max_records=1000", "topology.autoscale.enabled=true",
            "topology.autoscale.min_workers=1", "topology.autoscale.max_workers=8",
            "topology.autoscale.interval_s=2", "topology.autoscale.stabilise_s=2",
            "topology.autoscale.catch_up_s=5", "topology.autoscale.scale_down_window_s=600"]
    with Background(forever(topic, pg_dsn, *auto)) as run:
        def state() -> dict[str, Any]:
            if run.error is not None:
                raise AssertionError("the run failed") from run.error
            try:
                coordinator = run.coordinator()
            except ValueError:  # not started yet
                return {"changes": []}
            return dict(ray.get(coordinator.progress.remote())["autoscale"])

        run.wait("a sink_bound decision",
                 lambda: any(c["decision"] == "sink_bound" for c in state()["changes"]),
                 timeout=240)
        changes = state()["changes"]
        run.wait("every row", lambda: committed_rows(pg_dsn) == len(exp.good), timeout=300)
        after = state()["changes"]
    run.join()
    ups = [c for c in changes if c["decision"] == "scale_up"]
    gate = next(c for c in changes if c["decision"] == "sink_bound")
    assert ups and ups[0]["workers"] == 1 and gate["target"] < gate["workers"], changes
    assert "scaling out does not pay off (PostgreSQL" in gate["reason"]
    # it held: no climb to the maximum after the gate
    assert all(c["decision"] != "scale_up" for c in after[after.index(gate) + 1:]), after
    assert max(c["target"] for c in after) < 8
    assert_exact(pg_dsn, topic, exp)


def test_partitions_added_mid_run_are_consumed_without_a_restart(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    first = fill(kafka_bootstrap, topic, 4_000, 2, seed=1)
    with Background(forever(topic, pg_dsn, "topology.workers=2",
                            "topology.partition_discovery_s=1")) as run:
        run.wait("the first rows", lambda: committed_rows(pg_dsn) == len(first.good))

        async def grow() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.create_partitions({topic: NewPartitions(total_count=4)})
            finally:
                await admin.close()

        asyncio.run(grow())
        second = fill(kafka_bootstrap, topic, 4_000, 4, seed=2)
        good = first.good | second.good
        run.wait("the rows of the new partitions", lambda: committed_rows(pg_dsn) == len(good),
                 timeout=120)
        progress = ray.get(run.coordinator().progress.remote())
    summary = run.join()
    assert set(progress["partitions"]) == {0, 1, 2, 3}
    assert summary.moves and summary.moves[-1]["why"] == "new partitions"
    exp = first
    exp.good = good
    exp.good_at = {}
    exp.high_watermarks = {p: first.high_watermarks.get(p, 0) + second.high_watermarks.get(p, 0)
                           for p in range(4)}
    assert_exact(pg_dsn, topic, exp)


def test_a_rescale_interrupted_halfway_converges_without_orphaned_partitions(
        kafka_bootstrap: str, pg_dsn: str, new_topic: Callable[[int], str]) -> None:
    topic = new_topic(4)
    first = fill(kafka_bootstrap, topic, 4_000, 4, seed=1)
    with Background(forever(topic, pg_dsn, "topology.workers=2", "postgres.lock_timeout_s=1",
                            "postgres.retry.max_elapsed_s=2")) as run:
        run.wait("the first rows", lambda: committed_rows(pg_dsn) == len(first.good))
        # idle now; an operator's session locks the offsets: the rescale releases partition 3
        # from its owner, then cannot claim it for the new worker and fails halfway
        holder = psycopg.connect(pg_dsn)
        holder.execute("SELECT * FROM veltrix_offsets FOR UPDATE")
        with pytest.raises(Exception, match="lock"):
            run.pipeline.rescale(3)
        holder.rollback()
        holder.close()
        second = fill(kafka_bootstrap, topic, 4_000, 4, seed=2)
        good = first.good | second.good
        run.wait("every row, partition 3's too", lambda: committed_rows(pg_dsn) == len(good),
                 timeout=120)
        progress = ray.get(run.coordinator().progress.remote())
    summary = run.join()
    owners = {p: info["worker"] for p, info in progress["partitions"].items()}
    assert set(owners) == {0, 1, 2, 3} and None not in owners.values(), owners
    assert summary.moves[-1]["why"] == "converge" and summary.moves[-1]["workers"] == 3
    exp = first
    exp.good = good
    exp.high_watermarks = {p: first.high_watermarks[p] + second.high_watermarks[p]
                           for p in range(4)}
    assert_exact(pg_dsn, topic, exp)
