"""Structured Hydra configuration: schema, loading, masking of secrets, validation.

Hydra loads on first use of load_config / to_settings / conf_dir, so importing the schema
(as the Kafka client settings do) stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from veltrix_ray.config.schema import VeltrixConfig

if TYPE_CHECKING:
    from veltrix_ray.config.load import conf_dir, load_config, to_settings

__all__ = ["VeltrixConfig", "conf_dir", "load_config", "to_settings"]


def __getattr__(name: str) -> Any:
    if name in ("conf_dir", "load_config", "to_settings"):
        from veltrix_ray.config import load

        return getattr(load, name)
    raise AttributeError(f"module 'veltrix_ray.config' has no attribute {name!r}")
