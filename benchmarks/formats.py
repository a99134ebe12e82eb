"""Decode rates per core of the record formats, on the same standard events, in one process:
the JSON Decoder's Python path (msgspec; VELTRIX_NO_CODEC=1) and its veltrix_codec path,
fastavro's schemaless_reader per record (the pure-Python Avro baseline, to dicts only),
veltrix_codec (Avro in the
Confluent wire format to Arrow columns, RecordBatch included), and Protobuf (the same events
from `produce --format protobuf`) through ProtobufDecoder's Rust path and its Python (upb)
path, both to Arrow columns and a RecordBatch.

    .venv/bin/python benchmarks/formats.py [--events 100000] [--rounds 5]

One thread: records/s is per core. Prints the median of the rounds and the ratio to JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import struct
import time
from collections.abc import Callable

import fastavro
import pyarrow as pa
from veltrix_codec import AvroDecoder

from veltrix_ray.batch.json import Decoder
from veltrix_ray.batch.native import NO_CODEC_ENV
from veltrix_ray.batch.protobuf import ProtobufDecoder
from veltrix_ray.batch.schema import Column, arrow_schema
from veltrix_ray.contracts import Fetched
from veltrix_ray.produce import KINDS, generate, schema_text

COLUMNS = [
    Column("event_id", "string", False),
    Column("ts", "timestamp", False),
    Column("user_id", "int64", False),
    Column("kind", "string", False),
    Column("amount", "float64", False),
    Column("country", "string", False),
    Column("payload", "json", True),
]
SCHEMA_ID = 1
# the standard event as Avro (veltrix_ray/formats/standard_event.avsc)
AVRO_SCHEMA = {
    "type": "record", "name": "Event", "namespace": "veltrix.events",
    "fields": [
        {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "user_id", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": list(KINDS)}},
        {"name": "amount", "type": "double"},
        {"name": "country", "type": "string"},
        {"name": "payload", "type": ["null", {
            "type": "record", "name": "Payload", "fields": [
                {"name": "page", "type": "string"},
                {"name": "ab", "type": "string"},
                {"name": "items", "type": {"type": "array", "items": "long"}}]}],
         "default": None},
    ],
}


def avro_values(json_values: list[bytes]) -> list[bytes]:
    """The same events in the Confluent wire format."""
    parsed = fastavro.parse_schema(AVRO_SCHEMA)
    header = b"\x00" + struct.pack(">I", SCHEMA_ID)
    out = []
    for value in json_values:
        event = json.loads(value)
        event["ts"] = dt.datetime.fromisoformat(event["ts"])
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, event)
        out.append(header + buf.getvalue())
    return out


def json_path(values: list[bytes], native: bool) -> Callable[[], int]:
    os.environ[NO_CODEC_ENV] = "" if native else "1"
    decoder = Decoder(COLUMNS, max_record_bytes=131_072)
    assert decoder.native is native
    n = len(values)
    fetched = Fetched([0] * n, list(range(n)), [None] * n, list(values), [0] * n)

    def run() -> int:
        return decoder.decode(fetched).batch.num_rows
    return run


def fastavro_path(values: list[bytes]) -> Callable[[], int]:
    parsed = fastavro.parse_schema(AVRO_SCHEMA)
    read = fastavro.schemaless_reader

    def run() -> int:
        return len([read(io.BytesIO(v[5:]), parsed, None) for v in values])
    return run


def to_array(type: pa.DataType, n: int, buffers: tuple[bytes | None, ...]) -> pa.Array:
    validity, offsets, data = buffers
    parts = (validity, data) if offsets is None else (validity, offsets, data)
    return pa.Array.from_buffers(type, n, [None if b is None else pa.py_buffer(b) for b in parts])


def codec_path(values: list[bytes]) -> Callable[[], int]:
    decoder = AvroDecoder([(c.name, c.type, c.nullable) for c in COLUMNS])
    decoder.add_schema(SCHEMA_ID, json.dumps(AVRO_SCHEMA))
    schema = arrow_schema(COLUMNS)

    def run() -> int:
        good, bad, buffers = decoder.decode(values)
        assert not bad, bad[:3]
        arrays = [to_array(f.type, len(good), b) for f, b in zip(schema, buffers, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=schema).num_rows
    return run


def protobuf_path(values: list[bytes], native: bool) -> Callable[[], int]:
    decoder = ProtobufDecoder([(c.name, c.type, c.nullable) for c in COLUMNS], native=native)
    decoder.add_schema(SCHEMA_ID, schema_text("protobuf"))
    assert decoder.native(SCHEMA_ID) == native
    schema = arrow_schema(COLUMNS)

    def run() -> int:
        good, bad, arrays = decoder.decode(values)
        assert not bad, bad[:3]
        return pa.RecordBatch.from_arrays(arrays, schema=schema).num_rows
    return run


def rate(run: Callable[[], int], events: int, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        rows = run()
        rates.append(rows / (time.perf_counter() - started))
        assert rows == events, (rows, events)
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    json_values = [r.value for r in generate(args.events, seed=11)]
    avro = avro_values(json_values)
    proto = [r.value for r in generate(args.events, seed=11, format="protobuf",
                                       schema_id=SCHEMA_ID)]
    print(f"{args.events} standard events: JSON {sum(map(len, json_values)) / args.events:.0f} "
          f"bytes each, Avro {sum(map(len, avro)) / args.events:.0f}, "
          f"Protobuf {sum(map(len, proto)) / args.events:.0f}")
    paths = {
        "json python (msgspec)": json_path(json_values, native=False),
        "json veltrix_codec": json_path(json_values, native=True),
        "avro fastavro per record": fastavro_path(avro),
        "avro veltrix_codec": codec_path(avro),
        "protobuf python (upb)": protobuf_path(proto, native=False),
        "protobuf veltrix_codec": protobuf_path(proto, native=True),
    }
    base = None
    for name, run in paths.items():
        r = rate(run, args.events, args.rounds)
        base = base or r
        print(f"{name:28s} {r:12,.0f} records/s per core  {r / base:5.2f}x json")


if __name__ == "__main__":
    main()
