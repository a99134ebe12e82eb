"""A single-node Apache Kafka broker in KRaft mode, its jars resolved by Maven, run by Java 17+."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from veltrix_ray.errors import StackError
from veltrix_ray.local import procs

KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17
_HERE = Path(__file__).parent / "kafka"
POM = _HERE / "pom.xml"
LOG4J = _HERE / "log4j2.properties"


def cache_root() -> Path:
    return Path(os.environ.get("VELTRIX_CACHE_DIR", Path.home() / ".cache" / "veltrix-ray"))


def find_java() -> tuple[str, int]:
    """The java binary from JAVA_HOME, else PATH, and its major version (must be >= 17)."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = None
    if java_home and (Path(java_home) / "bin" / "java").exists():
        candidate = str(Path(java_home) / "bin" / "java")
    else:
        candidate = shutil.which("java")
    if candidate is None:
        where = f"JAVA_HOME={java_home} has no bin/java, and " if java_home else ""
        raise StackError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker, but {where}no `java` is on "
            f"PATH. Install a JDK/JRE {MIN_JAVA}+ (e.g. `apt-get install openjdk-17-jre-headless`) "
            "or set JAVA_HOME to one."
        )
    try:
        out = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise StackError(f"Could not run {candidate} -version ({exc}); set JAVA_HOME to a "
                         f"working JDK {MIN_JAVA}+.") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise StackError(f"Could not read the Java version from `{candidate} -version`: "
                         f"{(out.stderr or out.stdout).strip()[:200]!r}. Set JAVA_HOME to a JDK "
                         f"{MIN_JAVA}+.")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, but {candidate} is Java {major}. "
            f"Install a JDK {MIN_JAVA}+ (e.g. `apt-get install openjdk-17-jre-headless`) and point "
            "JAVA_HOME at it."
        )
    return candidate, major


def resolve_jars(version: str = KAFKA_VERSION) -> Path:
    """The broker's classpath directory; Maven fills it once, then it is reused offline."""
    override = os.environ.get("VELTRIX_KAFKA_LIBS")
    if override:
        libs = Path(override)
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"VELTRIX_KAFKA_LIBS={libs} holds no kafka_2.13-*.jar; unset it to "
                             "let Maven resolve the broker, or point it at the broker's libs/.")
        return libs
    target = cache_root() / f"kafka-{version}"
    libs = target / "libs"
    if (target / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"Maven (`mvn`) is needed once to fetch the Kafka {version} broker jars into {libs}, "
            "and it is not on PATH. Install it (e.g. `apt-get install maven`), or set "
            "VELTRIX_KAFKA_LIBS to a directory holding the broker's jars."
        )
    staging = target / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cmd = [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime", f"-Dkafka.version={version}",
           *shlex.split(os.environ.get("VELTRIX_MAVEN_ARGS", ""))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
        raise StackError(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} (exit "
            f"{proc.returncode}). The first `local up` needs Maven Central (or a mirror in your "
            f"~/.m2/settings.xml, extra args via VELTRIX_MAVEN_ARGS); later runs use the cache "
            f"{libs}. Are you offline? Maven said:\n{output}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (target / ".complete").write_text(version)
    return libs


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True)
class SecureListeners:
    """Two more listeners of a broker, for trying TLS and SASL locally: SSL (which requires a
    client certificate signed by the truststore's CA) and SASL_SSL (PLAIN, SCRAM-SHA-256 and
    SCRAM-SHA-512 for `users`, whose SCRAM credentials are written when the storage is
    formatted). Both bound to 127.0.0.1, beside the plaintext listener."""

    ssl_port: int
    sasl_ssl_port: int
    # PEM: the broker's unencrypted PKCS#8 private key, then its certificate chain
    keystore: Path
    # PEM: the CA certificates that client certificates must chain to
    truststore: Path
    users: Mapping[str, str] = field(default_factory=dict)  # name -> password

    def properties(self) -> list[str]:
        from veltrix_ray.config.schema import SASL_MECHANISMS

        jaas = " ".join(f'user_{name}="{password}"' for name, password in self.users.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.truststore}",
            "listener.name.ssl.ssl.client.auth=required",
            f"sasl.enabled.mechanisms={','.join(SASL_MECHANISMS)}",
            "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security."
            f"plain.PlainLoginModule required {jaas};",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
        ]

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that create the SCRAM users."""
        from veltrix_ray.config.schema import SASL_MECHANISMS

        return [arg for name, password in self.users.items()
                for mechanism in SASL_MECHANISMS if mechanism.startswith("SCRAM")
                for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]


@dataclass
class KafkaBroker:
    """One combined broker+controller node bound to 127.0.0.1 (plaintext, plus TLS and SASL
    listeners when `secure` is given)."""

    home: Path
    port: int
    controller_port: int
    secure: SecureListeners | None = None

    @property
    def bootstrap(self) -> str:
        return f"{procs.HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def _write_properties(self) -> Path:
        props = self.home / "server.properties"
        advertised = [f"PLAINTEXT://{procs.HOST}:{self.port}"]
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if self.secure is not None:
            advertised += [f"SSL://{procs.HOST}:{self.secure.ssl_port}",
                           f"SASL_SSL://{procs.HOST}:{self.secure.sasl_ssl_port}"]
            protocols += ",SSL:SSL,SASL_SSL:SASL_SSL"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{procs.HOST}:{self.controller_port}",
            f"listeners={','.join(advertised)},CONTROLLER://{procs.HOST}:{self.controller_port}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={protocols}",
            *(self.secure.properties() if self.secure is not None else []),
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.home / 'data'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]))
        return props

    def start(self, timeout: float = 90.0) -> None:
        java, _ = find_java()
        libs = resolve_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._write_properties()
        classpath = f"{libs}/*"
        base = [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={LOG4J}", "-cp", classpath]
        if not (self.home / "data" / "meta.properties").exists():
            fmt = subprocess.run(
                [*base, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props),
                 *(self.secure.scram_arguments() if self.secure is not None else [])],
                capture_output=True, text=True)
            if fmt.returncode != 0:
                raise StackError(f"Formatting the KRaft storage in {self.home / 'data'} failed:\n"
                                 f"{(fmt.stdout + fmt.stderr).strip()[-2000:]}\nRun "
                                 "`veltrix-ray local down --wipe` and try again.")
        pid = procs.spawn([*base, "kafka.Kafka", str(props)], self.log, cwd=self.home)
        self.pid_file.write_text(str(pid))
        ready = procs.wait_until(lambda: not procs.pid_alive(pid) or self.answers_metadata(),
                                 timeout, interval=0.5)
        if not procs.pid_alive(pid):
            raise StackError(f"The Kafka broker exited during start-up. Last lines of {self.log}:"
                             f"\n{procs.tail(self.log)}")
        if not ready:
            raise StackError(
                f"The Kafka broker did not answer metadata requests on {self.bootstrap} within "
                f"{timeout:g}s (raise it with --timeout). Last lines of {self.log}:\n"
                f"{procs.tail(self.log)}"
            )

    def answers_metadata(self) -> bool:
        if procs.port_is_free(self.port):
            return False
        return asyncio.run(_metadata_ok(self.bootstrap))

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            procs.stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    # a broker still starting refuses connections: expected here, not worth an error log
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                            connections_max_idle_ms=5000)
    try:
        await client.bootstrap()
        return len(client.cluster.brokers()) > 0
    except (KafkaError, OSError):
        return False
    finally:
        await client.close()
