"""Built-in transforms: each a small frozen dataclass, vectorised with pyarrow.compute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from veltrix_ray.errors import ConfigError

_OPS = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
        ">": pc.greater, ">=": pc.greater_equal}


@dataclass(frozen=True)
class Filter:
    """Keep rows where `column op value`; op is one of == != < <= > >= in not_in is_null
    not_null. Rows where the comparison is null are dropped."""

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in {*_OPS, "in", "not_in", "is_null", "not_null"}:
            raise ConfigError(f"Filter op {self.op!r} on column {self.column!r} is not one of "
                              f"{', '.join([*_OPS, 'in', 'not_in', 'is_null', 'not_null'])}.")

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        col = batch.column(self.column)
        if self.op in _OPS:
            mask = _OPS[self.op](col, pa.scalar(self.value).cast(col.type))
        elif self.op in {"in", "not_in"}:
            mask = pc.is_in(col, value_set=pa.array(list(self.value)).cast(col.type))
            if self.op == "not_in":
                mask = pc.invert(mask)
        else:
            mask = pc.is_null(col) if self.op == "is_null" else pc.is_valid(col)
        return batch.filter(mask, null_selection_behavior="drop")


@dataclass(frozen=True)
class Select:
    """Keep `columns` in that order (Kafka metadata `_kafka_*` stays available unless
    `drop_metadata`), then rename per `rename`."""

    columns: Sequence[str]
    rename: Mapping[str, str] = field(default_factory=dict)
    drop_metadata: bool = False

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = list(self.columns)
        if not self.drop_metadata:
            names += [n for n in batch.schema.names if n.startswith("_") and n not in names]
        out = batch.select(names)
        return out.rename_columns([self.rename.get(n, n) for n in out.schema.names])


@dataclass(frozen=True)
class Compute:
    """Add (or replace) column `name` = pyarrow.compute `function`(*args); a string arg that
    names a column is that column, anything else a literal. Optional `cast` to a type name."""

    name: str
    function: str
    args: Sequence[Any] = ()
    cast: str | None = None

    def __post_init__(self) -> None:
        try:
            pc.get_function(self.function)
        except (KeyError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"Compute {self.name!r}: {self.function!r} is not a "
                              "pyarrow.compute function.") from exc

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = set(batch.schema.names)
        args = [batch.column(a) if isinstance(a, str) and a in names else a for a in self.args]
        result = pc.call_function(self.function, args)
        if self.cast is not None:
            result = result.cast(getattr(pa, self.cast)())
        if self.name in names:
            i = batch.schema.get_field_index(self.name)
            return batch.set_column(i, self.name, result)
        return batch.append_column(self.name, result)
