"""RegistryDecoder and KeyedDecoder without services: the real Avro codec, schemas admitted by
hand as a worker would after fetching them."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest

from veltrix_ray.batch.avro import avro_fields
from veltrix_ray.batch.keys import KeyedDecoder, TextKeys
from veltrix_ray.batch.registry import RegistryDecoder
from veltrix_ray.batch.schema import Column
from veltrix_ray.batch.writer import Writer
from veltrix_ray.contracts import Fetched

pytestmark = pytest.mark.unit

V1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"},
                                                 {"name": "b", "type": "string"}]}
V2 = {**V1, "fields": [*V1["fields"], {"name": "c", "type": ["null", "double"],
                                        "default": None}]}
V_REQUIRED = {**V1, "fields": [*V1["fields"], {"name": "d", "type": "int"}]}
V_B_LONG = {**V1, "fields": [V1["fields"][0], {"name": "b", "type": "long"}]}
COLUMNS = [Column("a", "int64", False), Column("b", "string")]


def framed(sid: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO(b"\x00" + sid.to_bytes(4, "big"))
    out.seek(5)
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def fetched(values: list[bytes | None], partitions: list[int] | None = None,
            keys: list[bytes | None] | None = None) -> Fetched:
    n = len(values)
    parts = partitions or [0] * n
    return Fetched(parts, list(range(n)), keys or [None] * n, values, [0] * n, topic="t")


def writer(sid: int, schema: dict[str, Any]) -> Writer:
    return Writer(sid, "AVRO", json.dumps(schema), subject="t-value", version=sid)


def decoder(evolution: str = "none") -> RegistryDecoder:
    d = RegistryDecoder(COLUMNS, "avro", "t", evolution=evolution)
    assert d.admit(writer(1, V1)) is None
    return d


def test_records_of_admitted_ids_decode_in_one_call() -> None:
    d = decoder()
    out = d.decode(fetched([framed(1, V1, {"a": i, "b": f"x{i}"}) for i in range(3)]))
    assert out.bad == [] and out.good is None and out.stopped == {}
    assert out.batch.column("a").to_pylist() == [0, 1, 2]
    assert out.batch.column("b").to_pylist() == ["x0", "x1", "x2"]
    assert out.batch.column("_kafka_offset").to_pylist() == [0, 1, 2]


def test_tombstones_framing_and_unknown_ids_are_sorted_out() -> None:
    d = decoder()
    good = framed(1, V1, {"a": 7, "b": "y"})
    f = fetched([good, None, b"\x01" + good[1:], framed(9, V1, {"a": 1, "b": "z"}), good[:-1]])
    assert d.missing(f) == [9]
    d.unknown(9)
    out = d.decode(f)
    assert out.skipped == [1] and out.good == [0]
    why = {b.index: b.error for b in out.bad}
    assert sorted(why) == [2, 3, 4]
    assert "magic byte 0x01" in why[2] and "headers" in why[2]
    assert "unknown schema id 9" in why[3]
    assert "truncated" in why[4]


def test_evolution_plans_a_nullable_column_and_refuses_a_required_one() -> None:
    d = decoder("add_columns")
    plan = d.plan(writer(2, V2))
    assert plan.refused is None and plan.add == [Column("c", "float64", True)]
    d.extend(plan.add)
    assert d.admit(writer(2, V2)) is None
    out = d.decode(fetched([framed(1, V1, {"a": 1, "b": "p"}),
                            framed(2, V2, {"a": 2, "b": "q", "c": 0.5})]))
    assert out.batch.column("c").to_pylist() == [None, 0.5]
    refused = d.plan(writer(3, V_REQUIRED)).refused
    assert refused is not None and "d" in refused and "without a default" in refused
    assert decoder("none").plan(writer(3, V_REQUIRED)).add == []  # none: not written


def test_a_schema_the_columns_cannot_follow_stops_only_its_partitions() -> None:
    d = decoder()
    why = d.admit(writer(4, V_B_LONG))
    assert why is not None
    for part in ("topic t", "schema id 4", "version 4", "field `b`", "long", "string"):
        assert part in why, why
    out = d.decode(fetched([framed(1, V1, {"a": 1, "b": "ok"}), framed(4, V_B_LONG, {"a": 2,
                                                                                   "b": 5}),
                            framed(1, V1, {"a": 3, "b": "other"})], partitions=[0, 0, 1]))
    assert list(out.stopped) == [0] and "schema id 4" in out.stopped[0]
    assert out.good == [2] and out.bad == []


def test_keys_fill_their_columns_and_a_bad_key_is_a_dead_letter() -> None:
    keyed = KeyedDecoder(decoder(), TextKeys(Column("k", "string", False)))
    values: list[bytes | None] = [framed(1, V1, {"a": i, "b": "v"}) for i in range(3)]
    out = keyed.decode(fetched(values, keys=[b"k0", b"\xff", None]))
    assert out.good == [0]
    assert out.batch.column("k").to_pylist() == ["k0"]
    assert out.batch.schema.names[:3] == ["a", "b", "k"]
    why = {b.index: b.error for b in out.bad}
    assert why[1].startswith("key: ") and "UTF-8" in why[1]
    assert why[2].startswith("key: no key")


def test_avro_fields_map_types_and_nullability() -> None:
    fields = {f.name: (f.kind, f.nullable, f.has_default) for f in avro_fields(json.dumps({
        "type": "record", "name": "X", "fields": [
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "m", "type": {"type": "map", "values": "long"}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A"]}},
            {"name": "e2", "type": "E"},
            {"name": "u", "type": ["null", {"type": "string", "logicalType": "uuid"}],
             "default": None},
            {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4,
                                   "scale": 2}}]}))}
    assert fields == {"ts": ("timestamp", False, False), "m": ("json", False, False),
                      "e": ("string", False, False), "e2": ("string", False, False),
                      "u": ("uuid", True, True), "d": ("decimal", False, False)}


def test_a_value_not_in_the_wire_format_is_worded_the_same_for_every_format() -> None:
    from veltrix_ray.batch.protobuf import ProtobufDecoder, header_error
    values: list[bytes | None] = [b"\x01\x00\x00\x00\x01\x02", b'{"a": 1}', b"\x00\x00"]
    expected = {i: header_error(v) for i, v in enumerate(values) if v is not None}
    avro = decoder().decode(fetched(values))
    assert {b.index: b.error for b in avro.bad} == expected
    for native in (True, False):
        proto = ProtobufDecoder([("a", "int64", False)], native=native)
        assert dict(proto.decode(values)[1]) == expected, native
