"""veltrix-ray: exactly-once Kafka -> PostgreSQL event processing on Ray, in Arrow batches.

`from veltrix_ray import Pipeline, load_config`. The errors are light; Pipeline, RunSummary
and load_config load Ray and Hydra on first use, so `import veltrix_ray.errors` stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from veltrix_ray.config import load_config
    from veltrix_ray.runtime import Pipeline, RunSummary

_LAZY = {"Pipeline": "veltrix_ray.runtime", "RunSummary": "veltrix_ray.runtime",
         "load_config": "veltrix_ray.config"}

__all__ = [
    "ConfigError",
    "DeadLetterLimitExceeded",
    "FencedError",
    "MemoryBudgetExceeded",
    "Pipeline",
    "RunSummary",
    "SinkError",
    "StackError",
    "TransformError",
    "VeltrixError",
    "load_config",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'veltrix_ray' has no attribute {name!r}")
