"""Decoding: valid encodings a producer may send are accepted, the rest isolated."""

import pyarrow as pa
import pytest

from veltrix_ray.batch import Column, Decoder
from veltrix_ray.contracts import Fetched

pytestmark = pytest.mark.unit

COLS = [Column("id", "string", False), Column("ts", "timestamp", False),
        Column("n", "int64", False), Column("x", "float64", True), Column("ok", "bool", True),
        Column("day", "date", True), Column("doc", "json", True)]


def fetch(values: list[bytes | None]) -> Fetched:
    n = len(values)
    return Fetched([0] * n, list(range(10, 10 + n)), [b"k"] * n, values, [0] * n)


def test_valid_encodings_decode_to_typed_columns() -> None:
    out = Decoder(COLS, 1000).decode(fetch([
        b'{"id":"a","ts":"2026-11-26T12:00:00+02:00","n":1,"x":2,"ok":true,'
        b'"day":"2026-11-26","doc":{"k":[1,2]}}',
        b'\xef\xbb\xbf{"id":"b","ts":"2026-11-26T10:00:00.5Z","n":-3, "extra": 1}',
        b'{\n  "id": "c",\n  "ts": "2026-11-26T10:00:00Z",\n  "n": 9,\n  "doc": null\n}',
    ]))
    assert out.bad == []
    rows = out.batch.to_pylist()
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["ts"] == rows[1]["ts"].replace(microsecond=0)  # both 10:00 UTC
    assert rows[0]["x"] == 2.0 and rows[1]["x"] is None
    assert rows[0]["doc"] == '{"k":[1,2]}' and rows[2]["doc"] is None
    assert out.batch.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert out.batch.column("_kafka_offset").to_pylist() == [10, 11, 12]


def test_bad_records_are_isolated_with_their_offsets_and_reasons() -> None:
    good = b'{"id":"g","ts":"2026-11-26T10:00:00Z","n":1}'
    out = Decoder(COLS, 200).decode(fetch([
        good,
        b'{"id":"m","ts":"2026-11-26T10:00:00Z"',  # truncated
        b'{"id":"w","ts":"2026-11-26T10:00:00Z","n":"seven"}',  # wrong type
        b'{"id":"f","n":1}',  # missing required field
        b'{"id":"\xff\xfe","ts":"2026-11-26T10:00:00Z","n":1}',  # not UTF-8
        b'{"id":"o","ts":"2026-11-26T10:00:00Z","n":1,"doc":"' + b"x" * 300 + b'"}',
        b'{"id":"z","ts":"2026-11-26T10:00:00","n":1}',  # no time zone
        None,  # tombstone
        good,
    ]))
    assert out.batch.column("id").to_pylist() == ["g", "g"]
    assert out.batch.column("_kafka_offset").to_pylist() == [10, 18]
    reasons = {b.offset: b.error for b in out.bad}
    assert sorted(reasons) == [11, 12, 13, 14, 15, 16, 17]
    assert "truncated" in reasons[11]
    assert "Expected `int`, got `str` - at `$.n`" in reasons[12]
    assert "missing required field `ts`" in reasons[13]
    assert "not valid UTF-8" in reasons[14]
    assert "exceeds pipeline.max_record_bytes=200" in reasons[15]
    assert "has no zone" in reasons[16]
    assert "tombstone" in reasons[17]
    assert all(b.value is not None for b in out.bad if b.offset != 17)


def test_a_merge_of_broken_records_cannot_pass_for_valid_ones() -> None:
    # joined, these two halves would read as one valid event: counts must not match
    out = Decoder(COLS, 1000).decode(fetch([b'{"id":"a","ts":"2026-11-26T10:00:00Z",',
                                            b'"n":1}']))
    assert out.batch.num_rows == 0 and len(out.bad) == 2


def test_iso_timestamps_outside_rfc3339_are_accepted_zone_still_required() -> None:
    def event(ts: str) -> bytes:
        return b'{"id":"x","ts":"' + ts.encode() + b'","n":1}'

    out = Decoder(COLS, 1000).decode(fetch([
        event("2026-11-26 12:00:00+02"),  # PostgreSQL's own text format
        event("2026-11-26T10:00Z"),
        event("2026-11-26T10:00:00"),  # no zone: which instant?
        event("yesterday"),
    ]))
    assert [r["ts"].isoformat() for r in out.batch.to_pylist()] == [
        "2026-11-26T10:00:00+00:00", "2026-11-26T10:00:00+00:00"]
    reasons = {b.offset: b.error for b in out.bad}
    assert "has no zone - at `$.ts`" in reasons[12]
    assert "datetime" in reasons[13]
