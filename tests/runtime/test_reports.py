"""A worker's report is a typed record: its shape fails to build when a field is missing or
mistyped, and it survives the trip across Ray (pickle) and into JSON."""

from __future__ import annotations

import pickle

import msgspec
import pytest

from veltrix_ray.runtime.reports import PartitionReport, WorkerReport

PARTITION = {"committed": 12, "high_watermark": 20, "rows": 10, "dead_letters": 2,
             "records": 12, "reasons": {"decode": 2}, "error": None}
WORKER = {"worker": "veltrix:events:w0.0", "slot": 0, "pid": 4242, "node": "n1",
          "status": "running", "busy_ratio": 0.5, "commit_p95_s": 0.01, "first_data_at": None,
          "rss": 1, "peak_rss": 2, "held_bytes": 0, "budget_bytes": 3, "batches": 4,
          "waiting": None, "latencies": [0.01], "partitions": {3: PARTITION}}


def test_a_missing_field_fails_to_build() -> None:
    fields = {k: v for k, v in PARTITION.items() if k != "records"}
    with pytest.raises(TypeError, match="records"):
        PartitionReport(**fields)  # type: ignore[arg-type]


def test_a_mistyped_field_fails_to_convert_naming_it() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int`, got `str`.*rows"):
        msgspec.convert(WORKER | {"partitions": {3: PARTITION | {"rows": "ten"}}},
                        WorkerReport)


def test_a_report_crosses_pickle_and_json_unchanged() -> None:
    report = msgspec.convert(WORKER, WorkerReport)
    assert report.partitions[3].dead_letters == 2
    assert pickle.loads(pickle.dumps(report)) == report
    assert msgspec.json.decode(msgspec.json.encode(report), type=WorkerReport) == report
    with pytest.raises(AttributeError):
        report.status = "done"  # type: ignore[misc]
