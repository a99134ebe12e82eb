"""Built-in transforms: Filter, Select, Compute (its rounding and casts), chained from config."""

from decimal import Decimal

import pyarrow as pa
import pytest

from veltrix_ray.batch import Decoder, columns_from_config
from veltrix_ray.config import load_config, to_settings
from veltrix_ray.contracts import Fetched
from veltrix_ray.errors import ConfigError
from veltrix_ray.produce import generate
from veltrix_ray.transform import Compute, Filter, Select, build_chain

pytestmark = pytest.mark.unit

BATCH = pa.RecordBatch.from_pydict({"kind": ["a", "b", None], "amount": [1.5, 2.0, 3.25],
                                    "_kafka_offset": [1, 2, 3]})


def test_builtins_filter_compute_select() -> None:
    chain = build_chain([
        {"_target_": "veltrix_ray.transform.Filter", "column": "kind", "op": "!=", "value": "b"},
        {"_target_": "veltrix_ray.transform.Compute", "name": "cents", "function": "multiply",
         "args": ["amount", 100], "cast": "int64"},
        {"_target_": "veltrix_ray.transform.Select", "columns": ["cents", "kind"],
         "rename": {"kind": "k"}},
    ])
    out = chain(BATCH)
    assert out.schema.names == ["cents", "k", "_kafka_offset"]
    assert out.to_pydict() == {"cents": [150], "k": ["a"], "_kafka_offset": [1]}


def test_plain_function_target_with_and_without_arguments() -> None:
    out = build_chain([{"_target_": "pyarrow.RecordBatch.slice", "offset": 1}])(BATCH)
    assert out.num_rows == 2


def test_config_mistakes_name_the_transform() -> None:
    with pytest.raises(ConfigError, match=r"pipeline.transforms\[0\] has no _target_"):
        build_chain([{"column": "x"}])
    with pytest.raises(ConfigError, match=r"pipeline.transforms\[0\] \(nope.missing\)"):
        build_chain([{"_target_": "nope.missing"}])
    with pytest.raises(ConfigError, match="Filter op '~'"):
        Filter("kind", "~", 1)
    with pytest.raises(ConfigError, match="not a pyarrow.compute function"):
        Compute("x", "no_such_function")
    assert Select(["kind"], drop_metadata=True)(BATCH).schema.names == ["kind"]


# --- Compute: explicit numeric semantics ----------------------------------------------------

AMOUNTS = pa.RecordBatch.from_pydict({"amount": [0.29, 2.675, 0.285, 1.005, 4.35, -0.285, None,
                                                 0.0, 0.5, 2.5, -2.5, 123456789.125]})


def test_compute_round_then_cast_gives_the_cents_a_person_would() -> None:
    out = Compute("cents", "multiply", ["amount", 100], round=0, cast="int64")(AMOUNTS)
    assert out.schema.field("cents").type == pa.int64()
    # halves away from zero, each float read as the decimal it stands for
    assert out.column("cents").to_pylist() == [29, 268, 29, 101, 435, -29, None, 0, 50, 250,
                                               -250, 12345678913]


def test_compute_round_to_decimal_places_and_to_tens() -> None:
    out = Compute("a2", "multiply", ["amount", 1], round=2)(AMOUNTS)
    assert out.column("a2").to_pylist() == [0.29, 2.68, 0.29, 1.01, 4.35, -0.29, None, 0.0,
                                            0.5, 2.5, -2.5, 123456789.13]
    ints = pa.RecordBatch.from_pydict({"n": [15, 25, -15, 14]})
    assert Compute("n", "add", ["n", 0], round=-1)(ints).column("n").to_pylist() == [
        20, 30, -20, 10]
    halves = pa.RecordBatch.from_pydict({"x": [0.5, 1.5, -0.5, -1.5, float("nan")]})
    rounded = Compute("x", "multiply", ["x", 1], round=0)(halves).column("x").to_pylist()
    assert rounded[:4] == [1.0, 2.0, -1.0, -2.0] and rounded[4] != rounded[4]  # nan stays


def test_a_lossy_cast_raises_naming_the_column_and_the_fix() -> None:
    with pytest.raises(ValueError) as caught:
        Compute("amount_cents", "multiply", ["amount", 100], cast="int64")(AMOUNTS)
    assert str(caught.value) == (
        "Compute 'amount_cents': the result of multiply (double) cannot be cast to int64 without "
        "losing information: Float value 29.000000 was truncated converting to int64. Set "
        "round: 0 to round it first, or safe: false to truncate.")


def test_an_unsafe_cast_truncates_toward_zero() -> None:
    batch = pa.RecordBatch.from_pydict({"x": [2.9, -2.9, 0.29]})
    out = Compute("y", "multiply", ["x", 1], cast="int64", safe=False)(batch)
    assert out.column("y").to_pylist() == [2, -2, 0]


def test_compute_config_mistakes() -> None:
    with pytest.raises(ConfigError, match=r"Compute 'c': round='0' is not a whole number"):
        Compute("c", "multiply", ["x", 1], round="0")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Compute 'c': cast='int' is not a pyarrow type"):
        Compute("c", "multiply", ["x", 1], cast="int")
    with pytest.raises(ConfigError, match=r"Compute 'c': safe='no' is not true or false"):
        Compute("c", "multiply", ["x", 1], safe="no")  # type: ignore[arg-type]


def test_a_lossy_cast_in_the_chain_is_a_transform_failure_of_that_row_only() -> None:
    chain = build_chain([{"_target_": "veltrix_ray.transform.Compute", "name": "cents",
                          "function": "multiply", "args": ["amount", 100], "cast": "int64"}])
    batch = pa.RecordBatch.from_pydict({"amount": [1.5, 0.29, 2.0]})
    outs, failed = chain.isolating(batch)
    assert [o.column("cents").to_pylist() for o in outs] == [[150], [200]]
    assert [(i, str(exc)) for i, exc in failed] == [(1, (
        "pipeline.transforms[0] (Compute) raised ValueError: Compute 'cents': the result of "
        "multiply (double) cannot be cast to int64 without losing information: Float value "
        "29.000000 was truncated converting to int64. Set round: 0 to round it first, or "
        "safe: false to truncate."))]


def test_user_totals_gives_every_generated_amount_its_exact_cents() -> None:
    settings = to_settings(load_config(["pipeline=user_totals", "kafka.topic=t"]))
    records = list(generate(300_000))
    values: list[bytes | None] = [r.value for r in records]
    n = len(values)
    decoded = Decoder(columns_from_config(settings.pipeline.columns),
                      settings.pipeline.max_record_bytes).decode(
        Fetched([0] * n, list(range(n)), [r.key for r in records], values, [0] * n))
    assert decoded.bad == [] and decoded.batch.num_rows == n
    out = build_chain(settings.pipeline.transforms)(decoded.batch)
    kinds = decoded.batch.column("kind").to_pylist()
    amounts = decoded.batch.column("amount").to_pylist()
    # the amount as written (two decimals), times 100, in exact decimal arithmetic
    cents = [Decimal(repr(a)) * 100 for a, k in zip(amounts, kinds, strict=True) if k != "refund"]
    assert all(c == c.to_integral_value() for c in cents)
    assert sum(1 for c in cents if c) > 30_000  # the priced kinds, 100 to 498.99
    assert out.schema.field("amount_cents").type == pa.int64()
    assert out.column("amount_cents").to_pylist() == [int(c) for c in cents]
    assert out.column("last_event_id").to_pylist() == [
        r.event_id for r, k in zip(records, kinds, strict=True) if k != "refund"]
