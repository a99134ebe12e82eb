"""Avro: a writer schema's top-level fields, and the codec (veltrix_codec's AvroDecoder, Rust)
that decodes framed datums into Arrow columns. Schema-id routing and evolution are the
registry decoder's (registry.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from veltrix_ray.batch.schema import Column, from_buffers
from veltrix_ray.batch.writer import Field, Writer
from veltrix_ray.errors import ConfigError

_AVRO_PRIMITIVE = {"int": "int64", "long": "int64", "float": "float64", "double": "float64",
                   "string": "string", "boolean": "bool", "bytes": "bytes"}
_AVRO_LOGICAL = {"timestamp-millis": "timestamp", "timestamp-micros": "timestamp",
                 "local-timestamp-millis": "timestamp", "local-timestamp-micros": "timestamp",
                 "date": "date", "decimal": "decimal", "uuid": "uuid"}


def avro_fields(text: str) -> list[Field]:
    """The columns an Avro record schema gives (nested values are json)."""
    schema = json.loads(text)
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ValueError("the value schema is not an Avro record: its fields are the columns")
    named: dict[str, Any] = {}

    def kind(t: Any) -> tuple[str, bool]:
        if isinstance(t, list):
            branches = [b for b in t if b != "null"]
            nullable = len(branches) < len(t)
            if len(branches) == 1:
                return kind(branches[0])[0], nullable
            return "json", nullable
        if isinstance(t, str):
            if t in _AVRO_PRIMITIVE:
                return _AVRO_PRIMITIVE[t], False
            if t == "null":
                return "json", True
            return kind(named.get(t, named.get(t.rsplit(".", 1)[-1], "json")))
        if isinstance(t, dict):
            if "name" in t and t.get("type") in ("record", "enum", "fixed"):
                named[t["name"]] = t
                if t.get("namespace"):
                    named[f"{t['namespace']}.{t['name']}"] = t
            logical = _AVRO_LOGICAL.get(t.get("logicalType", ""))
            base = t.get("type")
            if logical and (logical != "uuid" or base == "string"):
                return logical, False
            if base == "enum":
                return "string", False
            if base == "fixed":
                return "bytes", False
            if base in ("record", "map", "array"):
                _walk(t)
                return "json", False
            return kind(base)
        return "json", False

    def _walk(t: Any) -> None:  # register named types defined inside nested values
        for sub in t.get("fields", []):
            kind(sub.get("type"))
        for key in ("items", "values"):
            if key in t:
                kind(t[key])

    if schema.get("name"):
        named[schema["name"]] = schema
    out = []
    for f in schema.get("fields", []):
        k, nullable = kind(f["type"])
        out.append(Field(f["name"], k, nullable, "default" in f))
    return out


class AvroCodec:
    def __init__(self, columns: Sequence[Column]) -> None:
        try:
            import veltrix_codec
        except ImportError as exc:
            raise ConfigError(
                "pipeline.format=avro needs the veltrix_codec extension (Rust), which is not "
                "installed: run `make` in the project, or `pip install ./native`") from exc
        self.columns = list(columns)
        self._codec = veltrix_codec.AvroDecoder([(c.name, c.type, c.nullable) for c in columns])

    def add_schema(self, writer: Writer) -> None:
        self._codec.add_schema(writer.id, writer.text)

    def has(self, schema_id: int) -> bool:
        return bool(self._codec.has(schema_id))

    def decode(self, values: list[bytes]) -> tuple[list[int], list[tuple[int, str]],
                                                    list[pa.Array]]:
        ok, errors, buffers = self._codec.decode(values)
        return ok, errors, from_buffers([c.type for c in self.columns], len(ok), buffers)
