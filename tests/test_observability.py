"""The shipped Grafana dashboard is importable the way Ray's own dashboards are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
BOARD = Path(__file__).resolve().parents[1] / "observability" / "grafana" / "veltrix.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_every_panel_queries_the_datasource_variable() -> None:
    board = json.loads(BOARD.read_text())
    assert board["uid"] == "veltrix-ray" and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert board["panels"]
    for panel in board["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert "ray_veltrix_" in target["expr"] and '$pipeline' in target["expr"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for wanted in ("lag per partition", "lag (seconds", "rows committed", "dead letters",
                   "commit latency", "batch size", "workers vs target", "busy ratio", "rss",
                   "restarts"):
        assert wanted in titles, wanted
