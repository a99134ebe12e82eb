"""The memory budget is a ceiling, not a target (issue 23): large records that compress well
bring many times the fetch size once decompressed, and every worker's peak RSS still stays
under topology.memory_mb, with the rows exact."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from veltrix_ray import Pipeline, load_config
from veltrix_ray.config.budget import MIB

from .helpers import Expected, assert_exact, fill, overrides

pytestmark = pytest.mark.usefixtures("ray_local")

# issue 23's records: ~400 KiB standard events, 1 MiB producer batches, 4 partitions. Fewer
# events than its 6,000: each worker still does well over the batches that took its RSS past
# the budget before (a batch's footprint, which drives the peak, is the same)
EVENTS = 1_600
PARTITIONS = 4
PAYLOAD_BYTES = 400 * 1024
BATCH_BYTES = 2**20
MAX_RECORD_BYTES = 524_288

Topics = Callable[[str], tuple[str, Expected]]


@pytest.fixture(scope="module")
def topics(kafka_bootstrap: str) -> Topics:
    """One filled topic per codec, shared by the budgets."""
    made: dict[str, tuple[str, Expected]] = {}

    def topic(codec: str) -> tuple[str, Expected]:
        if codec not in made:
            name = f"t-memory-{codec}-{uuid.uuid4().hex[:8]}"
            made[codec] = name, fill(kafka_bootstrap, name, EVENTS, PARTITIONS,
                                     payload_bytes=PAYLOAD_BYTES, compression=codec,
                                     batch_bytes=BATCH_BYTES)
        return made[codec]

    return topic


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("memory_mb", [512, 640])
def test_peak_rss_stays_under_the_budget_on_large_compressed_records(
        topics: Topics, pg_dsn: str, codec: str, memory_mb: int) -> None:
    topic, expected = topics(codec)
    summary = Pipeline(load_config(overrides(
        topic, pg_dsn, "pipeline=events", "topology.workers=2",
        f"topology.memory_mb={memory_mb}", f"pipeline.max_record_bytes={MAX_RECORD_BYTES}"
    ))).run()
    assert summary.ok, summary.errors
    assert_exact(pg_dsn, topic, expected)
    assert len(summary.workers) == 2
    for worker in summary.workers:
        assert worker["budget_bytes"] == memory_mb * MIB
        assert 0 < worker["peak_rss"] <= memory_mb * MIB, summary.table()
    assert "over its memory budget" not in summary.table()
