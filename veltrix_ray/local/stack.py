"""The local stack: one Kafka broker, one PostgreSQL and a schema registry (and, on request, a
Ray head and a Prometheus), with state under one directory."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veltrix_ray.errors import StackError
from veltrix_ray.local import procs
from veltrix_ray.local.kafka import KafkaBroker
from veltrix_ray.local.postgres import LocalPostgres
from veltrix_ray.local.prometheus import ALERTS, LocalPrometheus
from veltrix_ray.local.ray_head import ADDRESS_ENV, RayHead, temp_dir_for
from veltrix_ray.local.registry import LocalRegistry

DEFAULT_KAFKA_PORT = 19092
DEFAULT_POSTGRES_PORT = 15432
DEFAULT_REGISTRY_PORT = 18081
DEFAULT_PROMETHEUS_PORT = 19090
DEFAULT_METRICS_PORT = 19100  # the Ray metrics export a local run uses when Prometheus is up


def default_state_dir() -> Path:
    return Path(os.environ.get("VELTRIX_STATE_DIR", Path.cwd() / ".veltrix" / "local"))


@dataclass
class StackStatus:
    kafka_pid: int | None
    postgres_pid: int | None
    bootstrap: str | None
    dsn: str | None
    prometheus_pid: int | None = None
    prometheus_url: str | None = None
    metrics_port: int | None = None  # what the local Prometheus scrapes
    ray_pid: int | None = None
    ray_address: str | None = None  # the stack's Ray head, which local runs attach to
    registry_pid: int | None = None
    registry_url: str | None = None  # the Confluent API's base URL

    @property
    def running(self) -> bool:
        return self.kafka_pid is not None and self.postgres_pid is not None


class LocalStack:
    """`up` is idempotent; `down` stops only the processes this state directory recorded."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.state_file = self.state_dir / "stack.json"

    def _load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return {}

    def _kafka(self, ports: dict[str, Any]) -> KafkaBroker:
        return KafkaBroker(self.state_dir / "kafka", ports["kafka_port"],
                           ports["kafka_controller_port"])

    def _postgres(self, ports: dict[str, Any]) -> LocalPostgres:
        return LocalPostgres(self.state_dir / "postgres", ports["postgres_port"])

    def _registry(self, ports: dict[str, Any]) -> LocalRegistry:
        return LocalRegistry(self.state_dir / "registry", ports["registry_port"])

    def _prometheus(self, ports: dict[str, Any]) -> LocalPrometheus:
        return LocalPrometheus(self.state_dir / "prometheus", ports["prometheus_port"],
                               [f"{procs.HOST}:{ports['metrics_port']}"],
                               [ALERTS] if ALERTS.exists() else [])

    def _ray(self, ports: dict[str, Any]) -> RayHead:
        return RayHead(self.state_dir / "ray", Path(ports["ray_temp_dir"]), ports["ray_port"],
                       ports["ray_num_cpus"], ports.get("ray_metrics_port"))

    def ray_head(self) -> RayHead | None:
        """The Ray head this stack recorded (running or not); None if it never started one."""
        ports = self._load()
        return self._ray(ports) if "ray_port" in ports else None

    def status(self) -> StackStatus:
        ports = self._load()
        if not ports:
            return StackStatus(None, None, None, None)
        kafka, pg = self._kafka(ports), self._postgres(ports)
        status = StackStatus(kafka.pid(), pg.pid(), kafka.bootstrap, pg.dsn)
        if "registry_port" in ports:
            status.registry_pid = self._registry(ports).pid()
            if status.registry_pid is not None:
                status.registry_url = self._registry(ports).url
        if "prometheus_port" in ports:
            prom = self._prometheus(ports)
            status.prometheus_pid = prom.pid()
            if status.prometheus_pid is not None:
                status.prometheus_url, status.metrics_port = prom.url, ports["metrics_port"]
        if "ray_port" in ports:
            status.ray_pid = self._ray(ports).pid()
            if status.ray_pid is not None:
                status.ray_address = self._ray(ports).address
        return status

    def prometheus(self) -> LocalPrometheus:
        """The Prometheus of this stack (started by `up(with_prometheus=True)`)."""
        ports = self._load()
        if "prometheus_port" not in ports:
            raise StackError("The local stack has no Prometheus; start it with `veltrix-ray "
                             "local up --with-prometheus`.")
        return self._prometheus(ports)

    def up(self, *, kafka_port: int | None = None, postgres_port: int | None = None,
           registry_port: int | None = None, timeout: float = 90.0, with_prometheus: bool = False,
           prometheus_port: int | None = None, metrics_port: int | None = None,
           with_ray: bool = False) -> StackStatus:
        """with_ray: also a Ray head for local runs to attach to (`local up` asks for it)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports = self._load()
        kafka_running = bool(ports) and self._kafka(ports).pid() is not None
        pg_running = bool(ports) and self._postgres(ports).pid() is not None
        if kafka_running and kafka_port not in (None, ports["kafka_port"]):
            raise StackError(f"The local Kafka already runs on port {ports['kafka_port']}; run "
                             "`veltrix-ray local down` first to move it to --kafka-port "
                             f"{kafka_port}.")
        if pg_running and postgres_port not in (None, ports["postgres_port"]):
            raise StackError(f"The local PostgreSQL already runs on port "
                             f"{ports['postgres_port']}; run `veltrix-ray local down` first to "
                             f"move it to --postgres-port {postgres_port}.")
        if not kafka_running:
            port = procs.choose_port(kafka_port, ports.get("kafka_port", DEFAULT_KAFKA_PORT),
                                     "--kafka-port", "Kafka")
            controller = ports.get("kafka_controller_port", port + 1)
            if controller == port or not procs.port_is_free(controller):
                controller = procs.free_port()
            ports.update(kafka_port=port, kafka_controller_port=controller)
        if not pg_running:
            ports["postgres_port"] = procs.choose_port(
                postgres_port, ports.get("postgres_port", DEFAULT_POSTGRES_PORT),
                "--postgres-port", "PostgreSQL")
        registry_running = "registry_port" in ports and self._registry(ports).pid() is not None
        if registry_running and registry_port not in (None, ports["registry_port"]):
            raise StackError(f"The local schema registry already runs on port "
                             f"{ports['registry_port']}; run `veltrix-ray local down` first to "
                             f"move it to --registry-port {registry_port}.")
        if not registry_running:
            ports["registry_port"] = procs.choose_port(
                registry_port, ports.get("registry_port", DEFAULT_REGISTRY_PORT),
                "--registry-port", "Schema registry")
        prom_running = "prometheus_port" in ports and self._prometheus(ports).pid() is not None
        if with_prometheus and prom_running and (
                prometheus_port not in (None, ports["prometheus_port"])
                or metrics_port not in (None, ports["metrics_port"])):
            raise StackError("The local Prometheus already runs (on port "
                             f"{ports['prometheus_port']}, scraping {ports['metrics_port']}); "
                             "run `veltrix-ray local down` first to change its ports.")
        if with_prometheus and not prom_running:
            ports["prometheus_port"] = procs.choose_port(
                prometheus_port, ports.get("prometheus_port", DEFAULT_PROMETHEUS_PORT),
                "--prometheus-port", "Prometheus")
            # not checked for being free: a running pipeline may be exporting there already
            ports["metrics_port"] = metrics_port or ports.get("metrics_port",
                                                              DEFAULT_METRICS_PORT)
        ray_running = "ray_port" in ports and self._ray(ports).pid() is not None
        if with_ray and ray_running and "metrics_port" in ports and (
                ports.get("ray_metrics_port") != ports["metrics_port"]):
            raise StackError("The local Ray head runs without exporting metrics where the "
                             "local Prometheus scrapes; run `veltrix-ray local down` first.")
        if with_ray and not ray_running:
            home = self.state_dir / "ray"
            ports.update(ray_port=procs.free_port(), ray_num_cpus=os.cpu_count() or 1,
                         ray_temp_dir=str(temp_dir_for(home)))
            ports.pop("ray_metrics_port", None)
            if "metrics_port" in ports:  # the local Prometheus scrapes the head's export
                ports["ray_metrics_port"] = ports["metrics_port"]
        self.state_file.write_text(json.dumps(ports, indent=2))
        # the registry's JVM boots while the other services start
        registry_pid = None if registry_running else self._registry(ports).launch()
        if not pg_running:
            self._postgres(ports).start(timeout=timeout)
        if not kafka_running:
            self._kafka(ports).start(timeout=timeout)
        if with_prometheus and not prom_running:
            self._prometheus(ports).start(timeout=timeout)
        if with_ray and not ray_running:
            self._ray(ports).start(timeout=timeout)
        if registry_pid is not None:
            self._registry(ports).wait(registry_pid, timeout=timeout)
        return self.status()

    def down(self, *, wipe: bool = False) -> None:
        ports = self._load()
        if ports:
            if "ray_port" in ports:
                self._ray(ports).stop()
            if "prometheus_port" in ports:
                self._prometheus(ports).stop()
            if "registry_port" in ports:
                self._registry(ports).stop()
            self._kafka(ports).stop()
            self._postgres(ports).stop()
        if wipe and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        if wipe and "ray_temp_dir" in ports:
            shutil.rmtree(ports["ray_temp_dir"], ignore_errors=True)

    def env(self) -> dict[str, str]:
        status = self.status()
        if not status.running or status.bootstrap is None or status.dsn is None:
            raise StackError(f"The local stack in {self.state_dir} is not running; start it with "
                             "`veltrix-ray local up`.")
        env = {"VELTRIX_KAFKA_BOOTSTRAP": status.bootstrap, "VELTRIX_POSTGRES_DSN": status.dsn}
        if status.registry_url is not None:
            env["VELTRIX_SCHEMA_REGISTRY_URL"] = status.registry_url
        if status.prometheus_url is not None:
            # a local run exports its metrics where this Prometheus scrapes
            env.update(VELTRIX_METRICS_PORT=str(status.metrics_port),
                       VELTRIX_PROMETHEUS_URL=status.prometheus_url)
        if status.ray_address is not None:
            # local runs attach to this head (the stack in VELTRIX_STATE_DIR recorded it)
            env.update({ADDRESS_ENV: status.ray_address, "VELTRIX_STATE_DIR": str(self.state_dir)})
        return env

    def registry(self) -> LocalRegistry:
        """The schema registry of this stack (in memory: a restart forgets its schemas)."""
        return self._registry(self._load())

    def postgres(self) -> LocalPostgres:
        """The PostgreSQL of this stack (tests restart it to check the sink's retries)."""
        return self._postgres(self._load())
