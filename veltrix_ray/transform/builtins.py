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
    names a column is that column, anything else a literal.

    `round`: round the result to that many decimal digits (0: a whole number; negative: tens,
    hundreds, ...) before any cast. Halves go away from zero (2.5 -> 3, -2.5 -> -3), as
    PostgreSQL's round(numeric) and a cashier do. A float result is rounded as the decimal
    number it stands for (its first 15 significant digits, what float64 holds), so binary noise
    does not decide a half: 0.285 * 100 is 28.499999999999996 in float64 and rounds to 29;
    0.29 * 100 (28.999999999999996) to 29; 2.675 * 100 to 268.

    `cast`: a pyarrow type name (int64, float32, string, ...). With `safe` (the default) a
    cast that would lose information - a fraction cast to an integer, an overflow - raises,
    naming the column; `safe: false` truncates toward zero (2.9 -> 2, -2.9 -> -2) and lets
    overflows wrap: only for values known to fit."""

    name: str
    function: str
    args: Sequence[Any] = ()
    cast: str | None = None
    round: int | None = None
    safe: bool = True

    def __post_init__(self) -> None:
        try:
            pc.get_function(self.function)
        except (KeyError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"Compute {self.name!r}: {self.function!r} is not a "
                              "pyarrow.compute function.") from exc
        if self.round is not None and (isinstance(self.round, bool)
                                       or not isinstance(self.round, int)):
            raise ConfigError(f"Compute {self.name!r}: round={self.round!r} is not a whole "
                              "number of decimal digits (e.g. round: 0).")
        if self.cast is not None:
            factory = getattr(pa, self.cast, None)
            try:
                ok = callable(factory) and isinstance(factory(), pa.DataType)
            except TypeError:  # a type that needs parameters, e.g. decimal128
                ok = False
            if not ok:
                raise ConfigError(f"Compute {self.name!r}: cast={self.cast!r} is not a pyarrow "
                                  "type name such as int64, float64 or string.")
        if not isinstance(self.safe, bool):
            raise ConfigError(f"Compute {self.name!r}: safe={self.safe!r} is not true or false.")

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = set(batch.schema.names)
        args = [batch.column(a) if isinstance(a, str) and a in names else a for a in self.args]
        result = pc.call_function(self.function, args)
        if self.round is not None:
            result = round_half_away(result, self.round)
        if self.cast is not None:
            try:
                result = result.cast(getattr(pa, self.cast)(), safe=self.safe)
            except pa.ArrowInvalid as exc:
                raise ValueError(
                    f"Compute {self.name!r}: the result of {self.function} ({result.type}) "
                    f"cannot be cast to {self.cast} without losing information: {exc}. Set "
                    f"round: 0 to round it first, or safe: false to truncate.") from exc
        if self.name in names:
            i = batch.schema.get_field_index(self.name)
            return batch.set_column(i, self.name, result)
        return batch.append_column(self.name, result)


_AWAY = "half_towards_infinity"  # Arrow's name for halves away from zero
_DIGITS = 15  # significant decimal digits a float64 always holds


def round_half_away(values: Any, ndigits: int) -> Any:
    """`values` rounded to `ndigits` decimal digits, halves away from zero; a float as the
    decimal it stands for (see Compute). Vectorised: a dozen kernels, no Python per value."""
    if not pa.types.is_floating(values.type):  # integers and decimals are exact already
        return pc.round(values, ndigits, round_mode=_AWAY)
    values = values.cast(pa.float64())
    plain = pc.round(values, ndigits, round_mode=_AWAY)
    # x = digits * 10**-shift, `digits` its first 15 significant digits as a whole number
    shift = pc.subtract(_DIGITS - 1, pc.floor(pc.log10(pc.abs(values))))
    digits = pc.round(pc.multiply(values, pc.power(10.0, shift)))
    # x rounded at ndigits: digits with the last `drop` of them rounded off
    drop = pc.subtract(shift, ndigits)
    kept = pc.round(pc.divide(digits, pc.power(10.0, drop)), round_mode=_AWAY)
    exact = (pc.divide(kept, 10.0 ** ndigits) if ndigits >= 0
             else pc.multiply(kept, 10.0 ** -ndigits))
    # only where digits fall below 10**-ndigits; not for 0, nan, inf, nor values that round to
    # 0 whatever their digits (drop > 15)
    decimal = pc.and_(pc.greater(drop, 0), pc.less_equal(drop, _DIGITS)).fill_null(False)
    return pc.if_else(decimal, exact, plain)
