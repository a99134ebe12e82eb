"""Session services: the project's own local stack (or one given by VELTRIX_* env vars).

Integration tests fail with the reason when a service cannot start; they never skip."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from veltrix_ray.errors import StackError
from veltrix_ray.local import LocalStack
from veltrix_ray.registry import RegistryClient


@dataclass
class Services:
    bootstrap: str
    dsn: str
    stack: LocalStack | None
    registry_url: str | None = None  # the Confluent API's base URL


def _dsn_for(dsn: str, dbname: str) -> str:
    if "://" in dsn:
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


SERVICE_ROOT = Path(__file__).resolve().parents[1] / ".veltrix" / "test"


@contextmanager
def _service_dir() -> Iterator[Path]:
    """A state directory for services the tests start. Not under pytest's tmp_path: pytest
    resets that tree to mode 0700, which locks out PostgreSQL's system user."""
    SERVICE_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=SERVICE_ROOT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service_dir() -> Iterator[Path]:
    with _service_dir() as path:
        yield path


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    bootstrap = os.environ.get("VELTRIX_KAFKA_BOOTSTRAP")
    dsn = os.environ.get("VELTRIX_POSTGRES_DSN")
    if bootstrap and dsn:
        yield Services(bootstrap, dsn, None, os.environ.get("VELTRIX_SCHEMA_REGISTRY_URL"))
        return
    with _service_dir() as path:
        yield from _own_stack(path)


def _own_stack(path: Path) -> Iterator[Services]:
    stack = LocalStack(path)
    try:
        status = stack.up()
    except StackError as exc:
        stack.down()
        pytest.fail(f"the local stack (Kafka + PostgreSQL + schema registry) did not start: {exc}",
                    pytrace=False)
    assert status.bootstrap and status.dsn and status.registry_url
    os.environ.update(stack.env())
    try:
        yield Services(status.bootstrap, status.dsn, stack, status.registry_url)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.bootstrap


@pytest.fixture
def pg_dsn(services: Services) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _dsn_for(services.dsn, name)
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture(scope="session")
def registry(services: Services) -> RegistryClient:
    """A client of the session's schema registry."""
    if not services.registry_url:
        pytest.fail("VELTRIX_KAFKA_BOOTSTRAP and VELTRIX_POSTGRES_DSN name the services, but "
                    "VELTRIX_SCHEMA_REGISTRY_URL is not set: `veltrix-ray local env` exports it "
                    "for a stack that runs the registry (restart an older one).", pytrace=False)
    return RegistryClient(services.registry_url)


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Callable[[int], str]:
    """Creates a uniquely named topic with the given number of partitions."""
    from veltrix_ray.source.admin import ensure_topic

    def make(partitions: int = 1) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        asyncio.run(ensure_topic(kafka_bootstrap, name, partitions))
        return name

    return make


@pytest.fixture(scope="session")
def ray_local(services: Services) -> Iterator[int]:
    """One local Ray for the session (started after the services so workers inherit the env),
    on 127.0.0.1; yields the port of its Prometheus metrics export."""
    import ray

    from veltrix_ray.local.procs import free_port
    from veltrix_ray.runtime.pipeline import init_private_ray

    port = free_port()
    init_private_ray(num_cpus=2, object_store_memory=256 * 2**20, log_to_driver=False,
                     _metrics_export_port=port)
    try:
        yield port
    finally:
        ray.shutdown()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
