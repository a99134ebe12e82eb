"""End-to-end benchmark, one run on the local stack: veltrix-ray vs a naive consumer vs the
raw COPY ceiling. Prints the figures and writes benchmarks/results/pipeline.json.

    .venv/bin/python benchmarks/pipeline.py [--events 1000000] [--naive-events 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
import uuid
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from aiokafka import AIOKafkaConsumer
from psycopg import sql

from veltrix_ray import Pipeline, load_config
from veltrix_ray.batch import Decoder, columns_from_config
from veltrix_ray.config import to_settings
from veltrix_ray.contracts import Fetched
from veltrix_ray.local import LocalStack
from veltrix_ray.produce import generate, produce
from veltrix_ray.sink.ddl import pg_type

RESULTS = Path(__file__).parent / "results"


def services() -> tuple[str, str]:
    if os.environ.get("VELTRIX_KAFKA_BOOTSTRAP") and os.environ.get("VELTRIX_POSTGRES_DSN"):
        return os.environ["VELTRIX_KAFKA_BOOTSTRAP"], os.environ["VELTRIX_POSTGRES_DSN"]
    stack = LocalStack()
    stack.up()
    os.environ.update(stack.env())
    return os.environ["VELTRIX_KAFKA_BOOTSTRAP"], os.environ["VELTRIX_POSTGRES_DSN"]


def fresh_database(dsn: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return dsn.rsplit("/", 1)[0] + f"/{name}"


def ceiling(dsn: str, events: int, seed: int) -> dict[str, float]:
    """The same rows, already decoded into Arrow, COPYed by the fastest path we have."""
    settings = to_settings(load_config())
    decoder = Decoder(columns_from_config(settings.pipeline.columns), 1 << 20)
    values = [r.value for r in generate(events, seed=seed)]
    n = len(values)
    batch = decoder.decode(Fetched([0] * n, list(range(n)), [None] * n, values, [0] * n)).batch
    table = pa.Table.from_batches([batch.select(decoder.schema.names)])
    chunks = table.to_batches(max_chunksize=50_000)
    cols = sql.SQL(", ").join(sql.Identifier(f.name) for f in decoder.schema)
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE TABLE ceiling ({})").format(sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(pg_type(f)))
            for f in decoder.schema)))
        conn.commit()
        start = time.perf_counter()
        for chunk in chunks:
            buf = io.BytesIO()
            pacsv.write_csv(chunk, buf, pacsv.WriteOptions(include_header=False))
            with conn.cursor().copy(sql.SQL("COPY ceiling ({}) FROM STDIN (FORMAT csv)")
                                    .format(cols)) as cp:
                cp.write(buf.getvalue())
            conn.commit()
        elapsed = time.perf_counter() - start
    return {"rows": n, "seconds": elapsed, "rows_per_s": n / elapsed}


async def naive(bootstrap: str, topic: str, dsn: str, limit: int) -> dict[str, float]:
    """What a first attempt looks like: json.loads and one INSERT per event, Kafka offsets."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"naive-{topic}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    done = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE naive (event_id text, ts timestamptz, user_id bigint, "
                     "kind text, amount double precision, country text, payload jsonb)")
        start = None
        try:
            while done < limit:
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                if batch and start is None:  # the clock starts once the group has joined
                    start = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        e = json.loads(r.value)
                        conn.execute("INSERT INTO naive VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                     (e["event_id"], e["ts"], e["user_id"], e["kind"],
                                      e["amount"], e["country"], json.dumps(e["payload"])))
                        done += 1
                await consumer.commit()
        finally:
            await consumer.stop()
        elapsed = time.perf_counter() - (start or time.perf_counter())
    return {"events": done, "seconds": elapsed, "events_per_s": done / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--naive-events", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    bootstrap, admin_dsn = services()
    dsn = fresh_database(admin_dsn)
    topic = f"bench-{uuid.uuid4().hex[:8]}"

    report = asyncio.run(produce(bootstrap, topic, events=args.events, partitions=8,
                                 seed=args.seed, progress=True))
    print(report.summary())
    mbytes = sum(len(r.value) for r in generate(args.events, seed=args.seed)) / 1e6

    ceil = ceiling(dsn, args.events, args.seed)
    print(f"raw ceiling (Arrow -> CSV COPY, 1 connection): {ceil['rows_per_s']:,.0f} rows/s")
    base = asyncio.run(naive(bootstrap, topic, dsn, args.naive_events))
    print(f"naive consumer (json.loads + INSERT per event): {base['events_per_s']:,.0f} events/s")

    summary = Pipeline(load_config([f"kafka.topic={topic}", f"postgres.dsn={dsn}",
                                    "until=drained"])).run()
    print(summary.table())
    out = {
        "events": args.events, "partitions": 8, "workers": len(summary.workers),
        "veltrix_events_per_s": summary.events_per_s,
        "veltrix_events_per_s_once_flowing": summary.processing_events_per_s,
        "veltrix_mb_per_s": mbytes / summary.elapsed_s,
        "veltrix_elapsed_s": summary.elapsed_s,
        "commit_latency_p50_ms": summary.commit_latency_ms(0.5),
        "commit_latency_p99_ms": summary.commit_latency_ms(0.99),
        "peak_rss_mib_per_worker": [w["peak_rss"] / 2**20 for w in summary.workers],
        "producer_events_per_s": report.events_per_s,
        "naive_events_per_s": base["events_per_s"],
        "ceiling_rows_per_s": ceil["rows_per_s"],
        "ratio_vs_naive": summary.events_per_s / base["events_per_s"],
        "ratio_vs_ceiling": summary.events_per_s / ceil["rows_per_s"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(out, indent=2))
    for key, value in out.items():
        print(f"{key:28} {value if not isinstance(value, float) else f'{value:,.2f}'}")


if __name__ == "__main__":
    main()
