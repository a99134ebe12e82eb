"""`veltrix-ray check`: the config against reality (Kafka, PostgreSQL, Ray) before launch.

Static validation catches typos; only the services can tell that the topic exists, the role may
create tables, an existing table fits and the workers fit the machine or cluster. Every finding
names the key to change and the fix. Messages are masked: they may quote connection strings."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import psutil
import psycopg
import pyarrow as pa
from aiokafka.errors import KafkaError
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from veltrix_ray.check.pipeline import launch_findings
from veltrix_ray.config.mask import mask_text
from veltrix_ray.config.ray_address import (
    JOIN_FIX,
    address_problem,
    has_autoscaler,
    is_local,
    probe,
)
from veltrix_ray.config.schema import KafkaConfig, TopologyConfig, VeltrixConfig
from veltrix_ray.config.validate import Finding, kafka_security_findings
from veltrix_ray.errors import ConfigError
from veltrix_ray.runtime.assignment import assign
from veltrix_ray.runtime.budget import MIB, Budget
from veltrix_ray.sink.ddl import incompatibilities
from veltrix_ray.sink.introspect import columns, has_unique_key, table_oid
from veltrix_ray.source.admin import partition_count
from veltrix_ray.source.kafka import client_options
from veltrix_ray.source.security import KafkaSecurityError

TIMEOUT_S = 5.0
# the standard event's encoded size, to tell whether batch.max_records or the byte cap binds
TYPICAL_EVENT_BYTES = 300
# batch.max_records may exceed the byte cap by this factor before it is worth a warning
FAR_ABOVE = 4

T = TypeVar("T")
# an area's problems, and its `ok` line (None: nothing to report as passing)
Area = tuple[list[Finding], str | None]


def run_checks(settings: VeltrixConfig) -> list[Finding]:
    """Static findings, then one problem list and one `ok` line per area that has no error."""
    registry = _registry(settings)  # first: avro/protobuf columns may come from it
    findings = launch_findings(settings)
    oks: list[Finding] = []
    if not _errors(findings):
        oks.append(Finding("ok", "config", "types and values are valid"))
    partitions, kafka = _kafka(settings)
    areas = {"schema_registry": registry} if registry is not None else {}
    areas |= {"kafka": kafka, "postgres": _postgres(settings), "ray": _ray(settings, partitions),
             "memory": _memory(settings), "dead_letters": _dead_letters(settings)}
    for area, (problems, ok) in areas.items():
        findings += problems
        if ok is not None and not _errors(problems):
            oks.append(Finding("ok", area, ok))
    return [replace(f, message=mask_text(f.message)) for f in findings + oks]


def _registry(s: VeltrixConfig) -> Area | None:
    """Reachable, the value subject exists, its latest version fits the columns (and, with no
    pipeline.columns, gives them)."""
    from veltrix_ray.batch.registry import REGISTRY_FORMATS, RegistryDecoder, subject_name
    from veltrix_ray.batch.schema import columns_from_config
    from veltrix_ray.batch.writer import Writer
    from veltrix_ray.registry.client import RegistryClient, RegistryError, RegistryUnavailable
    from veltrix_ray.runtime.schemas import resolve_columns

    p = s.pipeline
    if p.format not in REGISTRY_FORMATS or not s.schema_registry.url:
        return None  # not a registry format, or static_findings names the missing URL
    given = bool(p.columns)
    try:
        resolve_columns(s)
    except ConfigError as exc:
        unreachable = isinstance(exc.__cause__, RegistryUnavailable)
        key = "schema_registry.url" if unreachable else "pipeline.columns"
        return [Finding("error", key, str(exc))], None
    subject = subject_name(s.kafka.topic, "value")
    try:
        latest = RegistryClient.from_config(s.schema_registry).latest(subject)
    except RegistryError as exc:
        return [Finding("error", "kafka.topic", f"the registry has no subject {subject} "
                        f"({exc}): register the topic's value schema first")], None
    except Exception as exc:  # noqa: BLE001 - any other failure of the registry names its URL
        return [Finding("error", "schema_registry.url", str(exc))], None
    writer = Writer(latest.schema.id, latest.schema.schema_type, latest.schema.text,
                    subject=subject, version=latest.version)
    if given and latest.schema.schema_type == p.format.upper():
        decoder = RegistryDecoder(columns_from_config(p.columns), p.format, s.kafka.topic)
        why = decoder.admit(writer)
        if why is not None:
            return [Finding("error", "pipeline.columns", why)], None
    if latest.schema.schema_type != p.format.upper():
        return [Finding("error", "pipeline.format",
                        f"{p.format}, but {subject}'s latest version is "
                        f"{latest.schema.schema_type}")], None
    return [], (f"{writer.where()} ({latest.schema.schema_type}): "
                f"{len(p.columns)} column(s)" + ("" if given else " taken from it"))


def _errors(findings: list[Finding]) -> bool:
    return any(f.level == "error" for f in findings)


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on its own thread: works even when the caller runs a loop (notebooks)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- Kafka ----------------------------------------------------------------------------------


async def _partitions(cfg: KafkaConfig) -> int | None:
    """The topic's partition count, None if missing (asking does not create it). Raises
    KafkaSecurityError when a TLS file, the certificate or the credentials are wrong."""
    return await partition_count(cfg.bootstrap, cfg.topic, timeout_s=TIMEOUT_S,
                                 options=client_options(cfg))


def _kafka(s: VeltrixConfig) -> tuple[int | None, Area]:
    k, workers = s.kafka, s.topology.workers
    if _errors(kafka_security_findings(k)):  # static errors say what; no client can be made
        return None, ([], None)
    kafka_log = logging.getLogger("aiokafka")
    if not kafka_log.handlers:  # its "Unable connect" lines: the finding below says why, once
        kafka_log.addHandler(logging.NullHandler())
    try:
        count = _in_thread(asyncio.wait_for(_partitions(k), 2 * TIMEOUT_S))
    except KafkaSecurityError as exc:
        return None, ([Finding("error", exc.key, exc.reason)], None)
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        detail = str(exc) or "no answer in time"
        if not detail.startswith(type(exc).__name__):
            detail = f"{type(exc).__name__}: {detail}"
        return None, ([Finding("error", "kafka.bootstrap",
                               f"cannot reach Kafka at {k.bootstrap} ({detail}): start it "
                               "(`veltrix-ray local up`) or fix kafka.bootstrap / "
                               "$VELTRIX_KAFKA_BOOTSTRAP (and kafka.security_protocol / "
                               "kafka.sasl_* if it needs them)")], None)
    if count is None:
        return None, ([Finding("error", "kafka.topic",
                               f"topic {k.topic!r} does not exist on {k.bootstrap}: create it, "
                               f"e.g. `veltrix-ray produce --topic {k.topic} --partitions "
                               f"{max(workers, 1)} --events 1000`, or fix kafka.topic")], None)
    ok = f"topic {k.topic} has {count} partitions for {workers} workers"
    if workers < 1:  # already a static error
        return count, ([], ok)
    problems = []
    if workers > count:
        problems.append(Finding(
            "warning", "topology.workers",
            f"topology.workers={workers} but topic {k.topic} has {count} partitions: only "
            f"{count} workers start (a partition has one owner); set topology.workers={count} "
            "or add partitions to the topic"))
    sizes = [len(p) for p in assign(range(count), workers)]
    if max(sizes) >= 2 * min(sizes):
        busy = sizes.count(max(sizes))
        divisors = [d for d in range(1, count + 1) if count % d == 0]
        near = sorted({max(d for d in divisors if d <= workers),
                       min((d for d in divisors if d >= workers), default=count)})
        problems.append(Finding(
            "warning", "topology.workers",
            f"{count} partitions over {workers} workers: {busy} worker(s) own {max(sizes)} "
            f"partitions, the others {min(sizes)}, so the busiest do {max(sizes) / min(sizes):g}x "
            f"the work; set topology.workers to a divisor of {count} "
            f"({' or '.join(map(str, near))}) or repartition the topic"))
    return count, (problems, ok)


# -- PostgreSQL -----------------------------------------------------------------------------


def _connect_problem(exc: psycopg.Error, dsn: str, params: dict[str, Any]) -> str:
    """Why connecting failed, told apart by libpq's message, and what to change. Names the
    DSN used (masked by the caller): it may come from the environment, not the config."""
    text = " ".join(str(exc).split())
    user = params.get("user", "(default user)")
    where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)} (postgres.dsn={dsn})"
    if "password authentication failed" in text or "no password supplied" in text:
        why = (f"authentication failed for user {user} at {where}: fix the user or password in "
               "postgres.dsn / $VELTRIX_POSTGRES_DSN")
    elif "role" in text and "does not exist" in text:
        why = (f"authentication failed: role {user} does not exist at {where}: fix the user in "
               "postgres.dsn / $VELTRIX_POSTGRES_DSN, or create the role")
    elif "database" in text and "does not exist" in text:
        db = params.get("dbname", user)
        why = (f"database {db} does not exist at {where}: CREATE DATABASE {db}, or fix the "
               "database in postgres.dsn / $VELTRIX_POSTGRES_DSN")
    else:
        why = (f"cannot connect to PostgreSQL at {where}: start it (`veltrix-ray local up`) or "
               "fix the host and port in postgres.dsn / $VELTRIX_POSTGRES_DSN")
    return f"{why} ({text})"


def _postgres(s: VeltrixConfig) -> Area:
    pg = s.postgres
    try:
        params = conninfo_to_dict(pg.dsn)
    except psycopg.ProgrammingError:  # libpq's reason may quote the DSN, password included
        return [Finding("error", "postgres.dsn",
                        "is not a valid connection string; use the form "
                        "postgresql://user:password@host:port/database")], None
    try:
        conn = psycopg.connect(pg.dsn, connect_timeout=int(TIMEOUT_S),
                               application_name="veltrix-ray check")
    except psycopg.Error as exc:
        return [Finding("error", "postgres.dsn", _connect_problem(exc, pg.dsn, params))], None
    with conn:
        where = f"{conn.info.dbname} as {conn.info.user}"
        try:
            conn.execute(f"SET statement_timeout = {int(TIMEOUT_S * 1000)}")
            problems = _privileges(conn, pg.db_schema)
            table_problems, state = _target(conn, s, _written_schema(s))
        except psycopg.Error as exc:
            return [Finding("error", "postgres.dsn",
                            f"connected to {where}, but inspecting it failed "
                            f"({type(exc).__name__}: {exc}); check the role's privileges in "
                            "postgres.dsn")], None
        finally:
            conn.rollback()
    return problems + table_problems, (f"connected to {where}; may create tables in "
                                       f"{pg.db_schema}; {pg.db_schema}.{s.pipeline.table} "
                                       f"{state}")


def _written_schema(s: VeltrixConfig) -> pa.Schema | None:
    """The columns the sink writes; None when the pipeline is broken (a static error says so)."""
    from veltrix_ray.contracts import written
    from veltrix_ray.transform import output_schema

    try:
        return written(output_schema(s))
    except Exception:  # noqa: BLE001 - reported by launch_findings with its key
        return None


def _privileges(conn: psycopg.Connection, db_schema: str) -> list[Finding]:
    """CREATE where the sink creates its tables (probed in a rolled-back transaction) and
    TEMPORARY for the per-batch staging tables."""
    user, db = conn.info.user, conn.info.dbname
    problems = []
    probe = sql.Identifier(db_schema, f"_veltrix_check_{uuid.uuid4().hex[:12]}")
    needed = f"CREATE on schema {db_schema}"
    grant = f"GRANT CREATE ON SCHEMA {db_schema} TO {user}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (db_schema,))
            if cur.fetchone() is None:
                needed = f"CREATE on database {db} (schema {db_schema} does not exist yet)"
                grant = f"GRANT CREATE ON DATABASE {db} TO {user}"
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(db_schema)))
            cur.execute(sql.SQL("CREATE TABLE {} (probe integer)").format(probe))
    except psycopg.errors.InsufficientPrivilege as exc:
        problems.append(Finding(
            "error", "postgres.dsn",
            f"role {user} lacks the privilege {needed} ({str(exc).splitlines()[0]}): run "
            f"`{grant}` as an admin, or connect as a role that has it (or set postgres.db_schema "
            "to a schema it may create tables in)"))
    finally:
        conn.rollback()
    if not conn.execute("SELECT has_database_privilege(current_database(), 'TEMPORARY')"
                        ).fetchone()[0]:  # type: ignore[index]
        problems.append(Finding(
            "error", "postgres.dsn",
            f"role {user} lacks the privilege TEMPORARY on database {db} (each batch is staged "
            f"in a temporary table): run `GRANT TEMPORARY ON DATABASE {db} TO {user}`"))
    return problems


def _target(conn: psycopg.Connection, s: VeltrixConfig,
            schema: pa.Schema | None) -> tuple[list[Finding], str]:
    """An existing target table must take the rows: columns, upsert key, privileges. Also
    returns the table's state for the `ok` line."""
    p, db_schema = s.pipeline, s.postgres.db_schema
    table = f"{db_schema}.{p.table}"
    # the same questions, asked the same way, as the sink's setup (veltrix_ray.sink.introspect)
    with conn.cursor() as cur:
        oid = table_oid(cur, db_schema, p.table)
        if oid is None:
            return [], "does not exist yet and will be created"
        if schema is None:
            return [], "exists (not compared: the pipeline has errors)"
        # the key only constrains the table in upsert mode; append ignores it
        key = p.key if p.mode == "upsert" else []
        problems = [Finding("error", "pipeline.columns",
                            f"{why} (or set pipeline.table to a new table, which veltrix-ray "
                            "creates)")
                    for why in incompatibilities(schema, table, columns(cur, db_schema, p.table))]
        if key and not has_unique_key(cur, db_schema, p.table, key):
            keys = ", ".join(key)
            problems.append(Finding(
                "error", "pipeline.key",
                f"upsert on ({keys}) needs a PRIMARY KEY or UNIQUE index on exactly those "
                f"columns of {table}, which has none: run `CREATE UNIQUE INDEX ON {table} "
                f"({keys})`, or set pipeline.key to the columns of an existing one"))
    # SELECT: each batch is staged in `CREATE TEMP TABLE ... (LIKE target)`
    actions = ["SELECT", "INSERT"] + (["UPDATE"] if p.mode == "upsert" else [])
    denied = [a for a in actions
              if not conn.execute("SELECT has_table_privilege(%s::oid, %s)",
                                  (oid, a)).fetchone()[0]]  # type: ignore[index]
    if denied:
        user = conn.info.user
        problems.append(Finding(
            "error", "postgres.dsn",
            f"role {user} lacks {' and '.join(denied)} on {table}: run `GRANT "
            f"{', '.join(denied)} ON {table} TO {user}`, or connect as a role that has it"))
    return problems, "exists and fits the pipeline"


# -- Ray ------------------------------------------------------------------------------------


def _capacity(topo: TopologyConfig) -> tuple[float, float, str, bool]:
    """CPUs, memory bytes, a name for where the workers would run, and whether that cluster
    autoscales (adds nodes for the workers' demand)."""
    import ray

    if ray.is_initialized():  # the run uses this Ray too, whatever topology.address says
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        return (resources.get("CPU", 0.0), resources.get("memory", 0.0), "the connected Ray",
                has_autoscaler())
    if is_local(topo.address):
        return (float(os.cpu_count() or 1), float(psutil.virtual_memory().total),
                "this machine (a private Ray)", False)
    assert topo.address is not None
    resources, autoscales = probe(topo.address, topo.join_timeout_s)
    return (resources.get("CPU", 0.0), resources.get("memory", 0.0),
            f"the Ray cluster at {topo.address}", autoscales)


def _either(fixes: list[str]) -> str:
    """"lower a or b, or " before the last resort."""
    return f"{' or '.join(fixes)}, or " if fixes else ""


def _ray(s: VeltrixConfig, partitions: int | None) -> Area:
    topo = s.topology
    if topo.workers < 1 or topo.num_cpus <= 0 or address_problem(topo.address):
        return [], None  # already static errors
    try:
        cpus, memory, where, autoscales = _capacity(topo)
    except Exception as exc:  # noqa: BLE001 - any failure to join means the address is wrong
        return [Finding("error", "topology.address",
                        f"cannot connect to Ray at {topo.address} ({type(exc).__name__}: "
                        f"{exc}): {JOIN_FIX}")], None
    actors = min(topo.workers, partitions) if partitions else topo.workers
    counted = (f"{actors} workers" if actors == topo.workers
               else f"{actors} workers (one per partition of the topic's {partitions})")
    need_cpus = actors * topo.num_cpus
    need_mb, have_mb = actors * topo.memory_mb, int(memory // MIB)
    problems = []
    # an autoscaling cluster adds nodes for the workers (within topology.place_timeout_s)
    level = "warning" if autoscales else "error"
    more = (f"; its autoscaler must add nodes within topology.place_timeout_s="
            f"{topo.place_timeout_s:g}s" if autoscales else "")
    if need_cpus > cpus:
        fixes = [f"lower topology.workers to {int(cpus // topo.num_cpus)}"
                 ] if cpus >= topo.num_cpus else []
        fixes += [f"topology.num_cpus to {cpus / actors:.2g}"] if cpus > 0 else []
        problems.append(Finding(
            level, "topology.workers",
            f"{counted} x topology.num_cpus={topo.num_cpus:g} need {need_cpus:g} CPUs, but "
            f"{where} has {cpus:g}: {_either(fixes)}add nodes{more}"))
    if need_mb > have_mb:
        fixes = [f"lower topology.memory_mb to {have_mb // actors}"] if have_mb >= actors else []
        fixes += [f"topology.workers to {have_mb // topo.memory_mb}"
                  ] if have_mb >= topo.memory_mb else []
        problems.append(Finding(
            level, "topology.memory_mb",
            f"{counted} x topology.memory_mb={topo.memory_mb} need {need_mb} MiB, but {where} "
            f"has {have_mb} MiB: {_either(fixes)}add nodes{more}"))
    return problems, (f"{counted} need {need_cpus:g} of {cpus:g} CPUs and {need_mb} of "
                      f"{have_mb} MiB on {where}{' (it autoscales)' if autoscales else ''}")


# -- memory budget and dead letters ---------------------------------------------------------


def _memory(s: VeltrixConfig) -> Area:
    """The budget's sizes (static_findings already refuses a budget that cannot hold them)."""
    topo = s.topology
    largest = s.pipeline.max_record_bytes
    try:
        budget = Budget.derive(topo.memory_mb, topo.memory, largest)
    except ConfigError:  # already a static error naming the key
        return [], None
    batch = budget.batch_bytes
    problems = []
    typical = s.batch.max_records * TYPICAL_EVENT_BYTES
    if typical > FAR_ABOVE * batch:
        problems.append(Finding(
            "warning", "batch.max_records",
            f"batch.max_records={s.batch.max_records} x ~{TYPICAL_EVENT_BYTES}-byte events is "
            f"{typical / MIB:.0f} MiB, far above the batch byte cap of {batch / MIB:.1f} MiB: "
            f"batches end at about {batch // TYPICAL_EVENT_BYTES} records; lower "
            "batch.max_records to that, or raise topology.memory_mb for bigger batches"))
    return problems, (f"batches up to {batch / MIB:.1f} MiB (about "
                      f"{batch // TYPICAL_EVENT_BYTES} typical events) within the "
                      f"{topo.memory_mb} MiB budget; records up to {largest} bytes fit; "
                      f"batches shrink above {budget.rss_high_water_bytes / MIB:.0f} MiB "
                      "resident")


def _dead_letters(s: VeltrixConfig) -> Area:
    dl = s.pipeline.dead_letters
    if not (0 < dl.max_ratio <= 1 and dl.window >= 1 and dl.max_consecutive >= 1):
        return [], None  # already static errors
    problems = []
    if dl.max_ratio == 1:
        problems.append(Finding(
            "warning", "pipeline.dead_letters.max_ratio",
            "is 1: more than 100% of a window can never be bad, so the ratio limit never fires "
            "and only max_consecutive stops a broken producer; lower it, e.g. 0.5"))
    elif dl.max_consecutive > dl.window:
        problems.append(Finding(
            "warning", "pipeline.dead_letters.max_consecutive",
            f"{dl.max_consecutive} is above pipeline.dead_letters.window={dl.window}: a run of "
            f"{dl.window} bad records already trips max_ratio={dl.max_ratio:g}, so this limit "
            f"never fires; set it to at most {dl.window}"))
    return problems, (f"a partition stops when over {dl.max_ratio:.0%} of its last {dl.window} "
                      f"records, or over {dl.max_consecutive} in a row, are bad")
