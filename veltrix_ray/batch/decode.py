"""Kafka record values (JSON) -> one Arrow RecordBatch per fetch, bad records isolated."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import msgspec
import pyarrow as pa

from veltrix_ray.batch.schema import METADATA, Column, arrow_schema, decoding_type
from veltrix_ray.contracts import DeadLetter, Fetched, Reason

_BOM = b"\xef\xbb\xbf"


@dataclass
class Decoded:
    batch: pa.RecordBatch  # the good rows: schema columns + Kafka metadata columns
    bad: list[DeadLetter] = field(default_factory=list)
    good: list[int] | None = None  # fetch positions of the batch's rows (None: all of them)


class Decoder:
    """Decodes a whole fetch in one C call (msgspec); only a failing fetch is split up."""

    def __init__(self, columns: Sequence[Column], max_record_bytes: int) -> None:
        self.columns = list(columns)
        self.schema = arrow_schema(self.columns)
        self.full_schema = pa.unify_schemas([self.schema, METADATA])
        self.max_record_bytes = max_record_bytes
        event = decoding_type(self.columns)
        self._one = msgspec.json.Decoder(event)
        self._many = msgspec.json.Decoder(list[event])  # type: ignore[valid-type]
        # second chance for ISO-8601 timestamps RFC 3339 does not cover ("+00", "T10:00Z")
        self._timestamps = [c.name for c in self.columns if c.type == "timestamp"]
        self._lenient = msgspec.json.Decoder(
            decoding_type(self.columns, timestamps_as_text=True))
        self._getters = [(c, attrgetter(c.name)) for c in self.columns]

    def decode(self, fetched: Fetched) -> Decoded:
        values = fetched.values
        good: list[int] | None = None
        bad: list[DeadLetter] = []
        rows: list[msgspec.Struct] = []
        if all(v is not None and len(v) <= self.max_record_bytes for v in values):
            try:
                rows = self._many.decode(b"[" + b",".join(values) + b"]")  # type: ignore[arg-type]
            except (msgspec.MsgspecError, ValueError):
                rows = []
            # one element per record, each a valid event; anything else is isolated below
            if len(rows) != len(values):
                rows = []
        if not rows and values:
            good, rows = [], []
            for i, value in enumerate(values):
                row, error = self._decode_one(value)
                if row is not None:
                    good.append(i)
                    rows.append(row)
                else:
                    bad.append(fetched.dead_letter(i, str(error), Reason.DECODE))
        return Decoded(self._to_batch(rows, fetched, good), bad, good)

    def _decode_one(self, value: bytes | None) -> tuple[msgspec.Struct | None, str | None]:
        if value is None:
            return None, "record has no value (tombstone)"
        if len(value) > self.max_record_bytes:
            return None, (f"value of {len(value)} bytes exceeds pipeline.max_record_bytes="
                          f"{self.max_record_bytes}")
        value = value.removeprefix(_BOM)
        try:
            return self._one.decode(value), None
        except UnicodeDecodeError as exc:
            return None, f"value is not valid UTF-8: {exc}"
        except msgspec.ValidationError as exc:
            if self._timestamps and "datetime" in str(exc):
                return self._decode_lenient(value, exc)
            return None, f"{type(exc).__name__}: {exc}"
        except (msgspec.MsgspecError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _decode_lenient(self, value: bytes, strict: msgspec.ValidationError,
                        ) -> tuple[msgspec.Struct | None, str | None]:
        """Timestamps that RFC 3339 rejects but ISO 8601 allows, e.g. PostgreSQL's
        "2026-11-26 10:00:00+00"; a zone is still required."""
        try:
            row = self._lenient.decode(value)
        except msgspec.MsgspecError:
            return None, f"ValidationError: {strict}"
        for name in self._timestamps:
            text = getattr(row, name)
            if text is None:
                continue
            try:
                ts = dt.datetime.fromisoformat(text)
            except ValueError:
                return None, f"ValidationError: {strict}"
            if ts.tzinfo is None:
                return None, f"ValidationError: timestamp {text!r} has no zone - at `$.{name}`"
            setattr(row, name, ts)
        return row, None

    def _to_batch(self, rows: list[msgspec.Struct], fetched: Fetched,
                  good: list[int] | None) -> pa.RecordBatch:
        arrays = []
        for col, get in self._getters:
            data = [get(r) for r in rows]
            if col.type == "json":
                raw = [None if v is None else bytes(v) for v in data]
                data = [None if v == b"null" else v for v in raw]
                arrays.append(pa.array(data, pa.binary()).cast(pa.string()))
            else:
                arrays.append(pa.array(data, self.schema.field(col.name).type))
        if good is None:
            meta = [fetched.partitions, fetched.offsets, fetched.keys, fetched.timestamps]
        else:
            meta = [[column[i] for i in good] for column in
                    (fetched.partitions, fetched.offsets, fetched.keys, fetched.timestamps)]
        meta.insert(0, [fetched.topic] * len(rows))
        arrays += [pa.array(m, f.type) for m, f in zip(meta, METADATA, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.full_schema)
