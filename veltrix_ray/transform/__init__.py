"""The transform contract (RecordBatch -> RecordBatch) and built-ins, chained from config."""

from veltrix_ray.transform.builtins import Compute, Filter, Select
from veltrix_ray.transform.chain import Transform, build_chain

__all__ = ["Compute", "Filter", "Select", "Transform", "build_chain"]
