"""Decoding: valid encodings a producer may send are accepted, the rest isolated. Every test
runs twice: with veltrix_codec's JsonDecoder, and with VELTRIX_NO_CODEC=1 (the Python path)."""

from collections.abc import Iterator

import pyarrow as pa
import pytest

from veltrix_ray.batch import METADATA, Column, Decoder
from veltrix_ray.batch.native import NO_CODEC_ENV
from veltrix_ray.contracts import Fetched, Reason

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True, params=["codec", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setenv(NO_CODEC_ENV, "1")
    else:
        monkeypatch.delenv(NO_CODEC_ENV, raising=False)
    yield request.param


def test_the_codec_decodes_unless_switched_off(path: str) -> None:
    assert Decoder(COLS, 1000).native is (path == "codec")
    assert not Decoder([Column("b", "bytes")], 1000).native  # bytes stay on the Python path

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
        None,  # tombstone: not an event, not a dead letter
        good,
    ]))
    assert out.batch.column("id").to_pylist() == ["g", "g"]
    assert out.batch.column("_kafka_offset").to_pylist() == [10, 18]
    assert out.good == [0, 8] and out.skipped == [7]
    reasons = {b.offset: b.error for b in out.bad}
    assert sorted(reasons) == [11, 12, 13, 14, 15, 16]
    assert "truncated" in reasons[11]
    assert "Expected `int`, got `str` - at `$.n`" in reasons[12]
    assert "missing required field `ts`" in reasons[13]
    assert "not valid UTF-8" in reasons[14]
    assert "exceeds pipeline.max_record_bytes=200" in reasons[15]
    assert "has no zone" in reasons[16]
    assert all(b.value is not None for b in out.bad)


INVALID_UTF8 = {
    "truncated 2-byte": b"\xc3",
    "truncated 3-byte": b"\xe2\x82",
    "truncated 4-byte": b"\xf0\x9f\x98",
    "lone continuation": b"\x80",
    "overlong slash": b"\xc0\xaf",
    "overlong NUL": b"\xe0\x80\x80",
    "encoded high surrogate": b"\xed\xa0\x80",
    "encoded low surrogate": b"\xed\xbf\xbf",
    "above U+10FFFF": b"\xf4\x90\x80\x80",
    "0xFF": b"\xff",
}


@pytest.mark.parametrize("where", ["string", "json", "outside a string"])
@pytest.mark.parametrize("sort", sorted(INVALID_UTF8))
def test_invalid_utf8_is_dead_lettered_with_the_stable_reason(sort: str, where: str) -> None:
    bad = INVALID_UTF8[sort]
    value = {
        "string": b'{"id":"a' + bad + b'b","ts":"2026-11-26T10:00:00Z","n":1}',
        "json": b'{"id":"a","ts":"2026-11-26T10:00:00Z","n":1,"doc":{"k":"' + bad + b'"}}',
        "outside a string": b'{"id":"a","ts":"2026-11-26T10:00:00Z","n":1' + bad + b"}",
    }[where]
    good = b'{"id":"g","ts":"2026-11-26T10:00:00Z","n":1,"doc":{"k":"\xc3\xa9\xf0\x9f\x98\x80"}}'
    out = Decoder(COLS, 1000).decode(fetch([good, value, good]))
    assert out.batch.column("id").to_pylist() == ["g", "g"]
    assert out.batch.column("doc").to_pylist() == ['{"k":"\u00e9\U0001f600"}'] * 2
    [letter] = out.bad
    assert letter.offset == 11 and letter.value == value
    assert letter.error.startswith("value is not valid UTF-8: "), letter.error
    assert f"at byte {value.index(bad)} " in letter.error, letter.error


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


# --- each record must be exactly one JSON value ---------------------------------------------

SIMPLE = [Column("id", "string", False), Column("n", "int64", False)]


def test_records_that_only_join_into_valid_events_are_each_dead_lettered() -> None:
    # joined with commas these read as three valid events: {"id":"a","n":1,"x":","},
    # {"id":"b","n":2} and {"id":"c","n":3}; none of the three records is one valid event
    out = Decoder(SIMPLE, 1000).decode(fetch([
        b'{"id":"a","n":1,"x":"',
        b'"}',
        b'{"id":"b","n":2},{"id":"c","n":3}',
    ]))
    assert out.batch.num_rows == 0 and out.good == [] and out.skipped == []
    assert [(b.offset, b.index, b.error) for b in out.bad] == [
        (10, 0, "DecodeError: Input data was truncated"),
        (11, 1, "DecodeError: Input data was truncated"),
        (12, 2, "DecodeError: JSON is malformed: trailing characters (byte 17)"),
    ]


def test_a_record_with_two_events_among_good_ones_shifts_nothing() -> None:
    out = Decoder(SIMPLE, 1000).decode(fetch([
        b'{"id":"a","n":1}', b'{"id":"b","n":2},{"id":"c","n":3}', b'{"id":"d","n":4}',
        b'{"id":"e","n":5,"s":"', b'"}']))
    assert out.batch.select(["id", "n", "_kafka_offset"]).to_pylist() == [
        {"id": "a", "n": 1, "_kafka_offset": 10}, {"id": "d", "n": 4, "_kafka_offset": 12}]
    assert out.good == [0, 2]
    assert [b.offset for b in out.bad] == [11, 13, 14]


def test_whitespace_and_a_bom_around_a_value_are_valid_encodings() -> None:
    out = Decoder(SIMPLE, 1000).decode(fetch([
        b'{"id":"a","n":1}', b' {"id":"b","n":2}\n', b'\xef\xbb\xbf{"id":"c","n":3}',
        b'\t{"id":"d",\r\n"n":4}  ']))
    assert out.bad == [] and out.good in (None, [0, 1, 2, 3])
    assert out.batch.column("n").to_pylist() == [1, 2, 3, 4]
    assert out.batch.column("id").to_pylist() == ["a", "b", "c", "d"]
    assert out.batch.column("_kafka_offset").to_pylist() == [10, 11, 12, 13]


def test_a_clean_fetch_is_decoded_at_once() -> None:
    out = Decoder(SIMPLE, 1000).decode(fetch([b'{"id":"a","n":1}', b'{"n":2,"id":"b"}']))
    assert out.good is None and out.bad == [] and out.skipped == []
    assert out.batch.column("n").to_pylist() == [1, 2]


# --- tombstones -----------------------------------------------------------------------------


def test_tombstones_are_skipped_neither_rows_nor_dead_letters() -> None:
    out = Decoder(SIMPLE, 1000).decode(fetch([
        None, b'{"id":"a","n":1}', None, b'{"id":"b","n":2}', None]))
    assert out.bad == [] and out.skipped == [0, 2, 4] and out.good == [1, 3]
    assert out.batch.select(["id", "_kafka_offset"]).to_pylist() == [
        {"id": "a", "_kafka_offset": 11}, {"id": "b", "_kafka_offset": 13}]


def test_tombstones_next_to_bad_records() -> None:
    out = Decoder(SIMPLE, 1000).decode(fetch([
        b'{"id":"a","n":1}', None, b'{"id":"b"}', b'{"id":"c","n":3}', None]))
    assert out.skipped == [1, 4] and out.good == [0, 3]
    assert out.batch.column("_kafka_offset").to_pylist() == [10, 13]
    assert [(b.offset, b.error) for b in out.bad] == [
        (12, "ValidationError: Object missing required field `n`")]


def test_a_fetch_of_tombstones_only() -> None:
    out = Decoder(SIMPLE, 1000).decode(fetch([None, None]))
    assert out.batch.num_rows == 0 and out.bad == [] and out.good == [] and out.skipped == [0, 1]
    assert out.batch.schema.names == ["id", "n", *METADATA.names]


# --- what PostgreSQL would reject is caught at decode ---------------------------------------

DOCS = [Column("id", "string", False), Column("note", "string", True),
        Column("doc", "json", True), Column("meta", "json", False)]
TEXT_NUL = ("ValidationError: column `{0}` contains a NUL character (\\u0000), which PostgreSQL "
            "text cannot store (SQLSTATE 22021: character not in repertoire) - at `$.{0}`")
JSON_NUL = ("ValidationError: column `{0}` contains \\u0000 in a JSON string, which PostgreSQL "
            "jsonb rejects (SQLSTATE 22P05: unsupported Unicode escape sequence) - at `$.{0}`")
JSON_NULL = ("ValidationError: Expected a JSON value, got `null` (column `{0}` is not "
             "nullable) - at `$.{0}`")


def nul_fetch(broken: bool) -> Fetched:
    return fetch([
        b'{"id":"a","meta":1}',
        b'{"id":"b\\u0000","meta":1}',  # NUL in a non-nullable string column
        b'{"id":"c","note":"x\\u0000y","meta":{}}',  # in a nullable one
        b'{"id":"d","doc":{"k":"\\u0000"},"meta":2}',  # in a JSON string
        b'{"id":"e","doc":{"\\u0000":1},"meta":2}',  # in a JSON key
        b'{"id":"f","doc":"\\\\u0000","meta":[]}',  # an escaped backslash, then "u0000": fine
        b'{"id":"g","meta":null}',  # null in a non-nullable json column
        b'{"id":"h","doc":null,"meta":"\\\\\\u0000"}',  # backslash, then NUL
        b'{"id":"i\\u0000","meta":null}',  # two faults: the first column is named
        b'{"id":"j","doc":null,"meta":true}',
        b'{"id":"k","meta":1' if broken else b'{"id":"k","meta":1}',
    ])


@pytest.mark.parametrize("broken", [False, True], ids=["fetch-at-once", "record-by-record"])
def test_nul_characters_and_null_json_in_a_required_column_are_dead_letters(broken: bool,
                                                                             ) -> None:
    out = Decoder(DOCS, 1000).decode(nul_fetch(broken))
    assert out.batch.select(["id", "note", "doc", "meta"]).to_pylist() == [
        {"id": "a", "note": None, "doc": None, "meta": "1"},
        {"id": "f", "note": None, "doc": '"\\\\u0000"', "meta": "[]"},
        {"id": "j", "note": None, "doc": None, "meta": "true"},
    ] + ([] if broken else [{"id": "k", "note": None, "doc": None, "meta": "1"}])
    assert out.good == [0, 5, 9] + ([] if broken else [10])
    assert out.batch.column("_kafka_offset").to_pylist() == [10, 15, 19] + (
        [] if broken else [20])
    expected = [(11, TEXT_NUL.format("id")), (12, TEXT_NUL.format("note")),
                (13, JSON_NUL.format("doc")), (14, JSON_NUL.format("doc")),
                (16, JSON_NULL.format("meta")), (17, JSON_NUL.format("meta")),
                (18, TEXT_NUL.format("id"))]
    if broken:
        expected.append((20, "DecodeError: Input data was truncated"))
    assert [(b.offset, b.error) for b in out.bad] == expected
    assert [b.index for b in out.bad] == [o - 10 for o, _ in expected]
    assert all(b.reason is Reason.DECODE and b.value for b in out.bad)
    assert out.bad[0].value == b'{"id":"b\\u0000","meta":1}'


def test_a_value_nested_too_deeply_for_the_decoder_is_a_dead_letter_not_a_crash() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    value = b'{"id":"a","ts":"2026-11-26T10:00:00Z","n":1,"extra":' + deep + b"}"
    good = b'{"id":"g","ts":"2026-11-26T10:00:00Z","n":1}'
    out = Decoder(COLS, 100_000).decode(fetch([good, value, good]))
    assert out.batch.column("id").to_pylist() == ["g", "g"]
    assert [(b.offset, b.error) for b in out.bad] == [(11, "value is nested too deeply to decode")]


def test_every_config_column_type_has_its_arrow_and_decoding_types() -> None:
    from veltrix_ray.batch.schema import TYPES
    from veltrix_ray.config.schema import ColumnType

    assert [t.value for t in ColumnType] == list(TYPES)
