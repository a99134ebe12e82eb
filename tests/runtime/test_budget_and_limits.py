import pytest

from veltrix_ray.config.schema import DeadLetterConfig, MemoryConfig
from veltrix_ray.errors import ConfigError, MemoryBudgetExceeded
from veltrix_ray.runtime.budget import MIB, Budget, Watchdog
from veltrix_ray.runtime.deadletters import DeadLetterLimit

pytestmark = pytest.mark.unit


def test_budget_derives_batch_and_high_water_from_memory() -> None:
    b = Budget.derive(768, MemoryConfig(overhead_mb=256, expansion=12, inflight_batches=3))
    assert b.budget_bytes == 768 * MIB
    assert b.batch_bytes == int(512 * MIB / 36)
    assert b.high_water_bytes == 2 * b.batch_bytes


def test_too_small_budget_names_the_key_and_the_minimum() -> None:
    with pytest.raises(ConfigError, match=r"topology.memory_mb=200 .* Raise topology.memory_mb "
                                          r"to at least 259"):
        Budget.derive(200, MemoryConfig())


def test_watchdog_message_names_actor_partitions_budget_and_keys() -> None:
    dog = Watchdog(Budget(1 * MIB, 64 * 1024, 128 * 1024), "veltrix:p:w0.0", [3, 4])
    rss = dog.over()
    assert rss is not None
    with pytest.raises(MemoryBudgetExceeded, match=r"veltrix:p:w0.0 \(partitions \[3, 4\]\) "
                                                    r"uses \d+ MiB resident, over its budget of "
                                                    r"1 MiB \(topology.memory_mb\), even with "
                                                    r"batches cut to 1 record\(s\).*Raise "
                                                    r"topology.memory_mb"):
        raise dog.exceeded(rss, 0, 1)


def test_consecutive_bad_records_across_batches() -> None:
    limit = DeadLetterLimit(DeadLetterConfig(max_ratio=1.0, window=10**6, max_consecutive=5))
    assert limit.observe(4, [1, 2, 3]) is None  # a run of 3 reaching the batch's end
    why = limit.observe(3, [0, 1, 2])  # continues: 6 in a row
    assert why is not None and "6 bad records in a row" in why
    fresh = DeadLetterLimit(DeadLetterConfig(max_ratio=1.0, window=10**6, max_consecutive=5))
    assert fresh.observe(4, [1, 2, 3]) is None
    assert fresh.observe(3, [1, 2]) is None  # a good record broke the run


def test_ratio_over_a_window() -> None:
    limit = DeadLetterLimit(DeadLetterConfig(max_ratio=0.5, window=10, max_consecutive=100))
    assert limit.observe(6, [0, 2, 4]) is None  # below the window: not judged yet
    why = limit.observe(6, [0, 2, 4, 5])
    assert why is not None and "7 of the last 12 records were bad" in why
