"""veltrix_codec.AvroDecoder: Avro in the Confluent wire format -> Arrow column buffers.
Values are written by fastavro (plus the 5-byte header), read back as Arrow arrays."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
import random
import struct
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from veltrix_codec import AvroDecoder, schema_ids

pytestmark = pytest.mark.unit

ARROW = {
    "int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32(), "json": pa.string(),
    "bytes": pa.binary(), "uuid": pa.string(), "decimal": pa.string(),
}
UTC = dt.timezone.utc

Col = tuple[str, str, bool]


def frame(schema: Any, record: Any, schema_id: int = 1) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return b"\x00" + struct.pack(">I", schema_id) + buf.getvalue()


def record(fields: list[tuple[str, Any]], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, **extra,
            "fields": [{"name": n, "type": t} for n, t in fields]}


def to_arrays(columns: list[Col], n: int, buffers: list[tuple[Any, ...]]) -> dict[str, pa.Array]:
    out = {}
    for (name, kind, _), (validity, offsets, data) in zip(columns, buffers, strict=True):
        parts = [validity, data] if offsets is None else [validity, offsets, data]
        array = pa.Array.from_buffers(
            ARROW[kind], n, [None if b is None else pa.py_buffer(b) for b in parts])
        array.validate(full=True)
        out[name] = array
    return out


def run(columns: list[Col], schemas: dict[int, Any], values: Sequence[bytes | None],
        ) -> tuple[list[int], list[tuple[int, str]], dict[str, list[Any]]]:
    decoder = AvroDecoder(columns)
    for sid, schema in schemas.items():
        decoder.add_schema(sid, json.dumps(schema))
        assert decoder.has(sid)
    good, bad, buffers = decoder.decode(values)
    arrays = to_arrays(columns, len(good), buffers)
    return good, bad, {k: a.to_pylist() for k, a in arrays.items()}


def one(kind: str, avro_type: Any, values: list[Any], nullable: bool = True,
        write_type: Any = None) -> list[Any]:
    """Column `v` of kind from a field of avro_type (written as write_type if given)."""
    writer = record([("v", write_type or avro_type)])
    framed = [frame(writer, {"v": v}) for v in values]
    good, bad, cols = run([("v", kind, nullable)], {1: record([("v", avro_type)])}, framed)
    assert bad == [] and good == list(range(len(values)))
    return cols["v"]


def errors(columns: list[Col], schema: Any, values: Sequence[bytes | None]) -> list[str]:
    good, bad, _ = run(columns, {1: schema}, values)
    return [e for _, e in bad]


STANDARD = json.loads(json.dumps({
    "type": "record", "name": "Event", "namespace": "veltrix.events",
    "fields": [
        {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "user_id", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind",
                                  "symbols": ["view", "click", "cart", "purchase", "refund"]}},
        {"name": "amount", "type": "double"},
        {"name": "country", "type": "string"},
        {"name": "payload", "type": ["null", {
            "type": "record", "name": "Payload", "fields": [
                {"name": "page", "type": "string"}, {"name": "ab", "type": "string"},
                {"name": "items", "type": {"type": "array", "items": "long"}}]}]},
    ]}))
STANDARD_COLUMNS: list[Col] = [
    ("event_id", "string", False), ("ts", "timestamp", False), ("user_id", "int64", False),
    ("kind", "string", False), ("amount", "float64", False), ("country", "string", False),
    ("payload", "json", True)]


def event(i: int, payload: Any = "default") -> dict[str, Any]:
    return {
        "event_id": str(uuid.UUID(int=i + 1)),
        "ts": dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=i * 1024),
        "user_id": 1_000_000 + i, "kind": ["view", "click", "cart"][i % 3],
        "amount": i / 4, "country": "DE",
        "payload": {"page": f"/p/{i}", "ab": "A", "items": list(range(i % 4))}
        if payload == "default" else payload,
    }


def test_standard_event() -> None:
    events = [event(i) for i in range(20)] + [event(20, payload=None)]
    good, bad, cols = run(STANDARD_COLUMNS, {7: STANDARD}, [frame(STANDARD, e, 7) for e in events])
    assert bad == [] and good == list(range(21))
    for name, _, _ in STANDARD_COLUMNS[:-1]:
        assert cols[name] == [e[name] for e in events]
    assert [p and json.loads(p) for p in cols["payload"]] == [e["payload"] for e in events]
    assert cols["payload"][1] == '{"page":"/p/1","ab":"A","items":[0]}'


def test_integers_and_promotions() -> None:
    big = [0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31)]
    assert one("int64", "int", big) == big
    longs = big + [2**63 - 1, -(2**63), 2**40]
    assert one("int64", "long", longs) == longs
    assert one("float64", "int", [1, -7]) == [1.0, -7.0]
    assert one("float64", "long", [2**53]) == [float(2**53)]
    assert one("float64", "float", [1.5, -0.25]) == [1.5, -0.25]
    doubles = [0.1, -1e300, math.inf, 5e-324]
    assert one("float64", "double", doubles) == doubles
    assert math.isnan(one("float64", "double", [math.nan])[0])


def test_strings_enums_bytes() -> None:
    texts = ["", "a", "ünïcødé ✓ 🎉", "x" * 1000, 'quote " back \\ tab \t']
    assert one("string", "string", texts) == texts
    enum = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
    assert one("string", enum, ["C", "A", "B"]) == ["C", "A", "B"]
    raw = [b"", b"\x00\xff", bytes(range(256))]
    assert one("bytes", "bytes", raw) == raw
    fixed = {"type": "fixed", "name": "F", "size": 3}
    assert one("bytes", fixed, [b"abc", b"\x00\x00\x00"]) == [b"abc", b"\x00\x00\x00"]
    assert one("bytes", "string", ["ab"]) == [b"ab"]  # string -> bytes: an Avro promotion
    assert one("string", "bytes", [b"ok"]) == ["ok"]


def test_booleans_pack_into_bits_with_nulls() -> None:
    values = [i % 3 == 0 if i % 5 else None for i in range(37)]
    assert one("bool", ["null", "boolean"], values) == values
    assert one("bool", "boolean", [True] * 9 + [False]) == [True] * 9 + [False]


def test_timestamps_and_dates() -> None:
    t = dt.datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
    before_epoch = dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    micros = {"type": "long", "logicalType": "timestamp-micros"}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert one("timestamp", micros, [t, before_epoch]) == [t, before_epoch]
    assert one("timestamp", millis, [t, before_epoch]) == [t.replace(microsecond=891000),
                                                           before_epoch]
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    for lt, unit in (("local-timestamp-micros", "microseconds"),
                     ("local-timestamp-millis", "milliseconds")):
        got = one("timestamp", {"type": "long", "logicalType": lt}, [1_000_000_123],
                  write_type="long")
        assert got == [epoch + dt.timedelta(**{unit: 1_000_000_123})]
    nanos = {"type": "long", "logicalType": "timestamp-nanos"}
    assert one("timestamp", nanos, [1_500, -1], write_type="long") == [
        dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    days = [dt.date(2026, 1, 1), dt.date(1900, 2, 28), dt.date(1970, 1, 1)]
    assert one("date", {"type": "int", "logicalType": "date"}, days) == days


def test_uuid_and_decimal() -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    assert one("uuid", {"type": "string", "logicalType": "uuid"}, ids) == ids
    fixed16 = {"type": "fixed", "name": "U", "size": 16, "logicalType": "uuid"}
    u = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert one("uuid", fixed16, [u.bytes], write_type={"type": "fixed", "name": "U",
                                                        "size": 16}) == [str(u)]
    dec = {"type": "bytes", "logicalType": "decimal", "precision": 60, "scale": 2}
    values = ["123.45", "-0.01", "0.00", "-123456789012345678901234567890.99", "0.50",
              "98765432109876543210987654321098765432109876543210.12",  # over 16 bytes
              "-98765432109876543210987654321098765432109876543210.12", "-1" + "0" * 55 + ".00"]
    got = one("decimal", dec, [decimal.Decimal(v) for v in values])
    assert got == values
    fixed = {"type": "fixed", "name": "D", "size": 8, "logicalType": "decimal",
             "precision": 18, "scale": 4}
    assert one("decimal", fixed, [decimal.Decimal("-1.5"), decimal.Decimal("12")]) == [
        "-1.5000", "12.0000"]
    no_scale = {"type": "bytes", "logicalType": "decimal", "precision": 5}
    assert one("decimal", no_scale, [decimal.Decimal(-42)]) == ["-42"]


def test_json_renders_every_type() -> None:
    inner = record([("a", "int"), ("b", ["null", "string"])], name="Inner")
    fields = [
        ("rec", inner), ("map", {"type": "map", "values": "long"}),
        ("arr", {"type": "array", "items": ["null", "double"]}),
        ("enum", {"type": "enum", "name": "E", "symbols": ["X", "Y"]}),
        ("bytes", "bytes"), ("fixed", {"type": "fixed", "name": "F", "size": 2}),
        ("float", "float"), ("double", "double"), ("bool", "boolean"), ("null", "null"),
        ("ts", {"type": "long", "logicalType": "timestamp-millis"}),
        ("str", "string"), ("union", ["null", "long", "string", "Inner"]),
        ("dec", {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}),
    ]
    schema = record(fields)
    value = {
        "rec": {"a": 1, "b": None}, "map": {"k": 1, "é\"\n": -2},
        "arr": [1.5, None, math.inf, math.nan, -math.inf], "enum": "Y",
        "bytes": b"\x01\xffA", "fixed": b"\xe9z", "float": 0.1, "double": 1e300,
        "bool": True, "null": None, "ts": dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        "str": "tab\t\x01 \u2028 ✓", "union": {"a": 2, "b": "x"},
        "dec": decimal.Decimal("-1.250"),
    }
    columns = [(n, "json", True) for n, _ in fields]
    good, bad, cols = run(columns, {1: schema}, [frame(schema, value)])
    assert bad == [] and good == [0]
    text = {k: v[0] for k, v in cols.items()}
    assert text["null"] is None  # a null is SQL NULL, not JSON null
    assert text["float"] == "0.1" and text["dec"] == "-1.250"
    assert text["str"] == '"tab\\t\\u0001 \u2028 ✓"'
    assert text["bytes"] == '"\\u0001\u00ffA"'
    parsed = {k: json.loads(v) for k, v in text.items() if v is not None}
    assert parsed == {
        "rec": {"a": 1, "b": None}, "map": {"k": 1, "é\"\n": -2},
        "arr": [1.5, None, None, None, None], "enum": "Y", "bytes": "\x01\xffA",
        "fixed": "\xe9z", "float": 0.1, "double": 1e300, "bool": True, "ts": 1000,
        "str": "tab\t\x01 \u2028 ✓", "union": {"a": 2, "b": "x"}, "dec": -1.25,
    }
    # a union in a json column: its branch's value; its null branch: SQL NULL
    values = [frame(schema, {**value, "union": u}) for u in (None, 5, "s")]
    _, _, cols = run([("union", "json", True)], {1: schema}, values)
    assert cols["union"] == [None, "5", '"s"']


def test_named_types_and_namespaces() -> None:
    schema = {
        "type": "record", "name": "Outer", "namespace": "a.b",
        "fields": [
            {"name": "first", "type": {"type": "record", "name": "Point", "fields": [
                {"name": "x", "type": "long"}]}},
            {"name": "again", "type": "Point"},  # relative to the enclosing namespace
            {"name": "full", "type": "a.b.Point"},
            {"name": "other", "type": {"type": "record", "name": "Shade", "namespace": "c",
                                       "fields": [
                                           {"name": "e", "type": {"type": "enum", "name": "Hue",
                                                                  "symbols": ["R", "G"]}},
                                           {"name": "e2", "type": "Hue"}]}},
            {"name": "hue", "type": "c.Hue"},
            {"name": "list", "type": {"type": "record", "name": "Node", "fields": [
                {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}},
        ]}
    value = {"first": {"x": 1}, "again": {"x": 2}, "full": {"x": 3},
             "other": {"e": "G", "e2": "R"}, "hue": "G",
             "list": {"v": 1, "next": {"v": 2, "next": None}}}
    columns: list[Col] = [("again", "json", False), ("full", "json", False),
                          ("other", "json", False), ("hue", "string", False),
                          ("list", "json", False)]
    good, bad, cols = run(columns, {1: schema}, [frame(schema, value)])
    assert bad == [] and good == [0]
    assert {k: v[0] for k, v in cols.items()} == {
        "again": '{"x":2}', "full": '{"x":3}', "other": '{"e":"G","e2":"R"}', "hue": "G",
        "list": '{"v":1,"next":{"v":2,"next":null}}'}


def test_evolution_projection_and_missing_columns() -> None:
    v1 = record([("id", "long"), ("name", "string")])
    v2 = record([  # extra fields of every sort before and after the mapped ones: skipped
        ("skip_map", {"type": "map", "values": {"type": "array", "items": "string"}}),
        ("id", "int"),
        ("skip_rec", record([("a", "double"), ("b", ["null", "bytes"]),
                             ("c", {"type": "fixed", "name": "F4", "size": 4}),
                             ("d", {"type": "enum", "name": "E", "symbols": ["A"]}),
                             ("e", "boolean"), ("f", "float")], name="Sub")),
        ("name", "string"), ("note", ["null", "string"]),
    ])
    columns: list[Col] = [("id", "int64", False), ("name", "string", False),
                          ("note", "string", True)]
    sub = {"a": 1.0, "b": b"zz", "c": b"abcd", "d": "A", "e": True, "f": 2.5}
    values = [frame(v1, {"id": 1, "name": "one"}, 1),
              frame(v2, {"skip_map": {"k": ["a", "b"]}, "id": 2, "skip_rec": sub,
                         "name": "two", "note": "hi"}, 2),
              frame(v1, {"id": 3, "name": "three"}, 1)]
    good, bad, cols = run(columns, {1: v1, 2: v2}, values)
    assert bad == [] and good == [0, 1, 2]
    assert cols == {"id": [1, 2, 3], "name": ["one", "two", "three"],
                    "note": [None, "hi", None]}
    # a non-nullable column the writer lacks: every record of that schema is an error
    got = errors([("id", "int64", False), ("note", "string", False)], v1,
                 [frame(v1, {"id": 1, "name": "x"})])
    assert got == ["missing field for non-nullable column `note`: schema id 1 has no such field"]


def test_negative_block_counts_with_byte_sizes() -> None:
    def zz(n: int) -> bytes:  # zigzag varint
        n = (n << 1) ^ (n >> 63)
        out = b""
        while True:
            if n < 0x80:
                return out + bytes([n])
            out += bytes([n & 0x7F | 0x80])
            n >>= 7

    schema = record([("a", {"type": "array", "items": "long"}),
                     ("m", {"type": "map", "values": "string"}), ("x", "long")])
    items = zz(1) + zz(300)
    arr = zz(-2) + zz(len(items)) + items + zz(1) + zz(7) + zz(0)
    entry = zz(1) + b"k" + zz(2) + b"vv"
    map_ = zz(-1) + zz(len(entry)) + entry + zz(0)
    value = b"\x00\x00\x00\x00\x01" + arr + map_ + zz(9)
    good, bad, cols = run([("a", "json", False), ("m", "json", False), ("x", "int64", False)],
                          {1: schema}, [value])
    assert bad == [] and cols == {"a": ["[1,300,7]"], "m": ['{"k":"vv"}'], "x": [9]}
    # skipped by byte size when no column wants them
    good, bad, cols = run([("x", "int64", False)], {1: schema}, [value])
    assert bad == [] and cols == {"x": [9]}


def test_schema_errors_name_field_and_types() -> None:
    d = AvroDecoder([("user_id", "int64", False), ("tags", "string", True),
                     ("doc", "json", True)])
    with pytest.raises(ValueError, match=r"field `user_id`.*string.*int64 column `user_id`"):
        d.add_schema(1, json.dumps(record([("user_id", "string")])))
    with pytest.raises(ValueError, match=r"field `tags`: .*union \[null, string, long\].*string"):
        d.add_schema(2, json.dumps(record([("tags", ["null", "string", "long"])])))
    d.add_schema(3, json.dumps(record([("doc", ["null", "string", "long"])])))
    ts_plain = record([("user_id", "long"), ("doc", "long")])
    d.add_schema(4, json.dumps(ts_plain))
    assert d.has(3) and d.has(4) and not d.has(1) and not d.has(2)
    for bad_schema, message in [
        ('"long"', "not a record"), ("{", "not JSON"),
        (json.dumps(record([("user_id", "Missing")])), "unknown type `Missing`"),
        (json.dumps({"type": "record", "name": "R"}), "fields"),
    ]:
        with pytest.raises(ValueError, match=message):
            d.add_schema(5, bad_schema)
    ts = AvroDecoder([("t", "timestamp", False)])
    with pytest.raises(ValueError, match=r"field `t`: the writer's long cannot go into timestamp"):
        ts.add_schema(1, json.dumps(record([("t", "long")])))
    with pytest.raises(ValueError, match="unknown type `text`"):
        AvroDecoder([("x", "text", True)])


def test_record_errors_and_rollback() -> None:
    schema = record([("s", "string"), ("n", ["null", "long"]),
                     ("j", ["null", {"type": "map", "values": "string"}]),
                     ("e", {"type": "enum", "name": "E", "symbols": ["A"]}),
                     ("b", ["null", "boolean"])])
    columns: list[Col] = [("s", "string", False), ("n", "int64", False), ("j", "json", True),
                          ("e", "string", False), ("b", "bool", True)]
    ok = {"s": "ok", "n": 1, "j": {"k": "v"}, "e": "A", "b": True}
    good_value = frame(schema, ok)
    body = good_value[5:]
    cases: list[tuple[bytes | None, str]] = [
        (None, "no value"),
        (b"", "too short for the Confluent wire format: 0 bytes (needs 5: magic byte 0 and a "
              "4-byte schema id)"),
        (b"\x00\x00\x01", "too short for the Confluent wire format: 3 bytes"),
        (b"\x01" + good_value[1:],
         "wrong magic byte 0x01: schema ids in record headers are not supported yet"),
        (b'{"s": 1}', "wrong magic byte 0x7b: not the Confluent wire format (magic byte 0); the "
                      "value looks like JSON"),
        (b"\x00\x00\x00\x00\x09" + body, "unknown schema id 9"),
        (good_value[:-1], "truncated: the record ends inside field `b`"),
        (good_value[:-5], "truncated or corrupt: length 1 in field `j` exceeds the 0 bytes left"),
        (good_value + b"\x00\x00", "2 trailing bytes after the record"),
        (frame(schema, {**ok, "s": "\x00x"}), "column `s` contains a NUL character"),
        (frame(schema, {**ok, "j": {"k": "a\x00"}}), "column `j` contains \\u0000"),
        (frame(schema, {**ok, "n": None}), "null in non-nullable column `n`"),
        (good_value[:5] + b"\x04\xff\xfe" + body[3:], "invalid UTF-8 in field `s`"),
        (good_value[:5] + b"\xff" * 11, "varint overflow in field `s`"),
        (good_value[:5] + b"\x03", "negative length -2 in field `s`"),
        (good_value[:5] + b"\x80\x01xx", "truncated or corrupt: length 64 in field `s`"),
        (good_value[:5] + b"\x04ok\x04", "union branch 2 out of range in field `n`"),
        (good_value[:-3] + b"\x02\x02\x01", "enum index 1 out of range in field `e`"),
        (good_value[:-1] + b"\x07", "invalid boolean byte 7 in field `b`"),
    ]
    values: list[bytes | None] = []
    expected_bad = []
    for k, (value, _) in enumerate(cases):
        values += [frame(schema, {**ok, "s": f"r{k}", "b": None if k % 2 else k % 4 == 0}),
                   value]
        expected_bad.append(2 * k + 1)
    good, bad, cols = run(columns, {1: schema}, values)
    assert [p for p, _ in bad] == expected_bad
    for (_, message), (_, expected) in zip(bad, cases, strict=True):
        assert message.startswith(expected), (message, expected)
    assert good == list(range(0, 2 * len(cases), 2))
    assert cols["s"] == [f"r{k}" for k in range(len(cases))]
    assert cols["n"] == [1] * len(cases) and cols["e"] == ["A"] * len(cases)
    assert cols["j"] == ['{"k":"v"}'] * len(cases)
    assert cols["b"] == [None if k % 2 else k % 4 == 0 for k in range(len(cases))]


def test_bytes_with_nul_in_json_and_uuid_checks() -> None:
    schema = record([("raw", "bytes"), ("id", "string")])
    columns: list[Col] = [("raw", "json", False), ("id", "uuid", False)]
    u = str(uuid.uuid4())
    assert errors(columns, schema, [frame(schema, {"raw": b"a\x00", "id": u}),
                                    frame(schema, {"raw": b"a", "id": "nope"}),
                                    frame(schema, {"raw": b"a", "id": u})]) == [
        "column `raw` contains \\u0000", "column `id` is not a UUID (field `id`)"]


def test_deep_recursion_is_an_error_not_a_crash() -> None:
    schema = record([("n", ["null", "R"])])
    value: dict[str, Any] | None = None
    for _ in range(200):
        value = {"n": value}
    got = errors([("n", "json", True)], schema, [frame(schema, value)])
    assert got == ["field `n` is nested too deeply"]


def test_array_of_nulls_count_is_bounded() -> None:
    schema = record([("a", {"type": "array", "items": "null"})])
    huge = b"\x00\x00\x00\x00\x01" + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"  # 2**62 items
    assert errors([("a", "json", True)], schema, [huge]) == ["too many empty items in field `a`"]
    assert one("json", {"type": "array", "items": "null"}, [[None] * 3]) == ["[null,null,null]"]


def test_schema_ids() -> None:
    assert schema_ids([None, b"", b"\x00\x00\x00", b"\x00\x00\x00\x01\x02",
                       b"\x00\xff\xff\xff\xff xyz", b"\x01\x00\x00\x00\x01", b"{\"a\": 1}"]) == [
        -1, -1, -1, 258, 2**32 - 1, -2, -2]


def test_decoder_state_between_calls_and_iterables() -> None:
    decoder = AvroDecoder(STANDARD_COLUMNS)
    decoder.add_schema(1, json.dumps(STANDARD))
    first = decoder.decode([frame(STANDARD, event(i)) for i in range(3)])
    second = decoder.decode(tuple(frame(STANDARD, event(i)) for i in range(3)))
    assert first == second and first[0] == [0, 1, 2]
    assert first[2][6][0] is None  # no nulls: no validity bitmap
    empty_offsets = b"\x00\x00\x00\x00"  # one offset, 0
    assert decoder.decode([]) == ([], [], [
        (None, empty_offsets if k in ("string", "json") else None, b"")
        for _, k, _ in STANDARD_COLUMNS])
    with pytest.raises(TypeError, match="bytes or None"):
        decoder.decode(["text"])  # type: ignore[list-item]


def test_decoders_in_threads() -> None:
    values = [frame(STANDARD, event(i)) for i in range(5000)]

    def decode(_: int) -> tuple[Any, ...]:
        decoder = AvroDecoder(STANDARD_COLUMNS)
        decoder.add_schema(1, json.dumps(STANDARD))
        return decoder.decode(values)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(decode, range(8)))
    assert all(r == results[0] for r in results) and len(results[0][0]) == 5000


def test_random_garbage_never_crashes() -> None:
    rng = random.Random(12)
    rich = record([
        ("a", ["null", "long", "string", {"type": "array", "items": "R"}]),
        ("m", {"type": "map", "values": ["null", "double", "bytes"]}),
        ("f", {"type": "fixed", "name": "F", "size": 3}),
        ("d", {"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 2}),
        ("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]}), ("b", "boolean"),
        ("t", {"type": "long", "logicalType": "timestamp-millis"}),
        ("day", {"type": "int", "logicalType": "date"}), ("s", "string")])
    columns: list[Col] = [("a", "json", True), ("m", "json", True), ("f", "bytes", True),
                          ("d", "decimal", True), ("e", "string", True), ("b", "bool", True),
                          ("t", "timestamp", True), ("day", "date", True),
                          ("s", "string", True)]
    decoder = AvroDecoder(columns)
    for sid, schema in ((1, rich), (2, STANDARD)):
        decoder.add_schema(sid, json.dumps(schema))
    decoder_std = AvroDecoder(STANDARD_COLUMNS)
    decoder_std.add_schema(2, json.dumps(STANDARD))
    valid = [frame(STANDARD, event(i), 2) for i in range(50)]
    values: list[bytes | None] = []
    for _ in range(20_000):
        kind = rng.random()
        if kind < 0.4:
            body = rng.randbytes(rng.randrange(40))
            values.append(b"\x00\x00\x00\x00" + bytes([rng.choice((1, 2))]) + body)
        elif kind < 0.7:
            flipped = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                flipped[rng.randrange(5, len(flipped))] = rng.randrange(256)
            values.append(bytes(flipped))
        elif kind < 0.9:
            v = rng.choice(valid)
            values.append(v[:rng.randrange(len(v))])
        else:
            values.append(rng.randbytes(rng.randrange(12)))
    for d, cols in ((decoder, columns), (decoder_std, STANDARD_COLUMNS)):
        good, bad, buffers = d.decode(values)
        assert sorted(good + [p for p, _ in bad]) == list(range(len(values)))
        assert all(isinstance(e, str) and e for _, e in bad)
        to_arrays(cols, len(good), buffers)  # valid Arrow, whatever the input
