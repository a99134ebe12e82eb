"""Writer schemas as a worker learns them: each side's subject names it (a fake registry)."""

from __future__ import annotations

import pytest

from tests.runtime.fakes import settings
from veltrix_ray.batch.make import make_decoder
from veltrix_ray.registry.client import Schema, SchemaNotFound
from veltrix_ray.runtime.schemas import RegistrySchemas

pytestmark = pytest.mark.unit

KEY = '{"type": "record", "name": "Key", "fields": [{"name": "user_id", "type": "long"}]}'


class FakeRegistry:
    """Schema 7 is version 3 of t-key (and version 1 of another subject)."""

    def schema(self, schema_id: int) -> Schema:
        if schema_id != 7:
            raise SchemaNotFound(f"no schema {schema_id}", 404)
        return Schema(7, "AVRO", KEY)

    def versions_of(self, schema_id: int) -> list[tuple[str, int]]:
        return [("other-value", 1), ("t-key", 3)]


def test_a_key_schema_is_named_by_the_key_subject_and_its_version() -> None:
    columns = "[{name:user_id,type:int64,source:key},{name:kind,type:string}]"
    _, registries = make_decoder(settings("pipeline=events_avro", "pipeline.key_format=avro",
                                          f"pipeline.columns={columns}"))
    assert [d.subject for d, _ in registries] == ["t-value", "t-key"]
    schemas = RegistrySchemas(FakeRegistry())  # type: ignore[arg-type]
    writer = schemas(7, "t-key")
    assert writer is not None
    assert (writer.subject, writer.version) == ("t-key", 3)
    assert writer.where() == "schema id 7 of t-key version 3"
    value = schemas(7, "t-value")
    assert value is not None and value.version is None  # not registered there
    assert schemas(8, "t-key") is None
