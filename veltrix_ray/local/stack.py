"""The local stack: one Kafka broker and one PostgreSQL, with state under one directory."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from veltrix_ray.errors import StackError
from veltrix_ray.local import procs
from veltrix_ray.local.kafka import KafkaBroker
from veltrix_ray.local.postgres import LocalPostgres

DEFAULT_KAFKA_PORT = 19092
DEFAULT_POSTGRES_PORT = 15432


def default_state_dir() -> Path:
    return Path(os.environ.get("VELTRIX_STATE_DIR", Path.cwd() / ".veltrix" / "local"))


@dataclass
class StackStatus:
    kafka_pid: int | None
    postgres_pid: int | None
    bootstrap: str | None
    dsn: str | None

    @property
    def running(self) -> bool:
        return self.kafka_pid is not None and self.postgres_pid is not None


class LocalStack:
    """`up` is idempotent; `down` stops only the processes this state directory recorded."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.state_file = self.state_dir / "stack.json"

    def _load(self) -> dict[str, int]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return {}

    def _kafka(self, ports: dict[str, int]) -> KafkaBroker:
        return KafkaBroker(self.state_dir / "kafka", ports["kafka_port"],
                           ports["kafka_controller_port"])

    def _postgres(self, ports: dict[str, int]) -> LocalPostgres:
        return LocalPostgres(self.state_dir / "postgres", ports["postgres_port"])

    def status(self) -> StackStatus:
        ports = self._load()
        if not ports:
            return StackStatus(None, None, None, None)
        kafka, pg = self._kafka(ports), self._postgres(ports)
        return StackStatus(kafka.pid(), pg.pid(), kafka.bootstrap, pg.dsn)

    def up(self, *, kafka_port: int | None = None, postgres_port: int | None = None,
           timeout: float = 90.0) -> StackStatus:
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
        self.state_file.write_text(json.dumps(ports, indent=2))
        if not pg_running:
            self._postgres(ports).start(timeout=timeout)
        if not kafka_running:
            self._kafka(ports).start(timeout=timeout)
        return self.status()

    def down(self, *, wipe: bool = False) -> None:
        ports = self._load()
        if ports:
            self._kafka(ports).stop()
            self._postgres(ports).stop()
        if wipe and self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def env(self) -> dict[str, str]:
        status = self.status()
        if not status.running or status.bootstrap is None or status.dsn is None:
            raise StackError(f"The local stack in {self.state_dir} is not running; start it with "
                             "`veltrix-ray local up`.")
        return {"VELTRIX_KAFKA_BOOTSTRAP": status.bootstrap, "VELTRIX_POSTGRES_DSN": status.dsn}

    def postgres(self) -> LocalPostgres:
        """The PostgreSQL of this stack (tests restart it to check the sink's retries)."""
        return self._postgres(self._load())
