"""CSV COPY vs binary COPY (pgpq) of the same Arrow batches of standard events, one connection,
one process, through the sink's own RowWriter (encode + COPY + commit per batch). Rounds
alternate the two paths so that the machine's noise hits both alike; the median round counts.
Prints rows/s of each and the ratio, and writes benchmarks/results/copy_formats.json.

    .venv/bin/python benchmarks/copy_formats.py [--events 200000] [--batch 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql

from veltrix_ray import load_config
from veltrix_ray.batch import Decoder, columns_from_config
from veltrix_ray.config import to_settings
from veltrix_ray.contracts import Fetched, written
from veltrix_ray.local import LocalStack
from veltrix_ray.produce import generate
from veltrix_ray.sink.ddl import pg_type
from veltrix_ray.sink.rows import RowWriter

RESULTS = Path(__file__).parent / "results"


def admin_dsn() -> str:
    if not os.environ.get("VELTRIX_POSTGRES_DSN"):
        stack = LocalStack()
        stack.up()
        os.environ.update(stack.env())
    return os.environ["VELTRIX_POSTGRES_DSN"]


def fresh_database(dsn: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return dsn.rsplit("/", 1)[0] + f"/{name}"


def standard_batches(events: int, batch: int, seed: int) -> list[pa.RecordBatch]:
    """Standard events decoded as a worker decodes them (with the Kafka columns)."""
    settings = to_settings(load_config())
    decoder = Decoder(columns_from_config(settings.pipeline.columns), 1 << 20)
    values = [r.value for r in generate(events, seed=seed)]
    n = len(values)
    decoded = decoder.decode(Fetched([0] * n, list(range(n)), [None] * n, values, [0] * n)).batch
    return pa.Table.from_batches([decoded]).to_batches(max_chunksize=batch)


def copy_round(conn: psycopg.Connection, writer: RowWriter,
               batches: list[pa.RecordBatch]) -> dict[str, float]:
    """Every batch in its own transaction; encode time measured apart from the COPY."""
    encode = copy = 0.0
    for b in batches:
        t0 = time.perf_counter()
        p = writer.prepare(b)
        t1 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            writer.write(cur, p)
        t2 = time.perf_counter()
        encode += t1 - t0
        copy += t2 - t1
    rows = sum(b.num_rows for b in batches)
    return {"rows_per_s": rows / (encode + copy), "encode_s": encode, "copy_s": copy}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    admin = admin_dsn()
    dsn = fresh_database(admin)
    try:
        run(dsn, args)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dsn.rsplit("/", 1)[1])))


def run(dsn: str, args: argparse.Namespace) -> None:
    batches = standard_batches(args.events, args.batch, args.seed)
    cols = written(batches[0].schema)
    rows = sum(b.num_rows for b in batches)
    print(f"{rows:,} standard events in {len(batches)} batches of {args.batch:,}: "
          + ", ".join(f"{f.name} {pg_type(f)}" for f in cols))

    results: dict[str, list[dict[str, float]]] = {"csv": [], "binary": []}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # as the sink's connections
        writers = {}
        for fmt in results:
            conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
                sql.Identifier(f"events_{fmt}"), sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(pg_type(f)))
                    for f in cols)))
            writers[fmt] = RowWriter("public", f"events_{fmt}", "append", [])
        with conn.cursor() as cur:
            writers["binary"].inspect(cur, batches[0].schema)  # CSV: not inspected
        conn.commit()
        assert writers["binary"].prepare(batches[0]).binary is not None
        assert writers["csv"].prepare(batches[0]).binary is None
        copy_round(conn, writers["binary"], batches[:1])  # warm up both
        copy_round(conn, writers["csv"], batches[:1])
        for r in range(args.rounds):
            for fmt in (("csv", "binary") if r % 2 == 0 else ("binary", "csv")):
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(f"events_{fmt}")))
                conn.commit()
                results[fmt].append(copy_round(conn, writers[fmt], batches))
                print(f"round {r + 1} {fmt:6} {results[fmt][-1]['rows_per_s']:>12,.0f} rows/s")
        same = conn.execute("SELECT (SELECT count(*) FROM (TABLE events_csv EXCEPT ALL "
                            "TABLE events_binary) a) + (SELECT count(*) FROM (TABLE "
                            "events_binary EXCEPT ALL TABLE events_csv) b)").fetchone()
        assert same == (0,), "binary and CSV wrote different rows"

    out: dict[str, float] = {"rows": rows, "batch": args.batch, "rounds": args.rounds}
    for fmt, runs in results.items():
        out[f"{fmt}_rows_per_s"] = statistics.median(r["rows_per_s"] for r in runs)
        out[f"{fmt}_encode_s"] = statistics.median(r["encode_s"] for r in runs)
        out[f"{fmt}_copy_s"] = statistics.median(r["copy_s"] for r in runs)
    out["binary_vs_csv"] = out["binary_rows_per_s"] / out["csv_rows_per_s"]
    print(f"CSV COPY    (pyarrow.csv -> FORMAT csv): {out['csv_rows_per_s']:>12,.0f} rows/s "
          f"(encode {out['csv_encode_s']:.2f} s, COPY {out['csv_copy_s']:.2f} s)")
    print(f"binary COPY (pgpq -> FORMAT binary):     {out['binary_rows_per_s']:>12,.0f} rows/s "
          f"(encode {out['binary_encode_s']:.2f} s, COPY {out['binary_copy_s']:.2f} s)")
    print(f"binary / CSV: {out['binary_vs_csv']:.2f}x (median of {args.rounds} rounds)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "copy_formats.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
