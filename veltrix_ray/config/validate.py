"""Static validation of a config (no network, no other layer): every finding names the key to
change. What needs the transforms is in veltrix_ray/check/pipeline.py."""

from __future__ import annotations

from dataclasses import dataclass

from veltrix_ray.config.budget import Budget, BudgetError
from veltrix_ray.config.parse import parse_start
from veltrix_ray.config.ray_address import address_problem, is_local
from veltrix_ray.config.schema import (
    SASL_MECHANISMS,
    SASL_PROTOCOLS,
    TLS_PROTOCOLS,
    KafkaConfig,
    TopologyConfig,
    VeltrixConfig,
)
from veltrix_ray.errors import ConfigError


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warning | error
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.level:7} {self.key}: {self.message}"


def kafka_security_findings(k: KafkaConfig) -> list[Finding]:
    """kafka.security_protocol, kafka.sasl_* and kafka.ssl.* fit together."""
    f: list[Finding] = []
    if k.security_protocol in SASL_PROTOCOLS:
        if k.sasl_mechanism is None:
            f.append(Finding("error", "kafka.sasl_mechanism",
                             f"kafka.security_protocol={k.security_protocol} needs a mechanism: "
                             f"one of {', '.join(SASL_MECHANISMS)}"))
        for key, env in (("kafka.sasl_username", "$VELTRIX_KAFKA_USERNAME"),
                         ("kafka.sasl_password", "$VELTRIX_KAFKA_PASSWORD")):
            if not getattr(k, key.removeprefix("kafka.")):
                f.append(Finding("error", key, f"is not set: export {env} (SASL credentials "
                                               "come from the environment)"))
    elif k.sasl_mechanism is not None:
        f.append(Finding("error", "kafka.sasl_mechanism",
                         f"is set, but kafka.security_protocol={k.security_protocol} does not "
                         "use SASL: set kafka.security_protocol=SASL_SSL (or SASL_PLAINTEXT), or "
                         "remove kafka.sasl_mechanism"))
    if k.security_protocol == "SASL_PLAINTEXT" and k.sasl_mechanism == "PLAIN":
        f.append(Finding("warning", "kafka.security_protocol",
                         "SASL_PLAINTEXT with PLAIN sends the password unencrypted: use "
                         "SASL_SSL, or a SCRAM mechanism"))
    files = {"cafile": k.ssl.cafile, "certfile": k.ssl.certfile, "keyfile": k.ssl.keyfile}
    if k.security_protocol not in TLS_PROTOCOLS:
        for name in (name for name, path in files.items() if path is not None):
            f.append(Finding("warning", f"kafka.ssl.{name}",
                             f"is ignored: kafka.security_protocol={k.security_protocol} does "
                             "not use TLS (SSL or SASL_SSL do)"))
    elif k.ssl.keyfile is not None and k.ssl.certfile is None:
        f.append(Finding("error", "kafka.ssl.certfile", "is needed with kafka.ssl.keyfile: the "
                                                        "client certificate (PEM)"))
    return f


def autoscale_findings(t: TopologyConfig) -> list[Finding]:
    """topology.autoscale.* are in range and fit topology.workers."""
    a, k = t.autoscale, "topology.autoscale."
    f: list[Finding] = []
    if a.min_workers < 1:
        f.append(Finding("error", k + "min_workers", f"{a.min_workers} must be at least 1"))
    if a.max_workers < a.min_workers:
        f.append(Finding("error", k + "max_workers", f"{a.max_workers} must be >= "
                         f"topology.autoscale.min_workers ({a.min_workers})"))
    for key, value in (("interval_s", a.interval_s), ("catch_up_s", a.catch_up_s),
                       ("stall_s", a.stall_s)):
        if value <= 0:
            f.append(Finding("error", k + key, f"{value:g} must be > 0"))
    for key, value in (("scale_down_window_s", a.scale_down_window_s),
                       ("stabilise_s", a.stabilise_s), ("sink_hold_s", a.sink_hold_s),
                       ("sink_min_gain", a.sink_min_gain), ("max_step_add", a.max_step_add)):
        if value < 0:
            f.append(Finding("error", k + key, f"{value:g} must be >= 0"))
    if not 0 < a.target_utilisation <= 1:
        f.append(Finding("error", k + "target_utilisation",
                         f"{a.target_utilisation:g} must be in (0, 1]"))
    if a.max_step_factor < 1:
        f.append(Finding("error", k + "max_step_factor", f"{a.max_step_factor:g} must be >= 1"))
    elif a.max_step_factor == 1 and a.max_step_add < 1:
        f.append(Finding("error", k + "max_step_add", "with max_step_factor 1 it must be at "
                         "least 1, or no scale-up is possible"))
    if a.sink_latency_factor <= 1:
        f.append(Finding("error", k + "sink_latency_factor",
                         f"{a.sink_latency_factor:g} must be > 1"))
    if a.enabled and 0 < a.scale_down_window_s < a.interval_s:
        f.append(Finding("warning", k + "scale_down_window_s",
                         f"{a.scale_down_window_s:g}s is shorter than interval_s "
                         f"({a.interval_s:g}s): one quiet decision is enough to scale down"))
    if a.enabled and a.min_workers <= a.max_workers and not (
            a.min_workers <= t.workers <= a.max_workers):
        f.append(Finding("warning", "topology.workers",
                         f"{t.workers} is outside topology.autoscale [{a.min_workers}, "
                         f"{a.max_workers}]: the run starts with {t.workers} and the "
                         "autoscaler moves it into the bounds at its first decision"))
    return f


def memory_findings(s: VeltrixConfig) -> list[Finding]:
    """The budget can hold its batches and the largest record under topology.memory_mb (a run
    refuses what `check` reports: both call this)."""
    if s.pipeline.max_record_bytes < 1:
        return []  # its own error
    try:
        Budget.derive(s.topology.memory_mb, s.topology.memory, s.pipeline.max_record_bytes)
    except BudgetError as exc:
        return [Finding("error", exc.key, str(exc))]
    return []


REGISTRY_FORMATS = ("avro", "protobuf")


def format_findings(s: VeltrixConfig) -> list[Finding]:
    p = s.pipeline
    f: list[Finding] = []
    registry = [k for k, v in (("pipeline.format", p.format), ("pipeline.key_format",
                                                                  p.key_format))
                if v in REGISTRY_FORMATS]
    if registry and not s.schema_registry.url:
        f.append(Finding("error", "schema_registry.url",
                         f"{registry[0]}={getattr(p, registry[0].split('.')[1])} reads "
                         "schemas from a Confluent-API registry: set schema_registry.url (or "
                         "$VELTRIX_SCHEMA_REGISTRY_URL; `veltrix-ray local env` exports the "
                         "local stack's)"))
    if not p.columns and p.format not in REGISTRY_FORMATS:
        f.append(Finding("error", "pipeline.columns",
                         f"is empty: list the event's fields with their types (pipeline.format="
                         f"{p.format} carries no schema; avro and protobuf take it from the "
                         "registry)"))
    if p.schema_evolution == "add_columns" and p.format not in REGISTRY_FORMATS:
        f.append(Finding("warning", "pipeline.schema_evolution",
                         "add_columns follows a registry's schemas: it has no effect with "
                         f"pipeline.format={p.format}"))
    for c in p.columns:
        if c.source == "key" and p.key_format == "none":
            f.append(Finding("error", "pipeline.key_format",
                             f"none, but column {c.name!r} is read from the key (source: key): "
                             "set pipeline.key_format (string | json | avro | protobuf)"))
    if p.key_format != "none" and p.columns and not any(c.source == "key" for c in p.columns):
        f.append(Finding("warning", "pipeline.key_format",
                         f"{p.key_format}, but no column has source: key: the key is decoded "
                         "(a bad one is a dead letter) and not written"))
    if s.schema_registry.timeout_s <= 0:
        f.append(Finding("error", "schema_registry.timeout_s", "must be > 0"))
    return f


def static_findings(s: VeltrixConfig) -> list[Finding]:
    """Findings from the config alone (what the transforms write: check.pipeline)."""
    f: list[Finding] = kafka_security_findings(s.kafka) + autoscale_findings(s.topology)
    address = address_problem(s.topology.address)
    if address is not None:
        f.append(Finding("error", "topology.address", address))
    if s.topology.join_timeout_s <= 0:
        f.append(Finding("error", "topology.join_timeout_s", "must be > 0"))
    if s.topology.workers < 1:
        f.append(Finding("error", "topology.workers", "must be at least 1"))
    for key, value in (("postgres.lock_timeout_s", s.postgres.lock_timeout_s),
                       ("postgres.idle_in_transaction_timeout_s",
                        s.postgres.idle_in_transaction_timeout_s)):
        if value < 0:
            f.append(Finding("error", key, f"{value:g} must be >= 0 (0: no limit)"))
    if s.postgres.retry.max_elapsed_s is not None and s.postgres.retry.max_elapsed_s <= 0:
        f.append(Finding("error", "postgres.retry.max_elapsed_s",
                         "must be > 0, or null to retry for ever"))
    if s.topology.max_restarts < 0:
        f.append(Finding("error", "topology.max_restarts", "must be >= 0"))
    if s.topology.restart_window_s <= 0:
        f.append(Finding("error", "topology.restart_window_s", "must be > 0"))
    if not 0 <= s.topology.restart_backoff_s <= s.topology.restart_backoff_max_s:
        f.append(Finding("error", "topology.restart_backoff_s",
                         "must be >= 0 and at most topology.restart_backoff_max_s"))
    port = s.topology.metrics_port
    if port is not None and not 1024 <= port <= 65535:
        f.append(Finding("error", "topology.metrics_port", "must be a port in 1024..65535 or "
                         "null"))
    if port is not None and not is_local(s.topology.address):
        f.append(Finding("warning", "topology.metrics_port", "applies to a private Ray only; on "
                         "a cluster each node exports metrics on the port its `ray start "
                         "--metrics-export-port` set"))
    for key in ("partition_discovery_s", "place_timeout_s"):
        if getattr(s.topology, key) <= 0:
            f.append(Finding("error", f"topology.{key}", "must be > 0"))
    if s.topology.num_cpus <= 0:
        f.append(Finding("error", "topology.num_cpus", "must be > 0"))
    if s.batch.max_records < 1:
        f.append(Finding("error", "batch.max_records", "must be at least 1"))
    if s.pipeline.max_record_bytes < 1:
        f.append(Finding("error", "pipeline.max_record_bytes", "must be at least 1"))
    dl = s.pipeline.dead_letters
    if not 0 < dl.max_ratio <= 1:
        f.append(Finding("error", "pipeline.dead_letters.max_ratio",
                         f"{dl.max_ratio} must be in (0, 1]"))
    if dl.window < 1:
        f.append(Finding("error", "pipeline.dead_letters.window", "must be at least 1"))
    if dl.max_consecutive < 1:
        f.append(Finding("error", "pipeline.dead_letters.max_consecutive", "must be at least 1"))
    try:
        parse_start(s.kafka.start)
    except ConfigError as exc:
        f.append(Finding("error", "kafka.start", str(exc)))
    return f + memory_findings(s) + format_findings(s)
