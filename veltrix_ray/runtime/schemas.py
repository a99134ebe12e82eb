"""Writer schemas for a worker's decoder, from the pipeline's schema registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from veltrix_ray.batch.registry import subject_name
from veltrix_ray.batch.writer import Writer
from veltrix_ray.config.schema import ColumnSource, ColumnType, VeltrixConfig

if TYPE_CHECKING:
    from veltrix_ray.registry.client import RegistryClient


class RegistrySchemas:
    """`schemas(id, subject)` -> the Writer, None when the registry has no such id; raises the
    client's RegistryUnavailable while it cannot be reached (the caller waits). `subject` is
    the side's (`<topic>-value` or `<topic>-key`): it names the schema in messages."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    @classmethod
    def from_config(cls, settings: VeltrixConfig) -> RegistrySchemas:
        from veltrix_ray.registry.client import RegistryClient
        return cls(RegistryClient.from_config(settings.schema_registry))

    def __call__(self, schema_id: int, subject: str) -> Writer | None:
        from veltrix_ray.registry.client import SchemaNotFound
        try:
            schema = self.client.schema(schema_id)
        except SchemaNotFound:
            return None
        refs = {r["name"]: self._reference(r) for r in schema.references}
        return Writer(schema.id, schema.schema_type, schema.text, refs, subject,
                      self._version(schema_id, subject))

    def _reference(self, ref: dict[str, Any]) -> str:
        return str(self.client.version(ref["subject"], int(ref["version"])).schema.text)

    def _version(self, schema_id: int, subject: str) -> int | None:
        """The version of `subject` with this id (for messages), if the registry says."""
        from veltrix_ray.registry.client import RegistryError, RegistryUnavailable
        try:
            versions = self.client.versions_of(schema_id)
        except (RegistryError, RegistryUnavailable):  # only a message's detail
            return None
        return next((v for s, v in versions if s == subject), None)


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
        p.columns.append(ColumnConfig(p.key[0] if p.key else "key", ColumnType.string, False,
                                      ColumnSource.key))


def _columns(settings: VeltrixConfig, side: str, fmt: str, key: Sequence[str]) -> list[Any]:
    from veltrix_ray.batch.registry import columns_of, writer_fields
    from veltrix_ray.config.schema import ColumnConfig
    from veltrix_ray.errors import ConfigError
    from veltrix_ray.registry.client import RegistryClient, RegistryError, RegistryUnavailable
    subject = subject_name(settings.kafka.topic, side)
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
    return [ColumnConfig(c.name, ColumnType(c.type), c.nullable, ColumnSource(side))
            for c in columns_of(fields, key)]
