import pytest

from veltrix_ray import Pipeline
from veltrix_ray.check.pipeline import validate
from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.schema import DeadLetterConfig, MemoryConfig
from veltrix_ray.config.validate import static_findings
from veltrix_ray.errors import ConfigError, MemoryBudgetExceeded
from veltrix_ray.runtime.budget import MIB, Budget, Watchdog
from veltrix_ray.runtime.deadletters import DeadLetterLimit
from veltrix_ray.runtime.summary import RunSummary

pytestmark = pytest.mark.unit


def test_budget_derives_batch_and_high_water_from_memory() -> None:
    b = Budget.derive(768, MemoryConfig(overhead_mb=256, expansion=12, inflight_batches=3),
                      131_072)
    assert b.budget_bytes == 768 * MIB
    assert b.record_peak_bytes == 12 * 131_072
    assert b.batch_bytes == int((512 * MIB - b.record_peak_bytes) / 36)
    assert b.high_water_bytes == 2 * b.batch_bytes
    # room for the largest batch (its byte cap plus the record that crosses it) under the ceiling
    assert b.headroom_bytes == int(12 * b.batch_bytes) + b.record_peak_bytes
    assert b.rss_high_water_bytes == b.budget_bytes - b.headroom_bytes


@pytest.mark.parametrize("memory_mb", [512, 640])
def test_large_records_lower_the_high_water_mark(memory_mb: int) -> None:
    small = Budget.derive(memory_mb, MemoryConfig(), 131_072)
    large = Budget.derive(memory_mb, MemoryConfig(), 524_288)
    assert large.rss_high_water_bytes < small.rss_high_water_bytes < small.budget_bytes
    assert large.rss_high_water_bytes > MemoryConfig().overhead_mb * MIB


def test_batch_share_falls_from_the_high_water_mark_to_the_largest_record() -> None:
    b = Budget.derive(640, MemoryConfig(), 524_288)
    assert b.share(0) == b.share(b.rss_high_water_bytes) == 1.0
    middle = (b.rss_high_water_bytes + b.budget_bytes - b.record_peak_bytes) // 2
    assert b.share(middle) == pytest.approx(0.5, abs=1e-6)
    assert b.share(b.budget_bytes - b.record_peak_bytes) == 0.0
    assert b.share(b.budget_bytes + MIB) == 0.0


def test_too_small_budget_names_the_key_and_the_minimum() -> None:
    with pytest.raises(ConfigError, match=r"topology.memory_mb=200 .* Raise topology.memory_mb "
                                          r"to at least 262"):
        Budget.derive(200, MemoryConfig(), 131_072)


def test_a_record_larger_than_the_headroom_is_refused_before_launch() -> None:
    """Static validation, which `run` and `check` both apply, names both keys."""
    s = to_settings(load_config(["kafka.topic=t", "topology.memory_mb=300",
                                 "pipeline.max_record_bytes=5000000"]))
    errors = [f for f in static_findings(s) if f.level == "error"]
    assert [f.key for f in errors] == ["pipeline.max_record_bytes"]
    assert "topology.memory_mb=300" in errors[0].message
    assert "lower pipeline.max_record_bytes to at most" in errors[0].message
    assert "raise topology.memory_mb to at least" in errors[0].message
    with pytest.raises(ConfigError, match=r"pipeline.max_record_bytes.*topology.memory_mb"):
        validate(s)
    with pytest.raises(ConfigError, match=r"pipeline.max_record_bytes.*topology.memory_mb"):
        Pipeline(s)  # `run` refuses it before launch, as `check` does: no Ray is started
    fits = to_settings(load_config(["kafka.topic=t", "topology.memory_mb=640",
                                    "pipeline.max_record_bytes=524288"]))
    assert not [f for f in static_findings(fits) if f.level == "error"]


def test_watchdog_message_names_actor_partitions_budget_and_keys() -> None:
    dog = Watchdog(Budget.derive(300, MemoryConfig(), 131_072), "veltrix:p:w0.0", [3, 4])
    with pytest.raises(MemoryBudgetExceeded, match=r"veltrix:p:w0.0 \(partitions \[3, 4\]\) "
                                                    r"uses 400 MiB resident, over its budget "
                                                    r"of 300 MiB \(topology.memory_mb\), with "
                                                    r"no batch in flight.*down to 1 "
                                                    r"record\(s\). Raise topology.memory_mb"):
        raise dog.exceeded(400 * MIB, 1)


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


def test_the_summary_shows_each_peak_against_its_budget_and_warns_once_on_a_breach() -> None:
    def worker(name: str, peak_mb: int) -> dict[str, object]:
        return {"worker": name, "peak_rss": peak_mb * MIB, "budget_bytes": 512 * MIB,
                "batches": 9, "restarts": 0}

    table = RunSummary("p", "t", 1.0, {}, [worker("w0", 455), worker("w1", 530)]).table()
    assert "worker w0: peak RSS 455 MiB of 512 MiB budget" in table
    assert "worker w1: peak RSS 530 MiB of 512 MiB budget" in table
    warnings = [line for line in table.splitlines() if line.startswith("warning")]
    assert warnings == ["warning: worker w1 went over its memory budget (topology.memory_mb): "
                        "see its peak RSS above"]
