"""Metrics as a user sees them: Ray's Prometheus export scraped over HTTP, a real Prometheus
evaluating the shipped dashboard and alert rules, promtool checking the rules.

One `forever` run drains a topic with bad records of every sort (decode, transform, sink),
then stays idle while the tests look at it; the counters must agree with PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray
from aiokafka import AIOKafkaProducer
from conftest import Services, _dsn_for, _service_dir
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from veltrix_ray.local.prometheus import LocalPrometheus, binaries
from veltrix_ray.produce import partition_for
from veltrix_ray.source.admin import ensure_topic

from .helpers import Background, fill, offsets, overrides

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "observability" / "grafana" / "veltrix.json"
ALERTS = REPO / "observability" / "prometheus" / "alerts.yml"
PARTITIONS = 4
IDLE_S = 60
EVENTS_TABLE = ("CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL, "
                "user_id bigint NOT NULL, kind text NOT NULL, amount double precision NOT NULL "
                "CHECK (amount < 1e12), country text NOT NULL, payload jsonb)")


@dataclass
class IdleRun:
    pipeline: str
    topic: str
    dsn: str
    port: int
    run: Background
    idle_since: float

    def progress(self) -> dict[str, Any]:
        return dict(ray.get(self.run.coordinator().progress.remote()))


def _send(bootstrap: str, topic: str, partition: int, key: bytes, value: bytes) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await (await producer.send(topic, value, key=key, partition=partition))
        finally:
            await producer.stop()

    asyncio.run(go())


@pytest.fixture(scope="module")
def idle_run(ray_local: int, services: Services) -> Iterator[IdleRun]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _dsn_for(services.dsn, name)
    topic = f"t-{uuid.uuid4().hex[:12]}"
    asyncio.run(ensure_topic(services.bootstrap, topic, PARTITIONS))
    exp = fill(services.bootstrap, topic, 4_000, PARTITIONS, seed=5, bad_fraction=0.01)
    # a row PostgreSQL refuses (CHECK), and an event the transform raises on
    poison = {"event_id": "poison", "ts": "2026-11-26T10:00:00+00:00", "user_id": 7,
              "kind": "view", "amount": 1e300, "country": "DE", "payload": {}}
    key = b"7"
    _send(services.bootstrap, topic, partition_for(key, PARTITIONS), key,
          json.dumps(poison).encode())
    victim = sorted(exp.good)[0]
    with psycopg.connect(dsn) as conn:
        conn.execute(EVENTS_TABLE)
    pipeline = f"metrics_{uuid.uuid4().hex[:8]}"
    over = [o for o in overrides(topic, dsn, f"pipeline.name={pipeline}", "topology.workers=2",
                                 "batch.max_records=300",
                                 "+pipeline.transforms=[{_target_: tests.runtime.transforms."
                                 f"raise_on, event_id: '{victim}'}}]")
            if o != "until=drained"]
    ends = dict(exp.high_watermarks)
    ends[partition_for(key, PARTITIONS)] += 1
    try:
        with Background(over) as run:
            run.wait("the topic drained", lambda: _offsets(dsn, topic) == ends, timeout=240)
            yield IdleRun(pipeline, topic, dsn, ray_local, run, time.monotonic())
        run.join()
    finally:
        with psycopg.connect(services.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def _offsets(dsn: str, topic: str) -> dict[int, int | None]:
    try:
        return offsets(dsn, topic)
    except psycopg.errors.UndefinedTable:  # not set up yet
        return {}


def scrape(port: int, pipeline: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Ray's export, parsed by prometheus_client: samples of this pipeline by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("pipeline") == pipeline:
                out[s.name].append((s.labels, s.value))
    return out


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          by: str | None = None) -> Any:
    if by is None:
        return sum(v for _, v in samples.get(name, []))
    sums: dict[str, float] = {}
    for labels, v in samples.get(name, []):
        sums[labels[by]] = sums.get(labels[by], 0.0) + v
    return sums


def per_partition(samples: dict[str, list[tuple[dict[str, str], float]]], name: str
                  ) -> dict[int, float]:
    return {int(labels["partition"]): v for labels, v in samples.get(name, [])}


def settled(r: IdleRun, rows: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The export once it shows the drained state (each process exports every few
    seconds, on its own schedule)."""
    deadline = time.monotonic() + 60
    while True:
        batches = sum(w["batches"] for w in r.progress()["workers"])
        got = scrape(r.port, r.pipeline)
        lag = per_partition(got, "ray_veltrix_partition_lag_records")
        if (total(got, "ray_veltrix_rows_committed_total") == rows
                and total(got, "ray_veltrix_commit_seconds_count") == batches
                and len(lag) == PARTITIONS and not any(lag.values())):
            return got
        assert time.monotonic() < deadline, f"the export never showed the drained run: {got}"
        time.sleep(1)


def query(conn_dsn: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(conn_dsn) as conn:
        return conn.execute(statement).fetchall()


def test_the_export_agrees_with_postgresql_after_the_run_drains(idle_run: IdleRun) -> None:
    r = idle_run
    rows = query(r.dsn, "SELECT count(*) FROM events")[0][0]
    got = settled(r, rows)
    dead = dict(query(r.dsn, "SELECT reason, count(*) FROM veltrix_dead_letters "
                             "GROUP BY reason"))
    assert set(dead) == {"decode", "transform", "sink"} and dead["transform"] == 1
    assert total(got, "ray_veltrix_dead_letters_total", by="reason") == dead
    assert total(got, "ray_veltrix_records_consumed_total") == rows + sum(dead.values())
    committed = per_partition(got, "ray_veltrix_partition_committed_offset")
    assert committed == offsets(r.dsn, r.topic)
    assert per_partition(got, "ray_veltrix_partition_high_watermark") == committed
    assert per_partition(got, "ray_veltrix_partition_stopped") == dict.fromkeys(
        range(PARTITIONS), 0)
    progress = r.progress()
    batches = sum(w["batches"] for w in progress["workers"])
    assert total(got, "ray_veltrix_commit_seconds_count") == batches > PARTITIONS
    assert total(got, "ray_veltrix_batch_rows_count") == batches
    # (Ray computes a histogram's _sum from bucket midpoints: not comparable exactly)
    assert total(got, "ray_veltrix_workers") == 2
    assert total(got, "ray_veltrix_workers_target") == 2
    for gauge in ("busy_ratio", "rss_bytes", "held_bytes", "budget_bytes"):
        workers = {labels["worker"] for labels, _ in got[f"ray_veltrix_worker_{gauge}"]}
        assert workers == {"0", "1"}, gauge
    assert 0 < total(got, "ray_veltrix_worker_rss_bytes") < total(
        got, "ray_veltrix_worker_budget_bytes")
    # the live line shows the same numbers
    parts = progress["partitions"]
    assert sum(p["rows"] for p in parts.values()) == rows
    assert sum(p["dead_letters"] for p in parts.values()) == sum(dead.values())


def _prometheus_query(url: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}), timeout=10) as reply:
        answer = json.loads(reply.read())
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def dashboard_expressions(pipeline: str) -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"].replace("$pipeline", pipeline)
            for panel in board["panels"] for t in panel["targets"]]


def alert_expressions() -> list[str]:
    """Each rule's expression with its comparisons made `bool`: the signal behind the alert,
    a series whether or not it fires."""
    text = ALERTS.read_text()
    exprs = re.findall(r"expr: (?:>-\n)?((?:.|\n)*?)\n\s+(?:for|labels):", text)
    return [re.sub(r"(==|!=|>=|<=|>|<)\s*(-?[\d.]+(?:e[+-]?\d+)?)\b", r"\1 bool \2",
                   " ".join(e.split())) for e in exprs]


def test_a_real_prometheus_answers_every_dashboard_and_alert_expression(
        idle_run: IdleRun) -> None:
    r = idle_run
    settled(r, query(r.dsn, "SELECT count(*) FROM events")[0][0])
    alerts = alert_expressions()
    assert len(alerts) == 5
    with _service_dir() as home:
        prom = LocalPrometheus(home, _free_port(), [f"127.0.0.1:{r.port}"], [ALERTS], 1.0)
        prom.start()
        try:
            deadline = time.monotonic() + 60
            workers = f'ray_veltrix_workers{{pipeline="{r.pipeline}"}}'
            # rates need two scrapes of a changed export; a few seconds of history
            while (len(_prometheus_query(prom.url, f"count_over_time({workers}[1m])")) == 0
                   or _prometheus_query(prom.url, f"count_over_time({workers}[1m])")[0][
                       "value"][1] in ("1", "2", "3")):
                assert time.monotonic() < deadline, "Prometheus never scraped the run"
                time.sleep(1)
            empty = [e for e in dashboard_expressions(r.pipeline) + alerts
                     if not _prometheus_query(prom.url, e)]
            assert not empty, f"expressions with no series: {empty}"
            # the loaded rules are the shipped ones
            with urllib.request.urlopen(f"{prom.url}/api/v1/rules", timeout=10) as reply:
                groups = json.loads(reply.read())["data"]["groups"]
            assert {rule["name"] for g in groups for rule in g["rules"]} == {
                "VeltrixLagHigh", "VeltrixPartitionStopped", "VeltrixWorkerRestarting",
                "VeltrixDeadLetterRate", "VeltrixNoCommits"}
        finally:
            prom.stop()
    promtool = str(binaries() / "promtool")
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=ALERTS.parent,
                            capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _free_port() -> int:
    from veltrix_ray.local.procs import free_port

    return free_port()


def test_gauges_stay_in_the_export_while_the_pipeline_is_idle(idle_run: IdleRun) -> None:
    r = idle_run
    time.sleep(max(0.0, r.idle_since + IDLE_S - time.monotonic()))
    rows = query(r.dsn, "SELECT count(*) FROM events")[0][0]
    got = scrape(r.port, r.pipeline)
    assert r.run.thread.is_alive(), "the forever run ended"
    assert per_partition(got, "ray_veltrix_partition_lag_records") == dict.fromkeys(
        range(PARTITIONS), 0)
    assert per_partition(got, "ray_veltrix_partition_committed_offset") == offsets(
        r.dsn, r.topic)
    assert total(got, "ray_veltrix_lag_seconds") == 0
    assert total(got, "ray_veltrix_workers") == 2
    assert {labels["worker"] for labels, _ in got["ray_veltrix_worker_busy_ratio"]} == {"0", "1"}
    assert total(got, "ray_veltrix_rows_committed_total") == rows
