"""Protobuf in the Confluent wire format -> Arrow columns; bad records isolated with a reason."""

import datetime as dt
import json
import random
from importlib import resources

import pyarrow as pa
import pytest
from google.protobuf import message_factory, timestamp_pb2

from veltrix_ray.batch.protobuf import ProtobufDecoder, _compile, message_indexes

pytestmark = pytest.mark.unit

INNER = 'syntax = "proto3"; package t; message Inner { string name = 1; repeated int64 n = 2; }'
PROTO = """
syntax = "proto3";
package t;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";
import "google/type/date.proto";
import "confluent/type/decimal.proto";
import "inner.proto";
enum Color { RED = 0; GREEN = 1; }
message Row {
  int32 i32 = 1; uint64 u64 = 2; sint64 s64 = 3; double d = 4; float f = 5;
  string s = 6; Color color = 7; bool b = 8; bytes raw = 9;
  google.protobuf.Timestamp ts = 10; google.type.Date day = 11;
  map<string, int64> m = 12; repeated string tags = 13; Inner inner = 14;
  google.protobuf.Struct doc = 15;
  google.protobuf.Int64Value maybe_n = 16; google.protobuf.StringValue maybe_s = 17;
  optional int64 opt = 18; string id = 19; confluent.type.Decimal price = 20; string amount = 21;
  message Nested { string s = 1; int32 i32 = 2; }
}
message Other { string s = 1; int64 i32 = 2; }
"""
SCHEMA_ID = 42
COLS = [("i32", "int64", False), ("u64", "int64", False), ("s64", "int64", False),
        ("d", "float64", False), ("f", "float64", False), ("s", "string", False),
        ("color", "string", False), ("b", "bool", False), ("raw", "bytes", False),
        ("ts", "timestamp", True), ("day", "date", True), ("m", "json", False),
        ("tags", "json", False), ("inner", "json", True), ("doc", "json", True),
        ("maybe_n", "int64", True), ("maybe_s", "string", True), ("opt", "int64", True),
        ("id", "uuid", False), ("price", "decimal", True), ("amount", "decimal", False)]
UUID = "0d5fa863-ecf6-4f23-ab92-3d69a1c44cbe"


def header(schema_id: int = SCHEMA_ID, path: tuple[int, ...] = (0,)) -> bytes:
    def zigzag(n: int) -> bytes:
        n = (n << 1) ^ (n >> 63)
        out = b""
        while n >= 0x80:
            out += bytes([n & 0x7F | 0x80])
            n >>= 7
        return out + bytes([n])
    indexes = b"\x00" if path == (0,) else zigzag(len(path)) + b"".join(map(zigzag, path))
    return b"\x00" + schema_id.to_bytes(4, "big") + indexes


@pytest.fixture(scope="module")
def classes() -> dict[str, type]:
    schema = _compile(SCHEMA_ID, PROTO, {"inner.proto": INNER})
    row = schema.top[0]
    return {"Row": message_factory.GetMessageClass(row),
            "Other": message_factory.GetMessageClass(schema.top[1]),
            "Nested": message_factory.GetMessageClass(row.nested_types_by_name["Nested"])}


@pytest.fixture()
def decoder() -> ProtobufDecoder:
    d = ProtobufDecoder(COLS)
    d.add_schema(SCHEMA_ID, PROTO, {"inner.proto": INNER})
    return d


def full_row(classes: dict[str, type]):  # type: ignore[no-untyped-def]
    r = classes["Row"](i32=-7, u64=2**63 - 1, s64=-(2**40), d=0.25, f=0.1, s="héllo",
                       color=1, b=True, raw=b"\x00\xff", tags=["a", "b"], opt=0,
                       id=UUID.upper(), amount="12.50")
    r.ts.FromDatetime(dt.datetime(2026, 1, 1, 0, 0, 0, 258))
    r.day.year, r.day.month, r.day.day = 2026, 2, 28
    r.m["k"] = 2**60
    r.inner.name, r.inner.n[:] = "x", [1, 2]
    r.doc.update({"page": "/p/1", "items": [318234, 2.5], "ok": True, "none": None})
    r.maybe_n.value = 5
    r.maybe_s.SetInParent()  # present, holding ""
    r.price.value, r.price.scale = (-12345).to_bytes(2, "big", signed=True), 2
    return r


def test_every_kind_decodes_to_exact_arrow_arrays(decoder: ProtobufDecoder,
                                                  classes: dict[str, type]) -> None:
    values = [header() + full_row(classes).SerializeToString(),
              header() + classes["Row"](id=UUID, amount="1e3").SerializeToString()]
    ok, errors, arrays = decoder.decode(values)
    assert (ok, errors) == ([0, 1], [])
    got = {name: a for (name, _, _), a in zip(COLS, arrays, strict=True)}
    ts_us = 1_767_225_600_000_258
    expected = {
        "i32": pa.array([-7, 0]), "u64": pa.array([2**63 - 1, 0]),
        "s64": pa.array([-(2**40), 0]), "d": pa.array([0.25, 0.0]),
        "f": pa.array([0.1, 0.0]),  # float32 as its shortest text reads it
        "s": pa.array(["héllo", ""]), "color": pa.array(["GREEN", "RED"]),
        "b": pa.array([True, False]), "raw": pa.array([b"\x00\xff", b""], pa.binary()),
        "ts": pa.array([ts_us, None], pa.timestamp("us", tz="UTC")),
        "day": pa.array([dt.date(2026, 2, 28), None], pa.date32()),
        "m": pa.array(['{"k":1152921504606846976}', "{}"]),
        "tags": pa.array(['["a","b"]', "[]"]),
        "inner": pa.array(['{"name":"x","n":[1,2]}', None]),
        "maybe_n": pa.array([5, None]), "maybe_s": pa.array(["", None]),
        "opt": pa.array([0, None]),
        "id": pa.array([UUID, UUID]),  # canonical text
        "price": pa.array(["-123.45", None]), "amount": pa.array(["12.50", "1E+3"]),
    }
    for name, array in expected.items():
        assert got[name].equals(array), (name, got[name])
    # a Struct's keys come in no set order; integral numbers stay integers
    assert got["doc"][1].as_py() is None
    assert json.loads(got["doc"][0].as_py()) == {
        "page": "/p/1", "items": [318234, 2.5], "ok": True, "none": None}
    assert "318234," in got["doc"][0].as_py()


def test_other_message_indexes_and_projection(decoder: ProtobufDecoder,
                                              classes: dict[str, type]) -> None:
    ok, errors, arrays = decoder.decode([
        header(path=(1,)) + classes["Other"](s="other", i32=2**40).SerializeToString(),
        header(path=(0, 1)) + classes["Nested"](s="nested", i32=3).SerializeToString(),
        header(path=(0,)) + classes["Row"](s="row", id=UUID, amount="1").SerializeToString(),
        header(path=(2,)) + b"",
        header(path=(0, 2)) + b"",
    ])
    # Other and Nested lack most columns: the non-nullable ones make them errors
    assert ok == [2]
    assert errors[0] == (0, "column u64: not nullable, and message t.Other has no such field")
    assert errors[1] == (1, "column u64: not nullable, and message t.Row.Nested has no such field")
    assert errors[2:] == [
        (3, "message index path [2] names no message in schema id 42"),
        (4, "message index path [0, 2] names no message in schema id 42")]
    assert arrays[5].to_pylist() == ["row"]

    few = ProtobufDecoder([("s", "string", False), ("i32", "int64", False), ("x", "bool", True)])
    few.add_schema(SCHEMA_ID, PROTO, {"inner.proto": INNER})
    ok, errors, arrays = few.decode([
        header(path=(1,)) + classes["Other"](s="other", i32=2**40).SerializeToString(),
        header(path=(0, 1)) + classes["Nested"](s="nested", i32=3).SerializeToString(),
        header() + classes["Row"](s="row", i32=1).SerializeToString(),
    ])
    assert (ok, errors) == ([0, 1, 2], [])
    assert [a.to_pylist() for a in arrays] == [
        ["other", "nested", "row"], [2**40, 3, 1], [None, None, None]]


def test_absent_fields_are_null_and_non_nullable_nulls_are_errors(classes: dict[str, type]) -> None:
    d = ProtobufDecoder([("ts", "timestamp", False), ("opt", "int64", False),
                         ("maybe_n", "int64", False), ("s", "string", False)])
    d.add_schema(SCHEMA_ID, PROTO, {"inner.proto": INNER})
    present = classes["Row"](opt=0)
    present.ts.FromSeconds(0)
    present.maybe_n.value = 0
    ok, errors, arrays = d.decode([
        header() + present.SerializeToString(),
        header() + classes["Row"]().SerializeToString(),
    ])
    assert ok == [0]
    assert [a.to_pylist() for a in arrays] == [
        [dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)], [0], [0], [""]]
    assert errors == [(1, "column ts: field t.Row.ts is absent and the column is not nullable")]


def test_bad_records_are_isolated_with_their_reasons(decoder: ProtobufDecoder,
                                                     classes: dict[str, type]) -> None:
    good = full_row(classes).SerializeToString()
    nul = full_row(classes)
    nul.s = "a\x00b"
    nul_json = full_row(classes)
    nul_json.tags.append("\x00")
    backslash = full_row(classes)
    backslash.tags.append("\\u0000")  # an escaped backslash, not a NUL
    bad_uuid = full_row(classes)
    bad_uuid.id = "not-a-uuid"
    big = full_row(classes)
    big.u64 = 2**63
    values: list[bytes | None] = [
        header() + good,
        b"\x01" + header()[1:] + good,
        b"{" + header()[1:] + good,
        b"\x00\x00\x00",
        header(schema_id=7) + good,
        header()[:5] + b"\x01",  # a count of -1
        header()[:5] + b"\x04\x02",  # count 2, one index
        header() + good[:-3],  # truncated
        header() + good + b"\x07",  # trailing bytes protobuf cannot parse
        header() + good + b"\xf8\x01\x01",  # trailing bytes that parse: unknown field 31
        header() + nul.SerializeToString(),
        header() + nul_json.SerializeToString(),
        header() + backslash.SerializeToString(),
        header() + bad_uuid.SerializeToString(),
        header() + big.SerializeToString(),
        None,
        header()[:5] + b"\x80\x80\x80\x80\x80\x01",
    ]
    ok, errors, arrays = decoder.decode(values)
    assert ok == [0, 9, 12]
    reasons = dict(errors)
    assert reasons == {
        1: "wrong magic byte 0x01: schema ids in record headers are not supported yet (the "
           "Confluent wire format starts with magic byte 0)",
        2: "wrong magic byte 0x7b: not the Confluent wire format (magic byte 0); the value looks "
           "like JSON",
        3: "too short for the Confluent wire format: 3 bytes (needs 5: magic byte 0 and a "
           "4-byte schema id)",
        4: "unknown schema id 7",
        5: "bad message-index list: negative count -1",
        6: "bad message-index list: 2 indexes in 1 bytes",
        7: reasons[7], 8: reasons[8],
        10: "column s: field t.Row.s holds a NUL character, which PostgreSQL text cannot store",
        11: "column tags: a NUL character (\\u0000), which PostgreSQL jsonb cannot store",
        13: "column id: field t.Row.id: 'not-a-uuid' is not a UUID",
        14: "column u64: field t.Row.u64 value 9223372036854775808 does not fit int64",
        15: "no value (a tombstone)",
        16: "bad message-index list: a varint longer than 5 bytes",
    }
    assert reasons[7].startswith("payload does not parse as t.Row")
    assert reasons[8].startswith("payload does not parse as t.Row")
    assert [e[0] for e in errors] == sorted(reasons)
    assert all(len(a) == 3 for a in arrays)
    assert arrays[12].to_pylist()[2] == '["a","b","\\\\u0000"]'


def test_random_bytes_never_raise(decoder: ProtobufDecoder, classes: dict[str, type]) -> None:
    rng = random.Random(12)
    good = header() + full_row(classes).SerializeToString()
    values = [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(2000)]
    values += [header() + bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
               for _ in range(2000)]
    values += [bytearray_flip(good, rng) for _ in range(2000)]
    ok, errors, arrays = decoder.decode(values)
    assert sorted(ok + [p for p, _ in errors]) == list(range(len(values)))
    assert all(len(a) == len(ok) for a in arrays)


def bytearray_flip(value: bytes, rng: random.Random) -> bytes:
    b = bytearray(value)
    b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def test_schema_checks_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"field t.Row.s \(string\) cannot go into column s "
                                         r"\(int64\)"):
        ProtobufDecoder([("s", "int64", False)]).add_schema(1, PROTO, {"inner.proto": INNER})
    with pytest.raises(ValueError, match=r"field t.Row.tags \(repeated string\) cannot go into "
                                         r"column tags \(string\)"):
        ProtobufDecoder([("tags", "string", False)]).add_schema(1, PROTO, {"inner.proto": INNER})
    with pytest.raises(ValueError, match="schema id 3 does not compile: .*inner.proto"):
        ProtobufDecoder([("s", "string", False)]).add_schema(3, PROTO)
    d = ProtobufDecoder([("s", "string", False)])
    assert not d.has(1)
    d.add_schema(1, PROTO, {"inner.proto": INNER})
    assert d.has(1)


def test_fields_give_kinds_and_nullability() -> None:
    d = ProtobufDecoder([("s", "string", False)])
    d.add_schema(1, PROTO, {"inner.proto": INNER})
    assert {n: (k, null) for n, k, null in d.fields(1)} == {
        "i32": ("int64", False), "u64": ("int64", False), "s64": ("int64", False),
        "d": ("float64", False), "f": ("float64", False), "s": ("string", False),
        "color": ("string", False), "b": ("bool", False), "raw": ("bytes", False),
        "ts": ("timestamp", True), "day": ("date", True), "m": ("json", False),
        "tags": ("json", False), "inner": ("json", True), "doc": ("json", True),
        "maybe_n": ("int64", True), "maybe_s": ("string", True), "opt": ("int64", True),
        "id": ("string", False), "price": ("decimal", True), "amount": ("string", False)}
    assert d.fields(1, (1,)) == [("s", "string", False), ("i32", "int64", False)]
    # nested types count the map fields' entry types, as Confluent's indexes do
    assert d.fields(1, (0, 0)) == [("key", "string", False), ("value", "int64", False)]
    assert d.fields(1, (0, 1)) == [("s", "string", False), ("i32", "int64", False)]


def test_message_indexes() -> None:
    assert message_indexes(header() + b"x") == ((0,), 6)
    assert message_indexes(header(path=(1,))) == ((1,), 7)
    assert message_indexes(header(path=(3, 200))) == ((3, 200), 9)
    for bad in (b"", b"\x00\x00\x00\x00\x01", b"\x01\x00\x00\x00\x01\x00",
                b"\x00\x00\x00\x00\x01\x02\x01", b"\x00\x00\x00\x00\x01\x02\x01\x00"):
        with pytest.raises(ValueError):
            message_indexes(bad)


def test_standard_event_proto_fits_the_standard_columns() -> None:
    text = (resources.files("veltrix_ray") / "formats" / "standard_event.proto").read_text()
    cols = [("event_id", "uuid", False), ("ts", "timestamp", False), ("user_id", "int64", False),
            ("kind", "string", False), ("amount", "float64", False),
            ("country", "string", False), ("payload", "json", True)]
    d = ProtobufDecoder(cols)
    d.add_schema(5, text)
    assert [(n, k) for n, k, _ in d.fields(5)] == [
        ("event_id", "string"), ("ts", "timestamp"), ("user_id", "int64"), ("kind", "string"),
        ("amount", "float64"), ("country", "string"), ("payload", "json")]
    schema = _compile(5, text, {})
    event, tagged = (message_factory.GetMessageClass(m) for m in (schema.top[0], schema.top[1]))
    values = []
    for cls, path in ((event, (0,)), (tagged, (1,))):
        e = cls(event_id=UUID, user_id=1_004_475, kind="view", amount=12.5, country="IN")
        e.ts.FromJsonString("2026-01-01T02:00:00.000258+02:00")
        e.payload.page, e.payload.ab, e.payload.items[:] = "/p/63", "B", [318234]
        values.append(header(5, path) + e.SerializeToString())
    ok, errors, arrays = d.decode(values)
    assert (ok, errors) == ([0, 1], [])
    rows = pa.table(arrays, names=[c[0] for c in cols]).to_pylist()
    assert rows[0] == rows[1] == {
        "event_id": UUID, "ts": dt.datetime(2026, 1, 1, 0, 0, 0, 258, tzinfo=dt.timezone.utc),
        "user_id": 1_004_475, "kind": "view", "amount": 12.5, "country": "IN",
        "payload": '{"page":"/p/63","ab":"B","items":[318234]}'}


def test_both_paths_take_the_test_schemas(decoder: ProtobufDecoder) -> None:
    assert decoder.native(SCHEMA_ID)
    text = (resources.files("veltrix_ray") / "formats" / "standard_event.proto").read_text()
    d = ProtobufDecoder([("kind", "string", False)])
    d.add_schema(5, text)
    assert d.native(5)
    assert not ProtobufDecoder([("kind", "string", False)], native=False).native(5)


DOC = """
syntax = "proto3";
package d;
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
enum E { E0 = 0; E1 = 1; }
message Leaf { int32 a = 1; double x = 2; repeated E es = 3; bytes b = 4; float f = 5; }
message Doc {
  oneof choice { string cs = 1; Leaf cl = 2; int64 ci = 3; }
  map<string, Leaf> leaves = 4; map<int32, string> names = 5; map<bool, E> flags = 6;
  repeated Leaf list = 7; repeated sint64 big = 8 [packed = false]; repeated fixed64 fx = 9;
  google.protobuf.Duration dur = 10; google.protobuf.Int64Value w = 11;
  google.protobuf.FloatValue fw = 12; google.protobuf.Value v = 13;
  google.protobuf.ListValue lv = 14; google.protobuf.Empty e = 15; Leaf leaf = 16;
  optional double od = 17; repeated double ds = 18; uint64 u = 19;
  google.protobuf.Timestamp ts = 20; google.protobuf.BytesValue bw = 21; Doc child = 22;
  E en = 23;
}
"""
DOC_COLS = [("cs", "string", True), ("ci", "int64", True), ("u", "int64", False),
            ("od", "float64", True), ("w", "int64", True), ("ts", "timestamp", True),
            ("fw", "float64", True), ("en", "string", False)] + [
    (n, "json", True) for n in ("cl", "leaves", "names", "flags", "list", "big", "fx", "dur",
                                "v", "lv", "e", "leaf", "ds", "ts", "bw", "child", "w", "fw")]


def random_doc(cls: type, rng: random.Random, depth: int = 0):  # type: ignore[no-untyped-def]
    d = cls()
    floats = [0.0, -0.0, 0.1, 2.5, 1e16, 1e-7, 123456.789, float("nan"), float("inf"), -1e300]

    def leaf(target) -> None:  # type: ignore[no-untyped-def]
        target.a = rng.choice([0, -1, 2**31 - 1])
        target.x = rng.choice(floats)
        target.es.extend(rng.choice([0, 1, 5]) for _ in range(rng.randrange(3)))
        target.b = bytes(rng.randrange(256) for _ in range(rng.randrange(5)))
        target.f = rng.choice([0.0, 0.1, 3.4e38, 1e-40])
    choice = rng.randrange(4)
    if choice == 0:
        d.cs = rng.choice(["", "x", "é\u2028\n\"\\"])
    elif choice == 1:
        leaf(d.cl)
    elif choice == 2:
        d.ci = rng.choice([0, -(2**63), 2**53 + 1])
    for _ in range(rng.randrange(3)):
        leaf(d.leaves[rng.choice(["k", "", "ü"])])
    for _ in range(rng.randrange(3)):
        d.names[rng.choice([-5, 0, 7])] = rng.choice(["a", "b\t"])
    if rng.random() < 0.5:
        d.flags[rng.random() < 0.5] = rng.choice([0, 1, 9])
    for _ in range(rng.randrange(3)):
        leaf(d.list.add())
    d.big.extend(rng.choice([0, -1, 2**62, -(2**63), 2**53 + 1]) for _ in range(rng.randrange(4)))
    d.fx.extend(rng.choice([0, 2**64 - 1, 2**53]) for _ in range(rng.randrange(3)))
    if rng.random() < 0.5:
        d.dur.seconds, d.dur.nanos = rng.choice([(0, 0), (-3, -500_000_000), (1, 1000), (5, 7)])
    if rng.random() < 0.5:
        d.w.value = rng.choice([0, 2**60 + 1, -2])
    if rng.random() < 0.5:
        d.fw.value = rng.choice([0.0, 0.1, float("inf")])
    if rng.random() < 0.5:
        d.v.struct_value.update({"n": rng.choice([1.0, 2.5, 2**60, 1e300]), "s": "t",
                                 "l": [None, True, {"z": []}]})
    elif rng.random() < 0.3:
        d.v.number_value = rng.choice([float("inf"), 3.0])
    if rng.random() < 0.5:
        d.lv.extend([1, "two", False, None])
    if rng.random() < 0.3:
        d.e.SetInParent()
    if rng.random() < 0.5:
        leaf(d.leaf)
    if rng.random() < 0.5:
        d.od = rng.choice(floats)
    d.ds.extend(rng.choice(floats) for _ in range(rng.randrange(3)))
    d.u = rng.choice([0, 5, 2**63, 2**64 - 1])
    if rng.random() < 0.5:
        d.ts.seconds, d.ts.nanos = rng.choice([(0, 0), (-62_135_596_800, 0), (1, 1_000_000),
                                               (1_767_225_600, 258_000), (1, 7)])
    if rng.random() < 0.3:
        d.bw.value = rng.choice([b"", b"\x00\xfe\xff"])
    if depth < 2 and rng.random() < 0.3:
        d.child.CopyFrom(random_doc(cls, rng, depth + 1))
    d.en = rng.choice([0, 1, 3])
    return d


def same_result(values: list[bytes | None], schema: str, cols, refs=None) -> int:  # type: ignore[no-untyped-def]
    results = []
    for native in (True, False):
        d = ProtobufDecoder(cols, native=native)
        d.add_schema(9, schema, refs)
        assert d.native(9) == native
        results.append(d.decode(values))
    (ok, errors, arrays), (ok_py, errors_py, arrays_py) = results
    assert ok == ok_py

    def reason(e: str) -> str:  # the parser's own words after the message name differ
        return e.split(":")[0] if e.startswith("payload does not parse") else e
    assert [(p, reason(e)) for p, e in errors] == [(p, reason(e)) for p, e in errors_py]
    for (name, kind, _), a, b in zip(cols, arrays, arrays_py, strict=True):
        if kind == "json":  # map and Struct keys come in no set order
            assert [None if v is None else json.loads(v) for v in a.to_pylist()] == [
                None if v is None else json.loads(v) for v in b.to_pylist()], name
            nan = [v is not None and "NaN" in v for v in a.to_pylist()]
            assert nan == [v is not None and "NaN" in v for v in b.to_pylist()], name
        else:
            assert a.type == b.type and a.null_count == b.null_count, name
            assert [repr(v) for v in a.to_pylist()] == [repr(v) for v in b.to_pylist()], name
    return len(ok)


def test_rust_and_python_paths_agree() -> None:
    rng = random.Random(7)
    cls = message_factory.GetMessageClass(_compile(9, DOC, {}).top[1])
    docs = [random_doc(cls, rng).SerializeToString() for _ in range(400)]
    h = header(9, (1,))
    values: list[bytes | None] = [h + d for d in docs]
    values += [h + a + b for a, b in zip(docs, docs[1:], strict=False)]  # merged messages
    values += [bytearray_flip(h + d, rng) for d in docs if d]
    values += [(h + d)[:rng.randrange(len(h) + len(d) + 1)] for d in docs]
    values += [h + b"\x0a\x01x" + b"\x12\x02\x08\x01" + b"\x12\x02\x10\x01",  # oneof: cl merges
               h + b"\x12\x02\x08\x01\x0a\x00\x18\x05",  # oneof: the last member wins
               h + b"\x42\x03\x02\x04\x06" + b"\x40\x01",  # sint64 packed, then unpacked
               h + b"\x22\x05\x0a\x01k\x12\x00" + b"\x22\x07\x0a\x01k\x12\x02\x08\x03",
               h + b"\x0b\x0c", h + b"\x0b\x08\x01\x0c",  # an unknown group, a field in it
               h + b"\xb2\x01\x02\xb2\x01"]  # child nested in itself, truncated
    assert same_result(values, DOC, DOC_COLS) > 300


def test_a_schema_with_any_keeps_the_python_path_in_a_mixed_batch(classes: dict[str, type]) -> None:
    any_proto = ('syntax = "proto3"; package a; import "google/protobuf/any.proto"; '
                 "message Row { string s = 1; google.protobuf.Any extra = 2; }")
    cols = [("s", "string", False), ("extra", "json", True)]
    d = ProtobufDecoder(cols)
    d.add_schema(SCHEMA_ID, PROTO, {"inner.proto": INNER})
    d.add_schema(3, any_proto)
    assert d.native(SCHEMA_ID) and not d.native(3)
    row = _compile(3, any_proto, {}).top[0]
    any_row = message_factory.GetMessageClass(row)(s="any")
    any_row.extra.Pack(timestamp_pb2.Timestamp(seconds=1))
    ok, errors, arrays = d.decode([
        header(3) + any_row.SerializeToString(),
        header() + classes["Row"](s="native").SerializeToString(),
        header(3) + b"\x07",
        header() + classes["Row"](s="second").SerializeToString(),
        header(3) + message_factory.GetMessageClass(row)(s="plain").SerializeToString(),
    ])
    assert ok == [0, 1, 3, 4]
    assert [p for p, _ in errors] == [2]
    assert arrays[0].to_pylist() == ["any", "native", "second", "plain"]
    assert arrays[1].to_pylist()[1:] == [None, None, None]
    assert json.loads(arrays[1][0].as_py()) == {
        "@type": "type.googleapis.com/google.protobuf.Timestamp", "value": "1970-01-01T00:00:01Z"}
