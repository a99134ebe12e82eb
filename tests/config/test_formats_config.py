"""pipeline.format / key_format / schema_evolution and schema_registry: static findings, and
`check` against the real registry."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from veltrix_ray import cli
from veltrix_ray.check import run_checks
from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.validate import Finding, static_findings
from veltrix_ray.errors import ConfigError
from veltrix_ray.registry.client import RegistryClient

NOWHERE = "schema_registry.url=http://127.0.0.1:9/apis/ccompat/v7"
ORDER = {"type": "record", "name": "Order", "fields": [
    {"name": "order_id", "type": "string"}, {"name": "qty", "type": "long"}]}


def _static(*overrides: str) -> list[Finding]:
    return static_findings(to_settings(load_config(list(overrides))))


def _errors(findings: list[Finding]) -> dict[str, str]:
    return {f.key: f.message for f in findings if f.level == "error"}


@pytest.mark.unit
@pytest.mark.parametrize("pipeline", ["events_avro", "events_protobuf"])
def test_shipped_registry_pipelines_validate(pipeline: str) -> None:
    assert _errors(_static(f"pipeline={pipeline}", "kafka.topic=t", NOWHERE)) == {}


@pytest.mark.unit
def test_registry_format_without_a_url_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VELTRIX_SCHEMA_REGISTRY_URL", raising=False)
    errors = _errors(_static("pipeline=events_avro", "kafka.topic=t"))
    assert "schema_registry.url" in errors
    assert "VELTRIX_SCHEMA_REGISTRY_URL" in errors["schema_registry.url"]


@pytest.mark.unit
def test_format_choices_and_key_sources_are_checked() -> None:
    for override, allowed in (("pipeline.format=xml", "json, avro, protobuf"),
                              ("pipeline.key_format=csv", "none, string, json, avro, protobuf"),
                              ("pipeline.schema_evolution=sometimes", "none, add_columns")):
        with pytest.raises(ConfigError) as bad:
            load_config(["kafka.topic=t", override])
        assert f"expected one of [{allowed}]" in str(bad.value)
        assert f"full_key: {override.split('=')[0]}" in str(bad.value)
    errors = _errors(_static("kafka.topic=t", "pipeline.columns=[{name:k,type:string,source:key}]"))
    assert "pipeline.key_format" in errors and "'k'" in errors["pipeline.key_format"]
    errors = _errors(_static("kafka.topic=t", "pipeline.columns=[]"))
    assert "pipeline.columns" in errors and "avro and protobuf" in errors["pipeline.columns"]
    warnings = {f.key for f in _static("kafka.topic=t", "pipeline.schema_evolution=add_columns")
                if f.level == "warning"}
    assert "pipeline.schema_evolution" in warnings


@pytest.mark.unit
def test_registry_password_is_masked(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VELTRIX_SCHEMA_REGISTRY_PASSWORD", "reg-s3cr3t")
    cli.main(["config", "show", "pipeline=events_avro", "kafka.topic=t"])
    out = capsys.readouterr().out
    assert "reg-s3cr3t" not in out and "password: '****'" in out


def _check(*overrides: str) -> list[Finding]:
    return run_checks(to_settings(load_config(list(overrides))))


def test_check_takes_the_columns_from_the_registry(
        new_topic: Callable[[int], str], registry: RegistryClient, pg_dsn: str) -> None:
    topic = new_topic(1)
    sid = registry.register(f"{topic}-value", json.dumps(ORDER))
    findings = _check("pipeline=events_avro", f"kafka.topic={topic}", f"postgres.dsn='{pg_dsn}'")
    assert _errors(findings) == {}
    ok = [f.message for f in findings if f.level == "ok" and f.key == "schema_registry"]
    assert ok and f"schema id {sid}" in ok[0] and "2 column(s) taken from it" in ok[0]


def test_check_names_a_missing_subject_an_unfit_column_and_an_unreachable_registry(
        new_topic: Callable[[int], str], registry: RegistryClient, pg_dsn: str) -> None:
    topic = new_topic(1)
    errors = _errors(_check("pipeline=events_avro", f"kafka.topic={topic}",
                            f"postgres.dsn='{pg_dsn}'"))
    assert f"{topic}-value" in errors["pipeline.columns"]
    assert "produce --format avro" in errors["pipeline.columns"]
    registry.register(f"{topic}-value", json.dumps(ORDER))
    errors = _errors(_check("pipeline=events_avro", f"kafka.topic={topic}",
                            f"postgres.dsn='{pg_dsn}'",
                            "pipeline.columns=[{name:order_id,type:string},{name:qty,type:bool}]"))
    assert "qty" in errors["pipeline.columns"]
    errors = _errors(_check("pipeline=events_avro", f"kafka.topic={topic}",
                            f"postgres.dsn='{pg_dsn}'", NOWHERE))
    assert "127.0.0.1:9" in errors["schema_registry.url"]
