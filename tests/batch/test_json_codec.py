"""veltrix_codec's JsonDecoder against the Python path, its oracle: on a generated corpus of
valid and invalid encodings, and on random values per column type, both give the same good
rows (value for value, float bits, jsonb text and timestamps included), the same bad
positions and the same reasons."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veltrix_ray.batch import Column, Decoder
from veltrix_ray.batch.contract import Decoded
from veltrix_ray.batch.native import NO_CODEC_ENV, codec
from veltrix_ray.contracts import Fetched

pytestmark = pytest.mark.unit

COLS = [Column("event_id", "string", False), Column("ts", "timestamp", False),
        Column("user_id", "int64", False), Column("amount", "float64", False),
        Column("ok", "bool", True), Column("day", "date", True), Column("ref", "uuid", True),
        Column("payload", "json", True)]
MAX = 4096


def fetch(values: list[bytes | None]) -> Fetched:
    n = len(values)
    return Fetched([0] * n, list(range(n)), [None] * n, values, [0] * n)


def both(values: list[bytes | None], monkeypatch: pytest.MonkeyPatch,
         cols: list[Column] = COLS) -> tuple[Decoded, Decoded]:
    monkeypatch.delenv(NO_CODEC_ENV, raising=False)
    native = Decoder(cols, MAX)
    assert native.native, "veltrix_codec has no JsonDecoder: rebuild it (make)"
    monkeypatch.setenv(NO_CODEC_ENV, "1")
    python = Decoder(cols, MAX)
    assert not python.native
    return native.decode(fetch(values)), python.decode(fetch(values))


def rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows with floats as their bits (-0.0 is not 0.0, and every ulp counts), timestamps
    and dates as their integers (an instant before year 1 has no Python datetime)."""
    as_ints = {pa.types.is_timestamp: pa.int64(), pa.types.is_date32: pa.int32()}
    batch = pa.RecordBatch.from_arrays(
        [next((col.cast(t) for test, t in as_ints.items() if test(col.type)), col)
         for col in batch.columns], names=batch.schema.names)
    out: list[dict[str, Any]] = batch.to_pylist()
    for row in out:
        for name, value in row.items():
            if isinstance(value, float):
                row[name] = struct.pack("<d", value).hex()
    return out


def assert_same(native: Decoded, python: Decoded) -> None:
    assert [(b.index, b.error) for b in native.bad] == [(b.index, b.error) for b in python.bad]
    def good(d: Decoded) -> list[int]:
        return d.good if d.good is not None else list(range(d.batch.num_rows))

    assert good(native) == good(python)
    assert native.skipped == python.skipped
    assert native.batch.schema.equals(python.batch.schema, check_metadata=True)
    assert rows(native.batch) == rows(python.batch)


# -- the corpus -------------------------------------------------------------------------------

TEXT = ["plain", "é à ü", "日本語", "emoji 😀 🎉", "quote \" backslash \\ slash /",
        "tab\tnewline\ncr\r", "control \x01\x1f", "", " ", "x" * 200]
OFFSETS = ["Z", "+00:00", "-00:00", "+05:30", "-08:00", "+14:00", "-12:00", "+23:59"]


def timestamp(r: random.Random) -> str:
    frac = "" if r.random() < 0.4 else "." + "".join(r.choices("0123456789", k=r.randint(1, 6)))
    return (f"{r.randint(1970, 2100):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}{frac}"
            f"{r.choice(OFFSETS)}")


def json_value(r: random.Random, depth: int = 0) -> Any:
    pick = r.randint(0, 7 if depth < 4 else 4)
    if pick == 0:
        return None
    if pick == 1:
        return r.choice([True, False])
    if pick == 2:
        return r.choice([0, -1, 2**53 + 1, -(2**63), 2**64, r.randint(-10**6, 10**6)])
    if pick == 3:
        return r.choice([0.5, -0.0, 1e-300, 1.7976931348623157e308, r.uniform(-1e9, 1e9)])
    if pick == 4:
        return r.choice(TEXT)
    if pick in (5, 6):
        return {r.choice(TEXT): json_value(r, depth + 1) for _ in range(r.randint(0, 4))}
    return [json_value(r, depth + 1) for _ in range(r.randint(0, 4))]


def event(r: random.Random, i: int) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"e-{i}-{r.choice(TEXT)}",
        "ts": timestamp(r),
        "user_id": r.choice([r.randint(0, 10**6), -(2**63), 2**63 - 1, 0]),
        "amount": r.choice([round(r.uniform(0, 1000), 2), r.randint(-5, 5), 2**53, 1e22,
                            r.random() * 10 ** r.randint(-20, 20)]),
    }
    for name, make in (("ok", lambda: r.choice([True, False, None])),
                       ("day", lambda: f"{r.randint(1, 9999):04d}-{r.randint(1, 12):02d}-"
                                       f"{r.randint(1, 28):02d}"),
                       ("ref", lambda: "8c6d1e2a-7f0b-4c3e-9a51-2b7d0e4f6a18"),
                       ("payload", lambda: json_value(r))):
        if r.random() < 0.8:
            e[name] = make()
    if r.random() < 0.3:
        e["extra"] = json_value(r)
    return e


def encode(r: random.Random, e: dict[str, Any]) -> bytes:
    items = list(e.items())
    r.shuffle(items)
    style = r.randint(0, 5)
    if style == 0:
        indent = r.choice(["\t", " ", "  "])
        text = json.dumps(dict(items), indent=indent)
    elif style == 1:
        text = json.dumps(dict(items), ensure_ascii=True)
    elif style == 2:
        text = " \n" + json.dumps(dict(items), separators=(" , ", " : ")) + "\r\n"
    else:
        text = json.dumps(dict(items), ensure_ascii=False, separators=(",", ":"))
    data = text.encode()
    if r.random() < 0.02:
        data = b"\xef\xbb\xbf" + data
    if r.random() < 0.05:  # the same text spelled with escapes, a surrogate pair among them
        data = data.replace(b'"event_id"', b'"\\u0065vent_id"').replace(
            "😀".encode(), b"\\ud83d\\ude00")
    return data


def broken(r: random.Random, good: bytes, e: dict[str, Any]) -> bytes | None:
    """An invalid value, or another valid encoding the Python path has to judge."""
    sorts: list[Callable[[], bytes | None]] = [
        lambda: good[:r.randint(0, len(good) - 1)],  # truncated
        lambda: good + good,  # two values
        lambda: good + b" x",  # trailing garbage
        lambda: good.replace(b'"user_id"', b'"user_id":"seven","x"', 1),  # wrong type
        lambda: json.dumps({**e, "user_id": 1.0}).encode(),  # a float for an int
        lambda: json.dumps({**e, "user_id": 2**63}).encode(),  # out of int64
        lambda: json.dumps({**e, "user_id": -(2**63) - 1}).encode(),
        lambda: json.dumps({**e, "amount": 2**70}).encode(),  # beyond u64, into a float
        lambda: json.dumps({**e, "amount": 10**400}).encode(),
        lambda: json.dumps(e).encode()[:-1] + b',"amount":1e400}',  # a float out of range
        lambda: json.dumps({**e, "event_id": "nul \x00 here"}).encode(),  # NUL in text
        lambda: json.dumps({**e, "payload": {"k": "nul \x00"}}).encode(),  # \u0000 in jsonb
        lambda: json.dumps({**e, "payload": {"k": "\\u0000 escaped"}}).encode(),
        lambda: json.dumps(e).encode()[:-1] + b',"event_id":"\\ud800"}',  # lone surrogate
        lambda: good.replace(b'"event_id"', b'"event_id":"\xff\xfe","y"', 1),  # not UTF-8
        lambda: _with(e, "extra", _nested(r.choice([50, 126, 127, 128, 200, 1000]))),
        lambda: _with(e, "payload", _nested(r.choice([50, 126, 127, 128, 200]))),
        lambda: json.dumps(e).encode()[:-1] + b',"user_id":5}',  # a key twice
        lambda: json.dumps({k: v for k, v in e.items() if k != "ts"}).encode(),  # missing
        lambda: json.dumps({**e, "ts": None}).encode(),  # null in NOT NULL
        lambda: json.dumps({**e, "payload": None}).encode(),  # null json, nullable: fine
        lambda: r.choice([b"[]", b'"x"', b"1", b"null", b"", b" ", b"{}"]),
        lambda: json.dumps({**e, "ts": r.choice([
            "2026-11-26 10:00:00+00", "2026-11-26T10:00Z", "2026-11-26T10:00:00",
            "2026-11-26T10:00:00.1234567Z", "2026-11-26T10:00:60Z", "2026-02-30T10:00:00Z",
            "2026-11-26t10:00:00z", "2026-11-26T24:00:00Z", "yesterday",
            "2026-11-26T10:00:00+2400", "0001-01-01T00:00:00+01:00"])}).encode(),
        lambda: json.dumps({**e, "day": r.choice(["2026-13-01", "2026-02-29", "26-11-26",
                                                  "2024-02-29", "0000-01-01"])}).encode(),
        lambda: json.dumps({**e, "ok": r.choice([1, "true", 0])}).encode(),
        lambda: json.dumps({**e, "event_id": "y" * MAX}).encode(),  # oversized
        lambda: None,  # a tombstone
    ]
    return r.choice(sorts)()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def _with(e: dict[str, Any], name: str, raw: bytes) -> bytes:
    return json.dumps({k: v for k, v in e.items() if k != name}).encode()[:-1] + (
        f', "{name}": '.encode() + raw + b"}")


def corpus(n: int, bad_fraction: float, seed: int) -> list[bytes | None]:
    r = random.Random(seed)
    out: list[bytes | None] = []
    for i in range(n):
        e = event(r, i)
        good = encode(r, e)
        out.append(broken(r, good, e) if r.random() < bad_fraction else good)
    return out


def test_a_corpus_of_100k_records_decodes_the_same_both_ways(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values = corpus(100_000, 0.15, seed=21)
    for start in range(0, len(values), 5000):  # fetch-sized calls
        native, python = both(values[start:start + 5000], monkeypatch)
        assert_same(native, python)
        assert native.batch.num_rows > 4000 and native.bad


def test_plain_valid_records_are_the_codecs_not_deferred(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the codec claims it takes, it takes: otherwise the differential test above would
    pass by deferring everything."""
    r = random.Random(5)
    values = [json.dumps(event(r, i)).encode() for i in range(5000)]
    monkeypatch.delenv(NO_CODEC_ENV, raising=False)
    native = codec().JsonDecoder([(c.name, c.type, c.nullable) for c in COLS], MAX)
    ok, deferred, absent, _ = native.decode(values)
    assert deferred == [] and absent == [] and len(ok) == 5000


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "s": st.one_of(SCALARS, st.text()), "i": SCALARS, "f": SCALARS, "b": SCALARS,
    "t": st.one_of(SCALARS, st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())),
    "d": st.one_of(SCALARS, st.dates().map(str)), "j": JSON_VALUES}), min_size=1, max_size=20))
def test_random_values_per_column_type_decode_the_same_both_ways(
        records: list[dict[str, Any]]) -> None:
    cols = [Column("s", "string", True), Column("i", "int64", False),
            Column("f", "float64", True), Column("b", "bool", True),
            Column("t", "timestamp", True), Column("d", "date", True),
            Column("j", "json", False)]
    values: list[bytes | None] = [json.dumps(rec, ensure_ascii=False).encode("utf-8",
                                                                            "surrogatepass")
                                  for rec in records]
    with pytest.MonkeyPatch.context() as monkeypatch:
        native, python = both(values, monkeypatch, cols)
    assert_same(native, python)
