"""Loading the Hydra config (Compose API) the same way for the CLI, Python and notebooks."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from veltrix_ray.config.schema import (
    KafkaConfig,
    PipelineConfig,
    PostgresConfig,
    TopologyConfig,
    VeltrixConfig,
)
from veltrix_ray.errors import ConfigError


def _register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="veltrix_schema", node=VeltrixConfig)
    cs.store(group="kafka", name="kafka_schema", node=KafkaConfig)
    cs.store(group="postgres", name="postgres_schema", node=PostgresConfig)
    cs.store(group="pipeline", name="pipeline_schema", node=PipelineConfig)
    cs.store(group="topology", name="topology_schema", node=TopologyConfig)


_register()


def conf_dir() -> Path:
    """$VELTRIX_CONF_DIR, else the repository's conf/, else ./conf."""
    env = os.environ.get("VELTRIX_CONF_DIR")
    if env:
        return Path(env).resolve()
    beside = Path(__file__).resolve().parents[2] / "conf"
    return beside if beside.is_dir() else (Path.cwd() / "conf").resolve()


def load_config(overrides: Sequence[str] = (), *,
                config_dir: str | Path | None = None) -> DictConfig:
    """Compose the config from conf/ plus Hydra overrides, e.g. ["pipeline=user_totals"].

    Raises ConfigError naming the key for typos, wrong types and missing values."""
    directory = Path(config_dir) if config_dir is not None else conf_dir()
    if not (directory / "config.yaml").exists():
        raise ConfigError(f"No config.yaml in {directory}; set VELTRIX_CONF_DIR to the folder "
                          "holding veltrix-ray's conf/ (config.yaml, pipeline/, topology/, ...).")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
        missing = sorted(OmegaConf.missing_keys(cfg))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"Invalid configuration: {_explain(exc)}") from exc
    finally:
        GlobalHydra.instance().clear()
    if missing:
        raise ConfigError("Missing required config value(s): " + ", ".join(missing) +
                          ". Set them as overrides, e.g. `" + missing[0] + "=...`.")
    return cfg


def _explain(exc: Exception) -> str:
    """Hydra's message, minus what misleads here (the `+key` append hint for a typo, the
    schema entries among a group's options, the search path), plus the valid keys."""
    detail = str(exc)
    cause = exc.__cause__
    if cause is not None and str(cause) not in detail:
        detail += f"\n{cause}"
    lines = [line for line in detail.splitlines()
             if not line.startswith("To append to your config use +")
             and not line.strip().endswith("_schema")]
    if "Config search path:" in lines:
        lines = lines[:lines.index("Config search path:")]
    lines = _item_keys(lines)
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and full_key and "." in full_key:
        parent = full_key.rsplit(".", 1)[0]
        node = OmegaConf.select(OmegaConf.structured(VeltrixConfig), parent)
        if isinstance(node, DictConfig):
            lines.append(f"Keys of {parent}: {', '.join(str(k) for k in node)} "
                         "(`veltrix-ray config show` prints the whole config).")
    return "\n".join(line for line in lines if line.strip())


def _list_items(node: type, prefix: str = "") -> dict[str, str]:
    """The structured configs that are list items, by class name, with their list's key:
    {"ColumnConfig": "pipeline.columns[]"}."""
    found: dict[str, str] = {}
    for name, hint in typing.get_type_hints(node).items():
        args = typing.get_args(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            found |= _list_items(hint, f"{prefix}{name}.")
        elif (typing.get_origin(hint) is list and args and isinstance(args[0], type)
              and dataclasses.is_dataclass(args[0])):
            found[args[0].__name__] = f"{prefix}{name}[]"
    return found


def _item_keys(lines: list[str]) -> list[str]:
    """OmegaConf names a list item's field alone (`full_key: type`): the whole key instead,
    e.g. `full_key: pipeline.columns[].type`."""
    owner = next((m.group(1) for line in lines if (m := re.search(r"object_type=(\w+)", line))),
                 None)
    items = _list_items(VeltrixConfig)
    if owner not in items:
        return lines
    return [re.sub(r"^(\s*full_key: )(\w+)$", rf"\g<1>{items[owner]}.\2", line)
            for line in lines]


def to_settings(cfg: DictConfig) -> VeltrixConfig:
    """The typed dataclass view of a composed config (what the runtime passes around)."""
    settings = OmegaConf.to_object(cfg)
    assert isinstance(settings, VeltrixConfig)
    return settings
