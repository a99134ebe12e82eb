"""The embedded local stack against the real Kafka and PostgreSQL it starts."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import psutil
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from veltrix_ray import cli
from veltrix_ray.errors import StackError
from veltrix_ray.local import LocalStack
from veltrix_ray.local import kafka as local_kafka
from veltrix_ray.local.kafka import KafkaBroker
from veltrix_ray.local.procs import free_port
from veltrix_ray.source.admin import ensure_topic


async def _round_trip(bootstrap: str) -> bytes:
    await ensure_topic(bootstrap, "roundtrip", 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("roundtrip", b"hello veltrix", key=b"k", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition("roundtrip", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        value: bytes = batch[tp][0].value
        return value
    finally:
        await consumer.stop()


def test_up_round_trips_and_down_leaves_nothing_running(service_dir: Path,
                                                       services: object) -> None:
    stack = LocalStack(service_dir / "state")
    try:
        first = stack.up()
        assert first.running
        assert first.bootstrap and first.bootstrap.startswith("127.0.0.1:")
        assert first.dsn and "@127.0.0.1:" in first.dsn
        again = stack.up()  # idempotent: same processes, same addresses
        assert (again.kafka_pid, again.postgres_pid, again.registry_pid) == (
            first.kafka_pid, first.postgres_pid, first.registry_pid)
        assert again.bootstrap == first.bootstrap

        assert asyncio.run(_round_trip(first.bootstrap)) == b"hello veltrix"
        with psycopg.connect(first.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE rt (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO rt VALUES (1, 'row')")
            assert conn.execute("SELECT id, v FROM rt").fetchall() == [(1, "row")]

        env = stack.env()
        assert env == {"VELTRIX_KAFKA_BOOTSTRAP": first.bootstrap,
                       "VELTRIX_POSTGRES_DSN": first.dsn,
                       "VELTRIX_SCHEMA_REGISTRY_URL": first.registry_url}
    finally:
        stack.down()
    assert first.kafka_pid and first.postgres_pid and first.registry_pid
    for pid in (first.kafka_pid, first.postgres_pid, first.registry_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not stack.status().running
    stack.down(wipe=True)
    assert not (service_dir / "state").exists()


def test_busy_port_names_the_port_and_the_flag(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=rf"port 127.0.0.1:{port} is already in use.*"
                                              r"--kafka-port"):
            LocalStack(tmp_path / "a").up(kafka_port=port)
        code = cli.main(["local", "up", "--state-dir", str(tmp_path / "b"),
                         "--postgres-port", str(port)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"port 127.0.0.1:{port} is already in use" in err
    assert "--postgres-port" in err


def test_env_of_a_stopped_stack_says_how_to_start_it(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["local", "env", "--state-dir", str(tmp_path)]) == 1
    assert "veltrix-ray local up" in capsys.readouterr().err


def test_java_missing_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"Java 17\+ is needed.*JAVA_HOME=.*no-jdk.*apt-get "
                                          r"install openjdk-17"):
        local_kafka.find_java()


def test_old_java_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "jdk11" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text('#!/bin/sh\necho \'openjdk version "11.0.22" 2024-01-16\' >&2\n')
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk11"))
    with pytest.raises(StackError, match=r"needs Java 17\+, but .* is Java 11.*JAVA_HOME"):
        local_kafka.find_java()


def test_maven_missing_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("VELTRIX_KAFKA_LIBS", raising=False)
    with pytest.raises(StackError, match=r"Maven \(`mvn`\) is needed.*apt-get install maven"):
        local_kafka.resolve_jars()


def test_maven_offline_with_empty_cache_names_the_fix(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VELTRIX_MAVEN_ARGS", f"-o -Dmaven.repo.local={tmp_path / 'empty-m2'}")
    monkeypatch.delenv("VELTRIX_KAFKA_LIBS", raising=False)
    with pytest.raises(StackError, match=r"Maven could not resolve org.apache.kafka:kafka_2.13.*"
                                          r"Are you offline\?"):
        local_kafka.resolve_jars()
    assert not (tmp_path / "cache" / f"kafka-{local_kafka.KAFKA_VERSION}" / ".complete").exists()


def test_broker_not_ready_in_time_shows_its_log(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", free_port(), free_port())
    try:
        with pytest.raises(StackError, match=r"did not answer metadata requests on "
                                              r"127.0.0.1:\d+ within 0.5s \(raise it with "
                                              r"--timeout\)\. Last lines of .*broker.log"):
            broker.start(timeout=0.5)
    finally:
        broker.stop()
    assert broker.pid() is None
