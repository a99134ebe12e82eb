"""`local up` starts Apicurio Registry (from the cache) on 127.0.0.1 only, `local env` exports its
Confluent API, `local down` stops it."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from veltrix_ray import cli
from veltrix_ray.errors import StackError
from veltrix_ray.local import LocalStack, registry
from veltrix_ray.registry import RegistryClient


def _bound_ips(pid: int) -> set[str]:
    """Addresses of every listening TCP socket and bound UDP socket of the process."""
    return {c.laddr.ip.removeprefix("::ffff:") for c in psutil.net_connections("inet")
            if c.pid == pid and c.laddr and not c.raddr
            and c.status in (psutil.CONN_LISTEN, psutil.CONN_NONE)}


def test_up_starts_the_registry_on_loopback_env_exports_it_and_down_stops_it(
        service_dir: Path, services: object, capsys: object) -> None:
    state = service_dir / "state"
    try:
        assert cli.main(["local", "up", "--no-ray", "--state-dir", str(state)]) == 0
        status = LocalStack(state).status()
        assert status.registry_pid and status.registry_url
        assert status.registry_url.startswith("http://127.0.0.1:")
        assert status.registry_url.endswith("/apis/ccompat/v7")
        assert _bound_ips(status.registry_pid) == {"127.0.0.1"}
        assert LocalStack(state).env()["VELTRIX_SCHEMA_REGISTRY_URL"] == status.registry_url
        client = RegistryClient(status.registry_url)
        schema_id = client.register("orders-value", '{"type": "string"}')
        assert client.schema(schema_id).text == '{"type": "string"}'
        # up again: the same registry keeps running (and its schemas)
        assert cli.main(["local", "up", "--no-ray", "--state-dir", str(state)]) == 0
        assert LocalStack(state).status().registry_pid == status.registry_pid
        assert client.subjects() == ["orders-value"]
        capsys.readouterr()  # type: ignore[attr-defined]
        assert cli.main(["local", "env", "--state-dir", str(state)]) == 0
        out = capsys.readouterr().out  # type: ignore[attr-defined]
        assert f"export VELTRIX_SCHEMA_REGISTRY_URL={status.registry_url}" in out
        assert cli.main(["local", "status", "--state-dir", str(state)]) == 0
        out = capsys.readouterr().out  # type: ignore[attr-defined]
        assert "schema_registry" in out and status.registry_url in out
    finally:
        LocalStack(state).down()
    assert not psutil.pid_exists(status.registry_pid) or psutil.Process(
        status.registry_pid).status() == psutil.STATUS_ZOMBIE
    assert LocalStack(state).status().registry_pid is None


def test_maven_offline_with_empty_cache_names_the_fix(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VELTRIX_MAVEN_ARGS", f"-o -Dmaven.repo.local={tmp_path / 'empty-m2'}")
    with pytest.raises(StackError, match=r"Maven could not fetch io.apicurio:apicurio-registry-"
                                          r"app:3.0.9:tar.gz:all.*Are you offline\?"):
        registry.resolve_app()
    assert not (tmp_path / "cache" / "apicurio-registry-3.0.9" / ".complete").exists()
