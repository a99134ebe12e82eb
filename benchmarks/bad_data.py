"""Poison rows at the sink cost little: the same topic, the `events` pipeline, into a table
that takes every row (clean) and into one whose CHECK refuses ~0.1 % of them (each refused
row is found and dead-lettered, the rest of its batch commits). One process, alternating
runs, so the ratio holds on a noisy machine.

    .venv/bin/python benchmarks/bad_data.py [--events 1000000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import psycopg
from pipeline import RESULTS, fresh_database, services

from veltrix_ray import Pipeline, load_config
from veltrix_ray.produce import produce

TABLE = ("CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL, user_id bigint "
         "NOT NULL, kind text NOT NULL, amount double precision NOT NULL, country text NOT "
         "NULL, payload jsonb{check})")
POISON = ", CHECK (user_id % 1000 <> 7)"  # about 1 row in 1,000


def run(topic: str, admin_dsn: str, check: str) -> dict[str, float]:
    dsn = fresh_database(admin_dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(TABLE.format(check=check))
    summary = Pipeline(load_config([f"kafka.topic={topic}", f"postgres.dsn={dsn}",
                                    "until=drained"])).run()
    return {"rows": summary.rows, "dead_letters": summary.dead_letters,
            "events_per_s": summary.events_per_s,
            "events_per_s_once_flowing": summary.processing_events_per_s,
            "commit_p50_ms": summary.commit_latency_ms(0.5),
            "commit_p99_ms": summary.commit_latency_ms(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    bootstrap, admin_dsn = services()
    topic = f"bench-bad-{uuid.uuid4().hex[:8]}"
    print(asyncio.run(produce(bootstrap, topic, events=args.events, partitions=8,
                              seed=1)).summary())
    results: dict[str, list[dict[str, float]]] = {"clean": [], "poison_0.1%": []}
    for _ in range(args.rounds):
        for name, check in (("clean", ""), ("poison_0.1%", POISON)):
            results[name].append(run(topic, admin_dsn, check))
            r = results[name][-1]
            print(f"{name:12} {r['rows']:>9,} rows {r['dead_letters']:>6,} dead letters "
                  f"{r['events_per_s']:>9,.0f} events/s ({r['events_per_s_once_flowing']:,.0f}"
                  f"/s once flowing), commit p50 {r['commit_p50_ms']:.0f} ms "
                  f"p99 {r['commit_p99_ms']:.0f} ms")
    best = {k: max(r["events_per_s_once_flowing"] for r in v) for k, v in results.items()}
    print(f"poison / clean (once flowing, best of {args.rounds}): "
          f"{best['poison_0.1%'] / best['clean']:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bad_data.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
