"""Apicurio Registry next to the local stack: a Confluent-API schema registry (its ccompat API)
with in-memory storage, on 127.0.0.1. Maven unpacks the server (a Quarkus runner jar and its
lib/) from Central into the cache once, the way it fetches Kafka's jars."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from veltrix_ray.errors import StackError
from veltrix_ray.local import procs
from veltrix_ray.local.kafka import cache_root, find_java

APICURIO_VERSION = "3.0.9"
POM = Path(__file__).parent / "registry" / "pom.xml"
API_PATH = "/apis/ccompat/v7"


def resolve_app(version: str = APICURIO_VERSION) -> Path:
    """The server's runner jar, unpacked into the cache on first use."""
    target = cache_root() / f"apicurio-registry-{version}"
    app = target / "app"
    if (target / ".complete").exists():
        return _runner(app)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"Maven (`mvn`) is needed once to fetch Apicurio Registry {version} "
                         f"into {app}, and it is not on PATH. Install it (e.g. `apt-get install "
                         "maven`).")
    staging = target / "app.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cmd = [mvn, "-B", "-q", "-f", str(POM), "dependency:unpack", f"-Dregistry.dir={staging}",
           f"-Dapicurio.version={version}", *shlex.split(os.environ.get("VELTRIX_MAVEN_ARGS", ""))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not any(staging.rglob("*-runner.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
        raise StackError(
            f"Maven could not fetch io.apicurio:apicurio-registry-app:{version}:tar.gz:all (exit "
            f"{proc.returncode}). The first `local up` needs Maven Central (or a mirror in your "
            f"~/.m2/settings.xml, extra args via VELTRIX_MAVEN_ARGS); later runs use the cache "
            f"{app}. Are you offline? Maven said:\n{output}")
    shutil.rmtree(app, ignore_errors=True)
    staging.rename(app)
    (target / ".complete").write_text(version)
    return _runner(app)


def _runner(app: Path) -> Path:
    jars = sorted(app.rglob("apicurio-registry-app-*-runner.jar"))
    if not jars:
        raise StackError(f"No apicurio-registry-app-*-runner.jar under {app}; delete "
                         f"{app.parent} to fetch the registry again.")
    return jars[0]


@dataclass
class LocalRegistry:
    home: Path
    port: int

    @property
    def url(self) -> str:
        """The Confluent API's base URL (what schema_registry.url takes)."""
        return f"http://{procs.HOST}:{self.port}{API_PATH}"

    @property
    def log(self) -> Path:
        return self.home / "registry.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "registry.pid"

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def launch(self) -> int:
        """Starts the server without waiting for it (`wait` does), so it boots while the
        stack's other services start."""
        java, _ = find_java()
        runner = resolve_app()
        self.home.mkdir(parents=True, exist_ok=True)
        # 3.0.9 has no separate management interface (health is on the HTTP port); its host is
        # pinned anyway, since Quarkus binds that one to all interfaces by default
        pid = procs.spawn([java, "-Xms64m", "-Xmx384m", "-Djava.awt.headless=true",
                           f"-Dquarkus.http.host={procs.HOST}", f"-Dquarkus.http.port={self.port}",
                           f"-Dquarkus.management.host={procs.HOST}",
                           "-Dapicurio.storage.kind=sql", "-Dapicurio.storage.sql.kind=h2",
                           # a file, not memory: records in Kafka keep their schema ids
                           # across `local down` / `up`
                           f"-Dapicurio.datasource.url=jdbc:h2:file:{self.home / 'db'}",
                           "-jar", str(runner)], self.log, cwd=self.home)
        self.pid_file.write_text(str(pid))
        return pid

    def wait(self, pid: int, timeout: float = 60.0) -> None:
        ready = procs.wait_until(lambda: not procs.pid_alive(pid) or self.ready(), timeout)
        if not procs.pid_alive(pid) or not ready:
            raise StackError(f"The schema registry (Apicurio) did not answer on {self.url} within "
                             f"{timeout:g}s (raise it with --timeout). Last lines of {self.log}:"
                             f"\n{procs.tail(self.log)}")

    def start(self, timeout: float = 60.0) -> None:
        self.wait(self.launch(), timeout)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            procs.stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)
