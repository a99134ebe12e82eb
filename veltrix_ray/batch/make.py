"""The decoder a pipeline's config asks for (pipeline.format, key_format, columns)."""

from __future__ import annotations

from collections.abc import Callable

from veltrix_ray.batch.contract import RecordDecoder
from veltrix_ray.batch.json import Decoder
from veltrix_ray.batch.keys import KeyedDecoder, TextKeys, keyed
from veltrix_ray.batch.registry import REGISTRY_FORMATS, RegistryDecoder
from veltrix_ray.batch.schema import Column, columns_from_config
from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.contracts import Fetched

Registries = list[tuple[RegistryDecoder, Callable[[Fetched], Fetched]]]


def make_decoder(s: VeltrixConfig) -> tuple[RecordDecoder, Registries]:
    """The decoder pipeline.format and key_format ask for, and its registry-backed sides
    (each with how it sees a fetch: values, or keys as values)."""
    p = s.pipeline
    value_cols = columns_from_config([c for c in p.columns if c.source != "key"])
    key_cols = [Column(str(c.name), str(c.type), bool(c.nullable)) for c in p.columns
                if c.source == "key"]
    registries: Registries = []
    values: RecordDecoder
    if p.format in REGISTRY_FORMATS:
        values = RegistryDecoder(value_cols, p.format, s.kafka.topic,
                                 evolution=p.schema_evolution,
                                 max_record_bytes=p.max_record_bytes)
        registries.append((values, lambda f: f))
    else:
        values = Decoder(value_cols, p.max_record_bytes)
    if p.key_format == "none":
        return values, registries
    keys: RecordDecoder
    if p.key_format == "string":
        keys = TextKeys(key_cols[0] if key_cols else Column(p.key[0] if p.key else "key",
                                                            "string"))
    elif p.key_format == "json":
        keys = Decoder(columns_from_config(key_cols), p.max_record_bytes)
    else:
        keys = RegistryDecoder(key_cols, p.key_format, s.kafka.topic, side="key",
                               max_record_bytes=p.max_record_bytes)
        registries.append((keys, keyed))
    return KeyedDecoder(values, keys), registries
