"""Autoscaling benchmark on the local stack: the time to drain one fixed backlog at a fixed
number of workers (N = 1, 2, 4) and with the autoscaler (min 1, max 4), then the same with a
trigger that serialises every commit on the target table (BEFORE INSERT FOR EACH STATEMENT:
pg_advisory_xact_lock(42) + pg_sleep(0.05)): there more workers cannot drain faster, the
throughput stays flat and the autoscaler's sink gate should hold it (its decisions are
printed). Prints a table (drain time, events/s once flowing, commit p50/p95 per run) and writes
benchmarks/results/autoscale.json.

    .venv/bin/python benchmarks/autoscale.py [--events 1000000] [--partitions 8]

Each run is a child process with a private Ray, `until=drained`, into a fresh database (the
offsets live beside the rows, so every run reads the topic from the start)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import ray
from psycopg import sql

from veltrix_ray import Pipeline, RunSummary, load_config
from veltrix_ray.config import to_settings
from veltrix_ray.local import LocalStack
from veltrix_ray.produce import produce
from veltrix_ray.runtime.coordinator import NAMESPACE, coordinator_name

RESULTS = Path(__file__).parent / "results"
HERE = Path(__file__).resolve()
CLEAN = ("VELTRIX_RAY_ADDRESS", "VELTRIX_STATE_DIR", "VELTRIX_METRICS_PORT", "RAY_ADDRESS")

TABLE = """CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL,
    user_id bigint NOT NULL, kind text NOT NULL, amount double precision NOT NULL,
    country text NOT NULL, payload jsonb)"""
# one lock per transaction that writes rows, held with a 50 ms sleep: commits are serial
SERIALISE = """CREATE FUNCTION one_at_a_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(42); PERFORM pg_sleep(0.05); RETURN NULL; END $$;
CREATE TRIGGER one_at_a_time BEFORE INSERT ON events FOR EACH STATEMENT
    EXECUTE FUNCTION one_at_a_time()"""

AUTOSCALE = ["topology.autoscale.enabled=true", "topology.autoscale.min_workers=1",
             "topology.autoscale.max_workers=4", "topology.autoscale.interval_s=2",
             "topology.autoscale.stabilise_s=4", "topology.autoscale.catch_up_s=5",
             "topology.autoscale.scale_down_window_s=600"]


def services() -> tuple[str, str]:
    if os.environ.get("VELTRIX_KAFKA_BOOTSTRAP") and os.environ.get("VELTRIX_POSTGRES_DSN"):
        return os.environ["VELTRIX_KAFKA_BOOTSTRAP"], os.environ["VELTRIX_POSTGRES_DSN"]
    stack = LocalStack()
    stack.up()
    os.environ.update(stack.env())
    return os.environ["VELTRIX_KAFKA_BOOTSTRAP"], os.environ["VELTRIX_POSTGRES_DSN"]


def fresh_database(dsn: str, serialise: bool) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db = dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(TABLE)
        if serialise:
            conn.execute(SERIALISE)
    return db


def drop_database(admin_dsn: str, dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


# -- one run, in a child process -------------------------------------------------------------

def child(args: dict[str, Any]) -> None:
    settings = to_settings(load_config(args["overrides"]))
    autoscale: dict[str, Any] = {}
    most = [settings.topology.workers]
    last_poll = [0.0]

    def progress(s: RunSummary) -> None:
        most[0] = max(most[0], sum(1 for w in s.workers if w.get("slot") is not None))
        if not settings.topology.autoscale.enabled or time.monotonic() - last_poll[0] < 1:
            return
        last_poll[0] = time.monotonic()
        try:
            coordinator = ray.get_actor(coordinator_name(settings.pipeline.name),
                                        namespace=NAMESPACE)
            report = ray.get(coordinator.progress.remote(), timeout=5)
            autoscale.update(report.get("autoscale") or {})
        except Exception:  # noqa: BLE001 - starting or finishing: the next poll
            return

    summary = Pipeline(settings).run(on_progress=progress)
    changes = autoscale.get("changes", [])
    print("RESULT " + json.dumps({
        "rows": summary.rows, "elapsed_s": summary.elapsed_s,
        "processing_s": summary.processing_s,
        "events_per_s": summary.processing_events_per_s,
        "commit_p50_ms": summary.commit_latency_ms(0.5),
        "commit_p95_ms": summary.commit_latency_ms(0.95),
        "commits": len(summary.latencies),
        "max_workers": max([most[0], *(c.get("target", 0) for c in changes)]),
        "changes": changes, "ok": summary.ok}, default=str), flush=True)


def run(name: str, topic: str, admin_dsn: str, serialise: bool, extra: list[str],
        batch: int, timeout: float) -> dict[str, Any]:
    dsn = fresh_database(admin_dsn, serialise)
    spec = {"overrides": [f"kafka.topic={topic}", f"postgres.dsn={dsn}", "until=drained",
                          "progress_interval_s=0.5", f"batch.max_records={batch}", *extra]}
    env = {k: v for k, v in os.environ.items() if k not in CLEAN} | {"RAY_DEDUP_LOGS": "0"}
    started = time.perf_counter()
    try:
        proc = subprocess.Popen([sys.executable, str(HERE), "child", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # its private Ray goes with its process group
            os.killpg(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            return {"error": f"not finished within {timeout:g}s", "wall_s": timeout}
        result = next((json.loads(line[7:]) for line in out.splitlines()
                       if line.startswith("RESULT ")), None)
        if result is None or proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {err[-1500:]}",
                    "wall_s": time.perf_counter() - started}
        result["wall_s"] = time.perf_counter() - started
        return result
    finally:
        drop_database(admin_dsn, dsn)


def decisions(changes: list[dict[str, Any]]) -> list[str]:
    return [f"{c.get('decision')} {c.get('workers')}->{c.get('target')}: {c.get('reason')}"
            for c in changes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2000,
                        help="batch.max_records: the serialising trigger costs 50 ms per batch")
    parser.add_argument("--only", choices=("plain", "serialised"), default=None)
    parser.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    args = parser.parse_args()
    bootstrap, admin_dsn = services()
    topic = f"autoscale-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    asyncio.run(produce(bootstrap, topic, events=args.events, partitions=args.partitions,
                        seed=1))
    print(f"backlog: {args.events:,} events on {args.partitions} partitions of {topic} "
          f"({time.perf_counter() - t0:.0f}s to produce); batch.max_records={args.batch}",
          flush=True)
    modes = [("N=1", ["topology.workers=1"]), ("N=2", ["topology.workers=2"]),
             ("N=4", ["topology.workers=4"]), ("auto 1..4", ["topology.workers=1", *AUTOSCALE])]
    sinks = [s for s in ("plain", "serialised") if args.only in (None, s)]
    results: list[dict[str, Any]] = []
    for sink in sinks:
        for label, extra in modes:
            r = run(f"{sink} {label}", topic, admin_dsn, sink == "serialised", extra,
                    args.batch, args.timeout)
            r.update(sink=sink, mode=label)
            results.append(r)
            if "error" in r:
                print(f"{sink:<10} {label:<10} FAILED: {r['error']}", flush=True)
                continue
            if r["rows"] != args.events:
                r["error"] = f"{r['rows']:,} rows, not {args.events:,}"
            print(f"{sink:<10} {label:<10} drained in {r['processing_s']:6.1f}s "
                  f"({r['events_per_s']:,.0f} events/s), run {r['elapsed_s']:.1f}s", flush=True)
            for line in decisions(r["changes"]):
                print(f"    {line}", flush=True)
    print()
    print(f"{'sink':<10} {'workers':<10} {'drain s':>8} {'run s':>7} {'events/s':>10} "
          f"{'max N':>5} {'commits':>8} {'p50 ms':>7} {'p95 ms':>7}")
    for r in results:
        if "error" in r and "processing_s" not in r:
            print(f"{r['sink']:<10} {r['mode']:<10} FAILED: {r['error'].splitlines()[0]}")
            continue
        print(f"{r['sink']:<10} {r['mode']:<10} {r['processing_s']:>8.1f} {r['elapsed_s']:>7.1f} "
              f"{r['events_per_s']:>10,.0f} {r['max_workers']:>5} {r['commits']:>8,} "
              f"{r['commit_p50_ms']:>7.0f} {r['commit_p95_ms']:>7.0f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "autoscale.json").write_text(json.dumps(
        {"events": args.events, "partitions": args.partitions, "batch": args.batch,
         "runs": results}, indent=2, default=str))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]))
    else:
        main()
