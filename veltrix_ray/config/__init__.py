"""Structured Hydra configuration: schema, loading, masking of secrets, validation."""

from veltrix_ray.config.load import conf_dir, load_config, to_settings
from veltrix_ray.config.schema import VeltrixConfig

__all__ = ["VeltrixConfig", "conf_dir", "load_config", "to_settings"]
