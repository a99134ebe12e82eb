"""Service-grade faults: what heals by itself, against the real services."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer

from veltrix_ray import Pipeline, load_config

from .helpers import event_ids, offsets, overrides

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
