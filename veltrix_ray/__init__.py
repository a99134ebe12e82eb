"""veltrix-ray: exactly-once Kafka -> PostgreSQL event processing on Ray, in Arrow batches."""

from veltrix_ray.errors import (
    ConfigError,
    DeadLetterLimitExceeded,
    FencedError,
    MemoryBudgetExceeded,
    SinkError,
    StackError,
    TransformError,
    VeltrixError,
)

__all__ = [
    "ConfigError",
    "DeadLetterLimitExceeded",
    "FencedError",
    "MemoryBudgetExceeded",
    "SinkError",
    "StackError",
    "TransformError",
    "VeltrixError",
]

from veltrix_ray.config import load_config  # noqa: E402
from veltrix_ray.runtime import Pipeline, RunSummary  # noqa: E402

__all__ += ["Pipeline", "RunSummary", "load_config"]
