"""produce --format avro|protobuf against the real Kafka and schema registry: the schema is
registered under <topic>-value, Kafka holds exactly the records generate() says, each good one
decodes with the registered schema to the JSON format's event for the same seed and index, and
each bad one is bad in its way."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import Services
from test_produce import PARSERS, _cli, _delete_topic, _read_all, bad_way, json_event

from veltrix_ray.produce import (
    REGISTRY_BAD_SORTS,
    REGISTRY_TYPES,
    UNKNOWN_SCHEMA_ID,
    generate,
    partition_for,
    schema_text,
)
from veltrix_ray.registry import RegistryClient, SchemaNotFound


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"test-produce-formats-{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(_delete_topic(kafka_bootstrap, name))


@pytest.mark.parametrize("format", ["avro", "protobuf"])
def test_produce_registers_the_schema_and_frames_every_record(
    format: str,
    services: Services,
    registry: RegistryClient,
    topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events, seed, partitions = 10_000, 12, 4
    argv = ["--topic", topic, "--events", str(events), "--seed", str(seed), "--format", format]
    argv += ["--partitions", str(partitions), "--bad-fraction", "0.002", "--no-progress"]
    assert services.registry_url
    argv += ["--bootstrap", services.bootstrap, "--registry-url", services.registry_url]
    assert _cli(*argv) == 0
    out = capsys.readouterr().out

    latest = registry.latest(f"{topic}-value")
    schema_id, registered = latest.schema.id, latest.schema
    assert registered.schema_type == REGISTRY_TYPES[format]
    if format == "avro":
        assert json.loads(registered.text) == json.loads(schema_text(format))
    else:
        assert registered.text.strip() == schema_text(format).strip()
    assert f"format:        {format}, schema id {schema_id} (subject {topic}-value)" in out
    assert "bad records:   20 (wrong_magic 5, unknown_id 5, truncated 5, trailing 5)" in out
    with pytest.raises(SchemaNotFound):
        registry.schema(UNKNOWN_SCHEMA_ID)

    read = asyncio.run(_read_all(services.bootstrap, topic, partitions))
    assert sum(len(records) for records in read.values()) == events
    expected = list(generate(events, seed=seed, bad_fraction=0.002, format=format,
                             schema_id=schema_id))
    clean = list(generate(events, seed=seed, format=format, schema_id=schema_id))
    json_values = [r.value for r in generate(events, seed=seed)]
    parse = PARSERS[format](registered.text, schema_id)  # the registry's text, not ours
    found: Counter[str] = Counter()
    for p, records in read.items():
        indices = [i for i, r in enumerate(expected) if partition_for(r.key, partitions) == p]
        assert [key for key, _ in records] == [expected[i].key for i in indices]
        for (_, value), i in zip(records, indices, strict=True):
            sort = bad_way(value, clean[i].value, schema_id, parse)
            assert sort == expected[i].sort, (p, i)
            if sort == "good":
                assert parse(value) == json_event(json_values[i])
            found[sort] += 1
    assert found == {"good": events - 20, **dict.fromkeys(REGISTRY_BAD_SORTS, 5)}
