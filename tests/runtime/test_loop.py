"""The worker loop with in-memory fakes of the source and the sink: rows, dead letters,
offsets and the defects found in this area, each pinned by a test."""

from __future__ import annotations

import pytest

from veltrix_ray.errors import ConfigError, MemoryBudgetExceeded, TransformError
from veltrix_ray.runtime.summary import RunSummary

from .fakes import FakeSink, FakeSource, event, run_loop, settings

pytestmark = pytest.mark.unit

RAISE_ON_E7 = ("+pipeline.transforms=[{_target_: tests.runtime.transforms.raise_on, "
               "event_id: e7}]")


def test_clean_logs_become_rows_and_offsets() -> None:
    logs = {p: [(b"k", event(p * 100 + i)) for i in range(50)] for p in range(3)}
    sink = FakeSink()
    loop = run_loop(settings("batch.max_records=40"), FakeSource(logs), sink)
    assert sorted(r["event_id"] for r in sink.rows) == sorted(
        f"e{p * 100 + i}" for p in range(3) for i in range(50))
    assert sink.offsets == {0: 50, 1: 50, 2: 50}
    assert sink.dead == []
    assert {p: st.rows for p, st in loop.states.items()} == {0: 50, 1: 50, 2: 50}


def test_a_transform_raising_on_one_record_dead_letters_only_that_record() -> None:
    logs = {0: [(b"k", event(i)) for i in range(20)]}
    sink = FakeSink()
    run_loop(settings(RAISE_ON_E7), FakeSource(logs), sink)
    assert sorted(r["event_id"] for r in sink.rows) == sorted(
        f"e{i}" for i in range(20) if i != 7)
    assert [(d.partition, d.offset, d.value) for d in sink.dead] == [(0, 7, event(7))]
    assert sink.dead[0].reason == "transform"
    assert sink.dead[0].error.startswith("pipeline.transforms[0] (raise_on) raised "
                                         "ValueError: cannot take e7")
    assert sink.offsets == {0: 20}


def test_on_transform_error_stop_names_the_transform_and_the_key() -> None:
    logs = {0: [(b"k", event(i)) for i in range(20)]}
    with pytest.raises(TransformError, match=r"pipeline.transforms\[0\] \(raise_on\) raised "
                       r"ValueError: cannot take e7 \(w0, partitions \[0\], offsets 0..9\)"
                       r".*pipeline.on_transform_error=dead_letter"):
        run_loop(settings(RAISE_ON_E7, "pipeline.on_transform_error=stop"),
                 FakeSource(logs), FakeSink())


def test_limit_stop_and_transform_error_in_one_batch_keep_raw_bytes_with_their_offsets() -> None:
    # partition 0: broken producer (trips the limit); partition 1: e7 makes a transform raise
    logs = {0: [(b"k", b"{broken") for _ in range(10)],
            1: [(b"k", event(i)) for i in range(10)]}
    sink = FakeSink()
    loop = run_loop(settings(RAISE_ON_E7, "pipeline.dead_letters.max_consecutive=5"),
                    FakeSource(logs), sink)
    assert [(d.partition, d.offset, d.value) for d in sink.dead] == [(1, 7, event(7))]
    assert sorted(r["event_id"] for r in sink.rows) == sorted(
        f"e{i}" for i in range(10) if i != 7)
    assert sink.offsets == {1: 10}  # partition 0 never committed
    assert loop.states[0].stopped and "max_consecutive=5" in loop.states[0].stopped


def test_transform_dead_letters_count_toward_the_limit() -> None:
    logs = {0: [(b"k", event(i, amount=-1.0)) for i in range(30)]}
    sink = FakeSink()
    loop = run_loop(settings("+pipeline.transforms=[{_target_: "
                             "tests.runtime.transforms.reject_negative}]",
                             "pipeline.dead_letters.max_consecutive=5"),
                    FakeSource(logs), sink)
    assert loop.states[0].stopped is not None
    assert "10 bad records in a row, over pipeline.dead_letters.max_consecutive=5" in \
        loop.states[0].stopped
    assert sink.rows == [] and sink.dead == [] and sink.offsets == {}


def test_a_stopped_partition_stays_stopped_in_a_restarted_worker() -> None:
    logs = {0: [(b"k", event(i)) for i in range(5)], 1: [(b"k", event(10 + i))
                                                         for i in range(5)]}
    source = FakeSource(logs)
    sink = FakeSink()
    loop = run_loop(settings(), source, sink, stopped={0: "w0: partition 0 stopped ..."})
    assert all(0 not in ps for ps in source.fetched_partitions)
    assert sink.offsets == {1: 5}
    assert loop.reports()[0].error == "w0: partition 0 stopped ..."


def test_one_inflight_batch_commits_one_at_a_time_without_spinning() -> None:
    logs = {p: [(b"k", event(p * 1000 + i)) for i in range(200)] for p in range(2)}
    sink = FakeSink(delay_s=0.01)
    run_loop(settings("topology.memory.inflight_batches=1", "batch.max_records=25"),
             FakeSource(logs), sink, timeout=20)
    assert len(sink.rows) == 400
    assert sink.max_concurrent == 1
    assert sink.writes >= 16


@pytest.mark.parametrize("key,value", [("inflight_batches", 0), ("expansion", 0)])
def test_memory_settings_that_cannot_work_fail_naming_the_key(key: str, value: int) -> None:
    from veltrix_ray.check.pipeline import validate

    with pytest.raises(ConfigError, match=rf"topology.memory.{key}={value} must be"):
        validate(settings(f"topology.memory.{key}={value}"))


def test_rows_the_database_rejects_are_counted_as_dead_letters() -> None:
    logs = {0: [(b"k", event(i, country="DEU" if i == 3 else "DE")) for i in range(10)]}
    sink = FakeSink(reject=lambda row: "22001 value too long" if row["country"] == "DEU"
                    else None)
    loop = run_loop(settings(), FakeSource(logs), sink)
    assert [(d.partition, d.offset, d.value, d.reason) for d in sink.dead] == [
        (0, 3, logs[0][3][1], "sink")]
    assert (loop.states[0].rows, loop.states[0].dead_letters) == (9, 1)


def test_tombstones_are_skipped_not_dead_lettered() -> None:
    logs = {0: [(b"k", None if i % 2 else event(i)) for i in range(40)]}
    sink = FakeSink()
    loop = run_loop(settings("pipeline.dead_letters.max_consecutive=1"), FakeSource(logs), sink)
    assert len(sink.rows) == 20
    assert sink.dead == []
    assert sink.offsets == {0: 40}
    assert loop.states[0].stopped is None


def test_live_line_and_summary_show_a_stopped_partition() -> None:
    why = "w0: partition 3 stopped at offset 10: 501 bad records in a row"
    summary = RunSummary("p", "t", 1.0, {
        3: {"worker": 0, "committed": 10, "high_watermark": 900, "rows": 10,
            "dead_letters": 0, "error": why},
        4: {"worker": 0, "committed": 900, "high_watermark": 900, "rows": 900,
            "dead_letters": 0, "error": None}}, [])
    assert "STOPPED partitions [3]" in summary.line()
    assert "stopped (dead-letter limit)" in summary.table()
    summary.workers = [{"worker": "w0", "waiting": "partitions [4] wait for backend 42 (psql, "
                                                   "idle in transaction for 9s)"}]
    assert "WAITING w0: partitions [4] wait for backend 42" in summary.line()


def test_above_the_high_water_mark_batches_shrink_to_the_room_left_one_in_flight() -> None:
    logs = {0: [(b"k", event(i)) for i in range(30)]}
    sink = FakeSink()
    # under the ceiling, but with room for no more than the largest record
    loop = run_loop(settings("batch.max_records=100"), FakeSource(logs), sink, breaches=-1,
                    resident=lambda b: b.budget_bytes - b.record_peak_bytes)
    assert len(sink.rows) == 30 and sink.offsets == {0: 30} and sink.writes == 30
    assert loop.degraded and loop.max_records == 1
    assert sink.max_concurrent == 1 and loop.watchdog.breached is False


def test_back_under_the_high_water_mark_batches_grow_again() -> None:
    logs = {0: [(b"k", event(i)) for i in range(300)]}
    sink = FakeSink()
    loop = run_loop(settings("batch.max_records=100"), FakeSource(logs), sink, breaches=4,
                    resident=lambda b: b.budget_bytes - b.record_peak_bytes)
    assert len(sink.rows) == 300 and not loop.degraded and loop.max_records == 100


def test_over_budget_with_no_batch_in_flight_fails_naming_the_keys(
        caplog: pytest.LogCaptureFixture) -> None:
    logs = {0: [(b"k", event(i)) for i in range(300)]}
    with pytest.raises(MemoryBudgetExceeded, match=r"over its budget of \d+ MiB "
                                                    r"\(topology.memory_mb\).*topology.memory_mb"):
        run_loop(settings("batch.max_records=100"), FakeSource(logs), FakeSink(), breaches=-1)
    breaches = [r for r in caplog.records if "went over its" in r.getMessage()]
    assert len(breaches) == 1 and "w0" in breaches[0].getMessage()


def test_large_decompressed_records_shrink_the_batch_to_the_byte_cap() -> None:
    blob = "x" * 200_000
    logs = {0: [(b"k", event(i, payload={"blob": blob})) for i in range(40)]}
    sink = FakeSink()
    # a budget far above this process's RSS, with a small byte cap
    loop = run_loop(settings("topology.memory_mb=100000", "topology.memory.overhead_mb=99950",
                             "pipeline.max_record_bytes=300000"), FakeSource(logs), sink)
    assert len(sink.rows) == 40
    assert loop.max_records * 200_000 <= loop.budget.batch_bytes
