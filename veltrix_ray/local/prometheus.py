"""A Prometheus next to the local stack, scraping the local Ray's metrics port on 127.0.0.1.

The binaries (prometheus, promtool) come from Debian's package, fetched once with
`apt-get download` and unpacked with `dpkg -x` into the cache: no system service is
installed, the way Maven fills the cache with Kafka's jars."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from veltrix_ray.errors import StackError
from veltrix_ray.local import procs
from veltrix_ray.local.kafka import cache_root

PACKAGE = "prometheus"
# Debian serves one version per release (bookworm: 2.42); the config, the rules and the tests
# are written for Prometheus 2, so another major version is refused rather than half-working
TESTED_MAJOR = 2
# the repository's alert rules, loaded when present (an editable install or a checkout)
ALERTS = Path(__file__).resolve().parents[2] / "observability" / "prometheus" / "alerts.yml"


def binaries() -> Path:
    """The directory holding `prometheus` and `promtool` ($VELTRIX_PROMETHEUS_BIN, else the
    cache, filled from Debian's package on first use)."""
    override = os.environ.get("VELTRIX_PROMETHEUS_BIN")
    if override:
        where = Path(override)
        if not (where / "prometheus").exists() or not (where / "promtool").exists():
            raise StackError(f"VELTRIX_PROMETHEUS_BIN={where} lacks prometheus or promtool; "
                             "unset it to fetch Debian's package into the cache.")
        return _checked(where)
    target = cache_root() / "prometheus" / "bin"
    if (target / "prometheus").exists() and (target / "promtool").exists():
        return _checked(target)
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg")
    if apt is None or dpkg is None:
        raise StackError("The local Prometheus is fetched as Debian's `prometheus` package "
                         "(apt-get download + dpkg -x), and apt-get or dpkg is missing here. "
                         "Set VELTRIX_PROMETHEUS_BIN to a directory holding prometheus and "
                         "promtool (2.x).")
    with tempfile.TemporaryDirectory(prefix="veltrix-prometheus-") as tmp:
        got = subprocess.run([apt, "download", PACKAGE], cwd=tmp, capture_output=True,
                             text=True)
        debs = list(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if got.returncode != 0 or not debs:
            raise StackError(f"`apt-get download {PACKAGE}` failed: "
                             f"{(got.stderr or got.stdout).strip()[-600:]}\nIf the package is "
                             "unknown, refresh the package lists (`apt-get update`), or set "
                             "VELTRIX_PROMETHEUS_BIN.")
        unpacked = Path(tmp) / "x"
        subprocess.run([dpkg, "-x", str(debs[0]), str(unpacked)], check=True,
                       capture_output=True)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("promtool", "prometheus"):  # prometheus last: its presence means done
            shutil.copy2(unpacked / "usr" / "bin" / name, target / f"{name}.partial")
            (target / f"{name}.partial").rename(target / name)
    return _checked(target)


def _checked(where: Path) -> Path:
    """`where`, once its prometheus says it is of the tested major version."""
    out = subprocess.run([str(where / "prometheus"), "--version"], capture_output=True,
                         text=True)
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if found is None or int(found[1]) != TESTED_MAJOR:
        said = found[0] if found else (out.stdout + out.stderr).strip()[:200] or "nothing"
        raise StackError(f"{where / 'prometheus'} is not Prometheus {TESTED_MAJOR}.x (it says "
                         f"{said!r}); the local stack is tested with {TESTED_MAJOR}.x. Point "
                         f"VELTRIX_PROMETHEUS_BIN at a {TESTED_MAJOR}.x prometheus and promtool, "
                         "or remove the cached copy to fetch Debian's package again.")
    return where


@dataclass
class LocalPrometheus:
    home: Path
    port: int
    targets: list[str]  # host:port of the Ray metrics exports to scrape
    rules: list[Path] = field(default_factory=list)
    scrape_interval_s: float = 2.0

    @property
    def url(self) -> str:
        return f"http://{procs.HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "prometheus.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "prometheus.pid"

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def _write_config(self) -> Path:
        # JSON is YAML: no YAML writer needed
        config = {
            "global": {"scrape_interval": f"{self.scrape_interval_s:g}s",
                       "evaluation_interval": f"{self.scrape_interval_s:g}s"},
            "rule_files": [str(r) for r in self.rules],
            "scrape_configs": [{"job_name": "ray", "static_configs": [
                {"targets": self.targets}]}],
        }
        path = self.home / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 60.0) -> None:
        bin_dir = binaries()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        pid = procs.spawn([str(bin_dir / "prometheus"), f"--config.file={config}",
                           f"--storage.tsdb.path={self.home / 'data'}",
                           f"--web.listen-address={procs.HOST}:{self.port}",
                           "--storage.tsdb.retention.time=7d"], self.log, cwd=self.home)
        self.pid_file.write_text(str(pid))
        ready = procs.wait_until(lambda: not procs.pid_alive(pid) or self.ready(), timeout)
        if not procs.pid_alive(pid) or not ready:
            raise StackError(f"Prometheus did not become ready on {self.url} within {timeout:g}s"
                             f". Last lines of {self.log}:\n{procs.tail(self.log)}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            procs.stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)
