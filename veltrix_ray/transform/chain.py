"""Building the chain from Hydra `_target_` nodes."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from hydra.errors import HydraException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from veltrix_ray.errors import ConfigError

Transform = Callable[[pa.RecordBatch], pa.RecordBatch]


def _build(i: int, node: Any) -> Transform:
    raw = OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)
    assert isinstance(raw, dict)
    spec: dict[str, Any] = {str(k): v for k, v in raw.items()}
    target = spec.get("_target_")
    if not target:
        raise ConfigError(f"pipeline.transforms[{i}] has no _target_ (an importable function or "
                          "class, e.g. veltrix_ray.transform.Filter).")
    try:
        obj = get_object(str(target))
        kwargs = {k: v for k, v in spec.items() if not k.startswith("_")}
        if inspect.isclass(obj):
            built = instantiate(spec)
        elif kwargs:
            built = functools.partial(obj, **kwargs)
        else:
            built = obj
    except (HydraException, ImportError, TypeError) as exc:
        raise ConfigError(f"pipeline.transforms[{i}] ({target}) could not be built: {exc}") from exc
    if not callable(built):
        raise ConfigError(f"pipeline.transforms[{i}] ({target}) is not callable; a transform "
                          "takes a pyarrow.RecordBatch and returns one.")
    return built  # type: ignore[no-any-return]


def build_chain(nodes: Sequence[Any]) -> Transform:
    steps = [_build(i, n) for i, n in enumerate(nodes)]

    def chain(batch: pa.RecordBatch) -> pa.RecordBatch:
        for step in steps:
            batch = step(batch)
            if not isinstance(batch, pa.RecordBatch):
                raise TypeError(f"transform {step!r} returned {type(batch).__name__}, "
                                "not a pyarrow.RecordBatch")
        return batch

    return chain
