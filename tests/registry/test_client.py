"""The registry client against the local stack's real registry (Apicurio's Confluent API)."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import pytest

from veltrix_ray.local.procs import free_port
from veltrix_ray.registry import (
    IncompatibleSchema,
    RegistryClient,
    RegistryUnavailable,
    SchemaNotFound,
)


def _record(*fields: Mapping[str, object]) -> str:
    return json.dumps({"type": "record", "name": "Event", "namespace": "test",
                       "fields": [{"name": "event_id", "type": "string"}, *fields]})


def _subject() -> str:
    return f"t-{uuid.uuid4().hex[:12]}-value"


def test_register_then_read_back_by_subject_version_and_id(registry: RegistryClient) -> None:
    subject = _subject()
    v1 = _record({"name": "amount", "type": "double"})
    schema_id = registry.register(subject, v1)
    assert registry.register(subject, v1) == schema_id  # the same schema keeps its id
    latest = registry.latest(subject)
    assert (latest.subject, latest.version, latest.schema.id) == (subject, 1, schema_id)
    assert json.loads(latest.schema.text) == json.loads(v1)
    assert latest.schema.schema_type == "AVRO"
    assert registry.version(subject, 1) == latest
    by_id = registry.schema(schema_id)
    assert (by_id.id, by_id.schema_type, json.loads(by_id.text)) == (schema_id, "AVRO",
                                                                     json.loads(v1))
    assert subject in registry.subjects()


def test_protobuf_schemas_keep_their_type(registry: RegistryClient) -> None:
    subject = _subject()
    proto = 'syntax = "proto3";\npackage test;\n\nmessage Event {\n  string event_id = 1;\n}\n'
    schema_id = registry.register(subject, proto, schema_type="PROTOBUF")
    got = registry.schema(schema_id)
    assert got.schema_type == "PROTOBUF" and "message Event" in got.text
    assert registry.latest(subject).schema.schema_type == "PROTOBUF"


def test_missing_subject_version_or_id_is_schema_not_found(registry: RegistryClient) -> None:
    subject = _subject()
    with pytest.raises(SchemaNotFound) as missing_subject:
        registry.latest(subject)
    assert missing_subject.value.status == 404 and subject in str(missing_subject.value)
    registry.register(subject, _record())
    with pytest.raises(SchemaNotFound):
        registry.version(subject, 7)
    with pytest.raises(SchemaNotFound) as missing_id:
        registry.schema(2**31 - 1)
    assert missing_id.value.status == 404


def test_backward_refuses_a_required_field_without_default(registry: RegistryClient) -> None:
    subject = _subject()
    v1 = registry.register(subject, _record())
    registry.set_compatibility(subject, "BACKWARD")
    optional = {"name": "note", "type": ["null", "string"], "default": None}
    v2 = registry.register(subject, _record(optional))
    assert v2 != v1 and registry.latest(subject).version == 2
    with pytest.raises(IncompatibleSchema) as refused:
        registry.register(subject, _record(optional, {"name": "region", "type": "string"}))
    assert refused.value.status == 409
    assert registry.latest(subject).version == 2
    # NONE (Apicurio's default) accepts it
    registry.set_compatibility(subject, "NONE")
    registry.register(subject, _record(optional, {"name": "region", "type": "string"}))
    assert registry.latest(subject).version == 3


def test_credentials_never_show_in_errors(registry: RegistryClient) -> None:
    parts = urlsplit(registry.url)
    with_userinfo = urlunsplit(parts._replace(netloc=f"alice:s3cret@{parts.netloc}"))
    client = RegistryClient(with_userinfo)  # the registry here ignores basic auth
    assert client.url == registry.url and "s3cret" not in repr(client)
    token = base64.b64encode(b"alice:s3cret").decode()
    for c in (client, RegistryClient(registry.url, "alice", "s3cret")):
        with pytest.raises(SchemaNotFound) as missing:
            c.latest(_subject())
        assert "s3cret" not in str(missing.value) and token not in str(missing.value)


def test_unreachable_registry_is_retriable_and_names_the_url() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
    with pytest.raises(RegistryUnavailable) as refused:
        RegistryClient(url, "alice", "s3cret").latest("orders-value")
    message = str(refused.value)
    assert f"{url}/subjects/orders-value/versions/latest" in message
    assert "s3cret" not in message and "alice" not in message


def test_a_registry_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/apis/ccompat/v7"
        with pytest.raises(RegistryUnavailable) as timed_out:
            RegistryClient(url, timeout_s=0.5).schema(1)
    assert url in str(timed_out.value) and "0.5s" in str(timed_out.value)


def test_versions_of_an_id_name_each_subject_that_holds_it(registry: RegistryClient) -> None:
    subject, other = _subject(), _subject()
    text = _record({"name": "note", "type": "string"})
    schema_id = registry.register(subject, text)
    assert registry.register(other, text) == schema_id
    assert sorted(registry.versions_of(schema_id)) == sorted([(subject, 1), (other, 1)])
