"""`local up --with-prometheus`: Debian's Prometheus from the cache, on 127.0.0.1, scraping the
port a local run exports its metrics on."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from veltrix_ray import cli
from veltrix_ray.errors import StackError
from veltrix_ray.local import LocalStack
from veltrix_ray.local.procs import free_port
from veltrix_ray.local.prometheus import binaries


def test_up_with_prometheus_scrapes_the_metrics_port_and_down_stops_it(
        service_dir: Path, services: object, capsys: object) -> None:
    state = service_dir / "state"
    metrics = free_port()
    try:
        assert cli.main(["local", "up", "--state-dir", str(state), "--with-prometheus",
                         "--metrics-port", str(metrics)]) == 0
        status = LocalStack(state).status()
        assert status.prometheus_pid and status.prometheus_url
        assert status.prometheus_url.startswith("http://127.0.0.1:")
        listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.pid == status.prometheus_pid and c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        targets: list[dict[str, str]] = []
        deadline = time.monotonic() + 30
        while not targets and time.monotonic() < deadline:  # discovery runs after ready
            time.sleep(0.5)
            with urllib.request.urlopen(f"{status.prometheus_url}/api/v1/targets") as reply:
                targets = json.loads(reply.read())["data"]["activeTargets"]
        assert [t["scrapeUrl"] for t in targets] == [f"http://127.0.0.1:{metrics}/metrics"]
        with urllib.request.urlopen(f"{status.prometheus_url}/api/v1/rules") as reply:
            rules = json.loads(reply.read())["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"VeltrixLagHigh"}
        env = LocalStack(state).env()
        assert env["VELTRIX_METRICS_PORT"] == str(metrics)
        assert env["VELTRIX_PROMETHEUS_URL"] == status.prometheus_url
        assert cli.main(["local", "status", "--state-dir", str(state)]) == 0
        assert "prometheus" in capsys.readouterr().out  # type: ignore[attr-defined]
    finally:
        LocalStack(state).down()
    assert not psutil.pid_exists(status.prometheus_pid) or psutil.Process(
        status.prometheus_pid).status() == psutil.STATUS_ZOMBIE
    assert LocalStack(state).status().prometheus_pid is None


@pytest.mark.unit
@pytest.mark.parametrize("says", ["prometheus, version 3.1.0 (branch: HEAD)", "no version here"])
def test_a_prometheus_of_another_major_version_is_refused_naming_the_switch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, says: str) -> None:
    for name in ("prometheus", "promtool"):
        (tmp_path / name).write_text(f"#!/bin/sh\necho '{says}'\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("VELTRIX_PROMETHEUS_BIN", str(tmp_path))
    with pytest.raises(StackError, match="is not Prometheus 2.x") as exc:
        binaries()
    assert "VELTRIX_PROMETHEUS_BIN" in str(exc.value)


@pytest.mark.unit
def test_the_tested_major_version_is_taken(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("prometheus", "promtool"):
        (tmp_path / name).write_text("#!/bin/sh\necho 'prometheus, version 2.42.0+ds' >&2\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("VELTRIX_PROMETHEUS_BIN", str(tmp_path))
    assert binaries() == tmp_path
