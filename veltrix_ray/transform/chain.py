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

from veltrix_ray.batch.schema import METADATA, arrow_schema, columns_from_config
from veltrix_ray.config.schema import VeltrixConfig
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


class TransformFailed(Exception):
    """Transform `index` of pipeline.transforms raised `cause`."""

    def __init__(self, index: int, name: str, cause: Exception) -> None:
        super().__init__(f"pipeline.transforms[{index}] ({name}) raised "
                         f"{type(cause).__name__}: {cause}")
        self.index = index
        self.name = name
        self.cause = cause


class Chain:
    """The pipeline's transforms, applied in order to a batch."""

    def __init__(self, steps: Sequence[tuple[str, Transform]]) -> None:
        self.steps = list(steps)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        for i, (name, step) in enumerate(self.steps):
            try:
                out = step(batch)
            except Exception as exc:
                raise TransformFailed(i, name, exc) from exc
            if not isinstance(out, pa.RecordBatch):
                raise TransformFailed(i, name, TypeError(
                    f"returned {type(out).__name__}, not a pyarrow.RecordBatch"))
            batch = out
        return batch

    def isolating(self, batch: pa.RecordBatch,
                  ) -> tuple[list[pa.RecordBatch], list[tuple[int, TransformFailed]]]:
        """Apply the chain; when it raises, retry on halves until the rows that make it raise
        are found. Returns the outputs of the parts that passed (in row order) and, per
        failing row, its position in `batch` and the failure. Clean batches take one call."""
        out: list[pa.RecordBatch] = []
        failed: list[tuple[int, TransformFailed]] = []
        pending = [(0, batch)]
        while pending:
            start, part = pending.pop()
            try:
                out.append(self(part))
            except TransformFailed as exc:
                if part.num_rows <= 1:
                    failed.extend((start + i, exc) for i in range(part.num_rows))
                    continue
                half = part.num_rows // 2
                # last in, first out: the first half is tried first, keeping row order
                pending.append((start + half, part.slice(half)))
                pending.append((start, part.slice(0, half)))
        return out, failed


def build_chain(nodes: Sequence[Any]) -> Chain:
    return Chain([(_name(n), _build(i, n)) for i, n in enumerate(nodes)])


def output_schema(settings: VeltrixConfig) -> pa.Schema:
    """What the transform chain makes of a decoded batch (run once on an empty batch)."""
    full = pa.unify_schemas([arrow_schema(columns_from_config(settings.pipeline.columns)),
                             METADATA])
    empty = pa.RecordBatch.from_pylist([], schema=full)
    return build_chain(settings.pipeline.transforms)(empty).schema


def _name(node: Any) -> str:
    target = node.get("_target_") if hasattr(node, "get") else None
    return str(target or node).rsplit(".", 1)[-1]
