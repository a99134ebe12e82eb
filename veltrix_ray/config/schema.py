"""Structured configs: the single source of defaults and types (registered in Hydra's store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class Choice(str, Enum):
    """A closed choice of a config key: a bad value fails at compose time, naming the key and
    the allowed values. A member is its value (it compares, hashes and prints as the string),
    and its name is that value too, because OmegaConf reads YAML and overrides by name."""

    def __str__(self) -> str:
        return str(self.value)


class SecurityProtocol(Choice):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(Choice):
    PLAIN = "PLAIN"
    # Kafka's names are no identifiers: set through the class namespace, still members
    vars()["SCRAM-SHA-256"] = "SCRAM-SHA-256"
    vars()["SCRAM-SHA-512"] = "SCRAM-SHA-512"


class ColumnType(Choice):
    """A column's type (veltrix_ray/batch/schema.py maps each to Arrow and PostgreSQL)."""

    int64 = "int64"
    float64 = "float64"
    string = "string"
    bool = "bool"
    timestamp = "timestamp"
    date = "date"
    json = "json"
    bytes = "bytes"
    uuid = "uuid"
    decimal = "decimal"


class ColumnSource(Choice):
    value = "value"
    key = "key"


class Mode(Choice):
    append = "append"
    upsert = "upsert"


class Format(Choice):
    json = "json"
    avro = "avro"
    protobuf = "protobuf"


class KeyFormat(Choice):
    none = "none"
    string = "string"
    json = "json"
    avro = "avro"
    protobuf = "protobuf"


class SchemaEvolution(Choice):
    none = "none"
    add_columns = "add_columns"


class OnTransformError(Choice):
    dead_letter = "dead_letter"
    stop = "stop"


class Placement(Choice):
    PACK = "PACK"
    SPREAD = "SPREAD"


class Until(Choice):
    forever = "forever"
    drained = "drained"



@dataclass
class KafkaSslConfig:
    """TLS towards the brokers, when kafka.security_protocol is SSL or SASL_SSL."""

    # PEM file of the CA(s) that signed the brokers' certificates; null: the system's CAs
    cafile: str | None = None
    # PEM client certificate and its private key, for brokers that require mutual TLS
    certfile: str | None = None
    keyfile: str | None = None
    # the private key's password: from the environment only
    password: str | None = "${oc.env:VELTRIX_KAFKA_SSL_KEY_PASSWORD,null}"
    # the broker's certificate must name the host in kafka.bootstrap (turn off only on a
    # trusted network: it is what stops a man in the middle)
    check_hostname: bool = True


TLS_PROTOCOLS = (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)
SASL_PROTOCOLS = (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)
SASL_MECHANISMS = tuple(m.value for m in SaslMechanism)


@dataclass
class KafkaConfig:
    bootstrap: str = "${oc.env:VELTRIX_KAFKA_BOOTSTRAP,127.0.0.1:19092}"
    topic: str = MISSING
    # where a partition starts when no offset is stored: earliest | latest | ISO-8601 timestamp
    start: str = "earliest"
    # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    ssl: KafkaSslConfig = field(default_factory=KafkaSslConfig)
    # with SASL_*: PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512; the credentials from the environment
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = "${oc.env:VELTRIX_KAFKA_USERNAME,null}"
    sasl_password: str | None = "${oc.env:VELTRIX_KAFKA_PASSWORD,null}"
    fetch_wait_ms: int = 200
    request_timeout_ms: int = 30_000
    # how long a worker waits for an unreachable broker when it starts, before it fails
    connect_timeout_s: float = 60.0


@dataclass
class RetryConfig:
    # how long a transient failure (PostgreSQL away, a lock held) is retried before the worker
    # fails; null: for ever (a `forever` service rides out any outage)
    max_elapsed_s: float | None = None
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0


@dataclass
class PostgresConfig:
    dsn: str = "${oc.env:VELTRIX_POSTGRES_DSN,postgresql://postgres@127.0.0.1:15432/postgres}"
    db_schema: str = "public"
    connect_timeout_s: int = 10
    # per session: a lock wait longer than this is an error we retry and report (who holds
    # it); a session idle in a transaction that long is ended by the server, so a worker whose
    # node vanished mid-commit cannot hold the offsets rows' locks
    lock_timeout_s: float = 30.0
    idle_in_transaction_timeout_s: float = 60.0
    retry: RetryConfig = field(default_factory=RetryConfig)


@dataclass
class ColumnConfig:
    name: str = MISSING
    type: ColumnType = MISSING
    nullable: bool = True
    # value | key: which side of the record the field is read from (key: pipeline.key_format)
    source: ColumnSource = ColumnSource.value


@dataclass
class DeadLetterConfig:
    # a partition stops when more than max_ratio of its last `window` records were bad ...
    max_ratio: float = 0.5
    window: int = 1_000
    # ... or after this many bad records in a row
    max_consecutive: int = 500


@dataclass
class PipelineConfig:
    name: str = MISSING
    table: str = MISSING
    # append | upsert
    mode: Mode = Mode.append
    # the record values: json | avro | protobuf (avro and protobuf: Confluent wire format, schemas
    # from schema_registry; pipeline.columns then optional: derived from <topic>-value's latest)
    format: Format = Format.json
    # the record keys: none (kept as bytes in _kafka_key) | string | json | avro | protobuf;
    # a decoded key's fields become columns (a scalar key: the column named by pipeline.key)
    key_format: KeyFormat = KeyFormat.none
    # none: fields a table lacks are not written | add_columns: a new nullable or defaulted
    # field becomes a column (ALTER TABLE ... ADD COLUMN) before the batch that first holds it
    schema_evolution: SchemaEvolution = SchemaEvolution.none
    key: list[str] = field(default_factory=list)
    columns: list[ColumnConfig] = field(default_factory=list)
    # Hydra `_target_` nodes: callables RecordBatch -> RecordBatch (or factories of them)
    transforms: list[Any] = field(default_factory=list)
    # dead_letter | stop
    on_transform_error: OnTransformError = OnTransformError.dead_letter
    max_record_bytes: int = 131_072
    dead_letters: DeadLetterConfig = field(default_factory=DeadLetterConfig)


@dataclass
class SchemaRegistryConfig:
    """A Confluent-API schema registry (pipeline.format avro | protobuf)."""

    # e.g. http://127.0.0.1:18081/apis/ccompat/v7 (the local stack's; `local env` exports it)
    url: str | None = "${oc.env:VELTRIX_SCHEMA_REGISTRY_URL,null}"
    # basic auth: from the environment only
    username: str | None = "${oc.env:VELTRIX_SCHEMA_REGISTRY_USERNAME,null}"
    password: str | None = "${oc.env:VELTRIX_SCHEMA_REGISTRY_PASSWORD,null}"
    timeout_s: float = 10.0


@dataclass
class MemoryConfig:
    # interpreter, pyarrow, aiokafka, psycopg: what a worker holds before any data
    overhead_mb: int = 256
    # peak bytes held per fetched byte while a batch is decoded, transformed and written
    expansion: float = 12.0
    # batches alive at once: one buffered by the consumer, one decoding, one committing
    inflight_batches: int = 3


@dataclass
class AutoscaleConfig:
    """The autoscaler's law (veltrix_ray/runtime/autoscale.py; docs/scaling.md)."""

    # off: the run keeps topology.workers; on: it starts there and moves within the bounds
    enabled: bool = False
    # bounds of the worker count (never more than the topic's partitions)
    min_workers: int = 1
    max_workers: int = 8
    # seconds between two decisions (and the window rates and lag trends are measured over)
    interval_s: float = 15.0
    # fewer workers must have sufficed this long at the current size before a scale-down
    scale_down_window_s: float = 300.0
    # the busy share of a worker the law sizes for (headroom for bursts)
    target_utilisation: float = 0.7
    # the backlog is to be drained within this many seconds, on top of the incoming rate
    catch_up_s: float = 300.0
    # one scale-up goes to at most max(workers × max_step_factor, workers + max_step_add);
    # one scale-down to no fewer than workers / max_step_factor
    max_step_factor: float = 2.0
    max_step_add: int = 4
    # after any change, no further change for this long (rates settle, claims finish)
    stabilise_s: float = 60.0
    # a partition with lag and a live owner whose committed offset has not moved this long is
    # stalled: its lag does not drive a scale-out
    stall_s: float = 120.0
    # sink gate: a scale-up must raise the committed rate by this share ...
    sink_min_gain: float = 0.1
    # ... and must not multiply commit p95 by this factor while the rate per worker falls;
    # else back to the best size seen (PostgreSQL, or shared CPU, is the bottleneck)
    sink_latency_factor: float = 2.0
    # after the sink gate, no scale-up for this long
    sink_hold_s: float = 900.0


@dataclass
class TopologyConfig:
    name: str = "local"
    # Ray address: null or "local" starts a private Ray (even when another Ray runs here or
    # $RAY_ADDRESS is set); "auto", "host:6379" or "ray://host:10001" joins a running cluster
    address: str | None = None
    workers: int = 2
    num_cpus: float = 0.5
    memory_mb: int = 768
    # PACK | SPREAD (SPREAD puts workers on different nodes: a node's loss costs few partitions)
    placement: Placement = Placement.PACK
    # the same crash on the same record within restart_window_s more than this: its
    # partition stops (the others go on); lost workers (killed, node gone, a service away)
    # count only in an until=drained run, which then ends; a `forever` run restarts them
    max_restarts: int = 5
    restart_window_s: float = 300.0
    # delay before a restart: doubles with each failure in the window, up to the max
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    # joining a cluster only: seconds to wait for it to answer before the run fails
    join_timeout_s: float = 20.0
    # seconds between two looks for partitions added to the topic (taken without a restart)
    partition_discovery_s: float = 30.0
    # a rescale's new worker must be placed and connected within this many seconds (on an
    # autoscaling cluster: a new node's boot); until then no partition moves
    place_timeout_s: float = 600.0
    # private Ray only: shared-memory object store size
    object_store_mb: int = 256
    # private Ray only: the port of Ray's Prometheus metrics export, on 127.0.0.1 (null: a
    # free port Ray picks); on a cluster, Ray's own per-node metrics ports apply
    metrics_port: int | None = None
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)


@dataclass
class BatchConfig:
    max_records: int = 50_000


@dataclass
class VeltrixConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    schema_registry: SchemaRegistryConfig = field(default_factory=SchemaRegistryConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    # forever | drained
    until: Until = Until.forever
    progress_interval_s: float = 1.0
