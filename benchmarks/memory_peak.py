"""Peak RSS against topology.memory_mb on large compressible records (issue 23's scenario):
standard events with a ~400 KiB payload, sent in 1 MiB batches with each codec, run by the
`events` pipeline at each budget with pipeline.max_record_bytes=524288. Prints each worker's
peak RSS and batches, the numbers docs/memory.md quotes.

    .venv/bin/python benchmarks/memory_peak.py [--events 6000] [--budgets 512 640]
        [--codecs zstd gzip]
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from pipeline import fresh_database, services

from veltrix_ray import Pipeline, load_config
from veltrix_ray.produce import produce

PAYLOAD_BYTES = 400 * 1024
BATCH_BYTES = 2**20
MAX_RECORD_BYTES = 524_288


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--budgets", type=int, nargs="+", default=[512, 640])
    parser.add_argument("--codecs", nargs="+", default=["zstd", "gzip"])
    args = parser.parse_args()
    bootstrap, admin_dsn = services()
    for codec in args.codecs:
        topic = f"bench-memory-{codec}-{uuid.uuid4().hex[:8]}"
        asyncio.run(produce(bootstrap, topic, events=args.events, partitions=args.partitions,
                            payload_bytes=PAYLOAD_BYTES, compression=codec,
                            batch_bytes=BATCH_BYTES))
        for budget in args.budgets:
            dsn = fresh_database(admin_dsn)
            summary = Pipeline(load_config([
                "pipeline=events", f"kafka.topic={topic}", f"postgres.dsn={dsn}",
                "until=drained", f"topology.memory_mb={budget}",
                f"pipeline.max_record_bytes={MAX_RECORD_BYTES}"])).run()
            peaks = " / ".join(f"{w['peak_rss'] / 2**20:.0f}" for w in summary.workers)
            batches = " / ".join(str(w["batches"]) for w in summary.workers)
            print(f"{codec:5} budget {budget} MiB: rows {summary.rows:,} of {args.events:,}, "
                  f"peak RSS {peaks} MiB, batches {batches}, {summary.elapsed_s:.1f}s, "
                  f"ok={summary.ok}", flush=True)


if __name__ == "__main__":
    main()
