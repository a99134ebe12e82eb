import pyarrow as pa
import pytest

from veltrix_ray.errors import ConfigError
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
