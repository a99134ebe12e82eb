"""The transform contract (RecordBatch -> RecordBatch) and built-ins, chained from config."""

from veltrix_ray.transform.builtins import Compute, Filter, Select
from veltrix_ray.transform.chain import (
    Chain,
    Transform,
    TransformFailed,
    build_chain,
    output_schema,
)

__all__ = ["Chain", "Compute", "Filter", "Select", "Transform", "TransformFailed", "build_chain",
           "output_schema"]
