"""`check`'s registry area classifies an unreachable registry by its exception, not its text."""

from __future__ import annotations

import pytest

from tests.runtime.fakes import settings
from veltrix_ray.check import checks

pytestmark = pytest.mark.unit


def test_an_unreachable_registry_names_schema_registry_url() -> None:
    area = checks._registry(settings(
        "pipeline=events_avro", "schema_registry.url=http://127.0.0.1:9/apis/ccompat/v7",
        "schema_registry.timeout_s=2"))
    assert area is not None
    problems, ok = area
    assert ok is None
    assert [f.key for f in problems] == ["schema_registry.url"]
    assert "127.0.0.1:9" in problems[0].message
