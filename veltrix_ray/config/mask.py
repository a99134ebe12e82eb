"""Secrets never leave the process in clear: printed configs and errors get them masked."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

MASK = "****"
_SECRET_KEYS = re.compile(r"(password|secret|token|credential)", re.IGNORECASE)
# user:password@ in URLs, and password=... in libpq key/value strings
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_text(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def _mask(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (MASK if _SECRET_KEYS.search(str(k)) and v is not None else _mask(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v) for v in node]
    if isinstance(node, str):
        return mask_text(node)
    return node


def masked_yaml(cfg: DictConfig) -> str:
    container = OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.to_yaml(OmegaConf.create(_mask(container)))
