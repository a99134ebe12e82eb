"""Writer schemas for a worker's decoder, from the pipeline's schema registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from veltrix_ray.batch.registry import Writer
from veltrix_ray.config.schema import VeltrixConfig


class RegistrySchemas:
    """`schemas(id)` -> the Writer, None when the registry has no such id; raises the client's
    RegistryUnavailable while it cannot be reached (the caller waits)."""

    def __init__(self, settings: VeltrixConfig) -> None:
        from veltrix_ray.registry.client import RegistryClient
        self.client = RegistryClient.from_config(settings.schema_registry)
        self.subject = f"{settings.kafka.topic}-value"

    def __call__(self, schema_id: int) -> Writer | None:
        from veltrix_ray.registry.client import SchemaNotFound
        try:
            schema = self.client.schema(schema_id)
        except SchemaNotFound:
            return None
        refs = {r["name"]: self._reference(r) for r in schema.references}
        return Writer(schema.id, schema.schema_type, schema.text, refs, self.subject,
                      self._version(schema_id))

    def _reference(self, ref: dict[str, Any]) -> str:
        return str(self.client.version(ref["subject"], int(ref["version"])).schema.text)

    def _version(self, schema_id: int) -> int | None:
        """The version of the value subject with this id (for messages), if the registry
        says."""
        try:
            for sv in self.client._call("GET", f"/schemas/ids/{schema_id}/versions"):
                if sv.get("subject") == self.subject:
                    return int(sv["version"])
        except Exception:  # only a message's detail
            return None
        return None


def resolve_columns(settings: VeltrixConfig) -> None:
    """For avro/protobuf without pipeline.columns: the columns of the value subject's latest
    version (TopicNameStrategy: <topic>-value). Fails before launch, naming what to fix."""
    from veltrix_ray.batch.registry import REGISTRY_FORMATS
    from veltrix_ray.config.schema import ColumnConfig
    p = settings.pipeline
    if p.columns or not settings.schema_registry.url:
        return
    key = p.key if p.mode == "upsert" else ()
    if p.format in REGISTRY_FORMATS:
        p.columns = _columns(settings, "value", p.format, key)
    if p.key_format in REGISTRY_FORMATS and p.columns:
        have = {c.name for c in p.columns}
        p.columns += [c for c in _columns(settings, "key", p.key_format, key)
                      if c.name not in have]
    elif p.key_format == "string" and p.columns:
        p.columns.append(ColumnConfig(p.key[0] if p.key else "key", "string", False, "key"))


def _columns(settings: VeltrixConfig, side: str, fmt: str, key: Sequence[str]) -> list[Any]:
    from veltrix_ray.batch.registry import columns_of, writer_fields
    from veltrix_ray.config.schema import ColumnConfig
    from veltrix_ray.errors import ConfigError
    from veltrix_ray.registry.client import RegistryClient, RegistryError, RegistryUnavailable
    subject = f"{settings.kafka.topic}-{side}"
    client = RegistryClient.from_config(settings.schema_registry)
    try:
        latest = client.latest(subject)
        refs = {r["name"]: str(client.version(r["subject"], int(r["version"])).schema.text)
                for r in latest.schema.references}
    except RegistryUnavailable as exc:
        raise ConfigError(f"schema_registry.url: the registry cannot be reached ({exc}); start "
                          "it (`veltrix-ray local up`) or fix the URL") from exc
    except RegistryError as exc:
        raise ConfigError(
            f"pipeline.columns is empty, so the columns come from the registry's subject "
            f"{subject}, which it does not have ({exc}): register the topic's schema there "
            f"(`veltrix-ray produce --format {fmt}` does), or list pipeline.columns"
        ) from exc
    schema = latest.schema
    writer = Writer(schema.id, schema.schema_type, schema.text, refs, subject, latest.version)
    try:
        fields = writer_fields(writer)
    except Exception as exc:
        which = "key_format" if side == "key" else "format"
        raise ConfigError(f"pipeline.{which}={fmt}: {writer.where()} cannot be read: "
                          f"{type(exc).__name__}: {exc}") from exc
    return [ColumnConfig(c.name, c.type, c.nullable, side)
            for c in columns_of(fields, key)]
