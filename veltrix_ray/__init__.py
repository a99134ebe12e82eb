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
