"""Soak: a `forever` pipeline under a steady stream and scheduled faults, on a private broker
and PostgreSQL (so they can be restarted). Prints events in vs rows out, duplicates (must be
0), the largest lag, and how long the committed rate took to recover after each fault.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--rate 3000] [--kill-every 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import ray

from veltrix_ray import Pipeline, load_config
from veltrix_ray.local.kafka import KafkaBroker
from veltrix_ray.local.postgres import LocalPostgres
from veltrix_ray.local.procs import free_port
from veltrix_ray.produce import bad_counts, produce
from veltrix_ray.runtime.coordinator import NAMESPACE, coordinator_name
from veltrix_ray.source.admin import ensure_topic

TOPIC = "soak"
PARTITIONS = 8
# the producer's sends wait out the broker's restart (its outage plus its start on a loaded
# machine); with aiokafka's 30 s default the load generator died there, not the pipeline
SEND_TIMEOUT_S = 300.0


@dataclass
class Fault:
    name: str
    at: float  # seconds into the run
    until: float = 0.0
    recovered_after: float | None = None


@dataclass
class Watch:
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, committed, lag)

    def committed_after(self, t: float) -> int:
        return next((c for s, c, _ in self.samples if s >= t), -1)


def committed(dsn: str) -> tuple[int, int]:
    """(rows + dead letters committed, sum of next offsets) from veltrix_offsets."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute("SELECT coalesce(sum(rows_total + dead_letters_total), 0), "
                               "coalesce(sum(next_offset), 0) FROM veltrix_offsets").fetchone()
            return (int(row[0]), int(row[1])) if row else (0, 0)
    except psycopg.Error:
        return -1, -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=3000.0, help="events/s produced")
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--outage-s", type=float, default=15.0)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="veltrix-soak-"))
    broker = KafkaBroker(state / "kafka", free_port(), free_port())
    pg = LocalPostgres(state / "pg", free_port())
    broker.start()
    pg.start()
    try:
        run(args, broker, pg)
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(state, ignore_errors=True)


def run(args: argparse.Namespace, broker: KafkaBroker, pg: LocalPostgres) -> None:
    asyncio.run(ensure_topic(broker.bootstrap, TOPIC, PARTITIONS))
    ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    pipeline = Pipeline(load_config([f"kafka.topic={TOPIC}", f"kafka.bootstrap={broker.bootstrap}",
                                     f"postgres.dsn={pg.dsn}", "topology.workers=2",
                                     "batch.max_records=5000"]))
    runner = threading.Thread(target=pipeline.run, kwargs={"raise_on_error": False}, daemon=True)
    runner.start()
    total = max(1, round(args.rate * args.duration))
    producer = threading.Thread(target=lambda: asyncio.run(produce(
        broker.bootstrap, TOPIC, rate=args.rate, duration=args.duration, seed=3,
        bad_fraction=0.001, request_timeout_s=SEND_TIMEOUT_S)), daemon=True)
    start = time.monotonic()
    producer.start()
    faults = [Fault(f"kill -9 worker #{i + 1}", t)
              for i, t in enumerate(range(int(args.kill_every), int(args.duration),
                                          int(args.kill_every)))]
    faults += [Fault("Kafka broker restart", args.duration / 3,
                     args.duration / 3 + args.outage_s),
               Fault("PostgreSQL restart", 2 * args.duration / 3,
                     2 * args.duration / 3 + args.outage_s)]
    actions: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "Kafka broker restart": (broker.stop, broker.start),
        "PostgreSQL restart": (pg.stop, pg.start)}
    watch = Watch()
    pending = sorted(faults, key=lambda f: f.at)
    while producer.is_alive() or committed(pg.dsn)[0] < total:
        t = time.monotonic() - start
        done, offsets_sum = committed(pg.dsn)
        if done >= 0:
            watch.samples.append((t, done, max(0, int(min(t, args.duration) * args.rate)
                                               - offsets_sum)))
        while pending and pending[0].at <= t:
            fault = pending.pop(0)
            if fault.name in actions:
                stop, begin = actions[fault.name]
                stop()
                time.sleep(max(0.0, fault.until - fault.at))
                begin()
            else:
                pids = list(ray.get(ray.get_actor(coordinator_name("events"), namespace=NAMESPACE)
                                    .worker_pids.remote()).values())
                if pids:
                    # a worker that just died is listed until supervision sees it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(random.choice(pids), signal.SIGKILL)
            fault.until = fault.until or fault.at
            print(f"{t:7.1f}s  {fault.name}", flush=True)
        if t > args.duration + 600:
            print("gave up waiting for the backlog")
            break
        time.sleep(1.0)
    for fault in faults:  # recovery: the first sample after the fault that committed more
        base = watch.committed_after(fault.until)
        later = next((s for s, c, _ in watch.samples if s > fault.until and c > base), None)
        fault.recovered_after = None if later is None else later - fault.until
    alive = runner.is_alive()
    restarts = 0
    if alive:
        report = ray.get(ray.get_actor(coordinator_name("events"), namespace=NAMESPACE)
                         .progress.remote())
        restarts = sum(w["restarts"] for w in report["workers"])
    print(f"run still running after the faults: {'yes' if alive else 'NO'} "
          f"({restarts} worker restarts)")
    pipeline.stop()
    runner.join(timeout=120)
    with psycopg.connect(pg.dsn) as conn:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM events"
                                      ).fetchone() or (0, 0)
        dead = conn.execute("SELECT count(*) FROM veltrix_dead_letters").fetchone()
    bad = sum(bad_counts(total, 0.001).values())
    print(f"events in {total:,} ({bad:,} bad), rows out {rows:,}, dead letters "
          f"{dead[0] if dead else 0:,}, duplicates {rows - distinct:,}, missing "
          f"{total - bad - distinct:,}")
    print(f"max lag {max((lag for _, _, lag in watch.samples), default=0):,} records")
    for fault in faults:
        recovered = ("not seen" if fault.recovered_after is None
                     else f"{fault.recovered_after:.1f}s")
        print(f"  {fault.name:28} at {fault.at:6.1f}s  commits resumed after {recovered}")
    ray.shutdown()


if __name__ == "__main__":
    main()
