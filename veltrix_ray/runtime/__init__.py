"""Ray actors (Coordinator, PartitionWorker), memory budget, run modes."""

from veltrix_ray.runtime.pipeline import Pipeline
from veltrix_ray.runtime.summary import RunSummary

__all__ = ["Pipeline", "RunSummary"]
