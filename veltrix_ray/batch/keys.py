"""Record keys as columns (pipeline.key_format): a string key as one column, or a decoder of
the key's fields beside the value's, a record with a bad key a dead letter."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from veltrix_ray.batch.contract import Decoded
from veltrix_ray.batch.schema import METADATA, Column, arrow_schema
from veltrix_ray.contracts import DeadLetter, Fetched, Reason


class TextKeys:
    """pipeline.key_format=string: the key's UTF-8 text in one column."""

    def __init__(self, column: Column) -> None:
        self.columns = [column]
        self.schema = arrow_schema(self.columns)

    def decode(self, fetched: Fetched) -> Decoded:
        skipped = [i for i, k in enumerate(fetched.values) if k is None]
        good = [i for i, k in enumerate(fetched.values) if k is not None]
        raw = pa.array([fetched.values[i] for i in good], pa.binary())
        bad: list[DeadLetter] = []
        try:
            text = raw.cast(pa.string())
        except pa.ArrowInvalid:
            ok = [j for j, k in enumerate(raw.to_pylist()) if _utf8(k)]
            bad = [fetched.dead_letter(good[j], "not valid UTF-8", Reason.DECODE)
                   for j in range(len(good)) if j not in set(ok)]
            good = [good[j] for j in ok]
            text = pa.array([fetched.values[i] for i in good], pa.binary()).cast(pa.string())
        batch = pa.RecordBatch.from_arrays([text], schema=self.schema)
        return Decoded(batch, bad, good, skipped)


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


def keyed(fetched: Fetched) -> Fetched:
    """`fetched` with its keys in place of its values (a key decoder reads them)."""
    return Fetched(fetched.partitions, fetched.offsets, fetched.keys, fetched.keys,
                   fetched.timestamps, dict(fetched.spans), fetched.topic)


class KeyedDecoder:
    """pipeline.key_format other than none: the value's columns and the key's; a record with a
    bad key is a dead letter (`key: ...`; its value's error first when both are bad)."""

    def __init__(self, values: Any, keys: Any) -> None:
        self.values = values
        self.keys = keys

    @property
    def schema(self) -> pa.Schema:
        have = set(self.values.schema.names)
        return pa.schema([*self.values.schema, *(f for f in self.keys.schema
                                                  if f.name not in have)])

    def decode(self, fetched: Fetched) -> Decoded:
        v = self.values.decode(fetched)
        k = self.keys.decode(keyed(fetched))
        vgood = v.good if v.good is not None else list(range(v.batch.num_rows))
        kgood = k.good if k.good is not None else list(range(k.batch.num_rows))
        both = set(vgood) & set(kgood)
        bad = {b.index: fetched.dead_letter(b.index, f"key: {b.error}", b.reason)
               for b in k.bad}
        for i in set(k.skipped) & set(vgood):
            bad[i] = fetched.dead_letter(i, "key: no key (pipeline.key_format is not none)",
                                         Reason.DECODE)
        bad |= {b.index: b for b in v.bad}
        vb = v.batch.filter(pa.array([i in both for i in vgood], pa.bool_()))
        kb = k.batch.filter(pa.array([i in both for i in kgood], pa.bool_()))
        names = [n for n in vb.schema.names if not n.startswith("_")]
        arrays = [vb.column(n) for n in names]
        fields = [vb.schema.field(n) for n in names]
        for f in self.keys.schema:
            if f.name not in names:
                arrays.append(kb.column(f.name))
                fields.append(f)
        for f in METADATA:
            arrays.append(vb.column(f.name))
            fields.append(vb.schema.field(f.name))
        batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        stopped = {**k.stopped, **v.stopped}
        return Decoded(batch, sorted(bad.values(), key=lambda b: b.index),
                       [i for i in vgood if i in both], v.skipped, stopped)
