"""Kafka record path: aiokafka's getmany vs the lean path (veltrix_ray.source.records), both
through KafkaSource.fetch, in one process, on the same topic of standard events.

    .venv/bin/python benchmarks/record_path.py [--events 1000000] [--partitions 8] [--rounds 2]

The topic is produced once (kept under a name derived from the sizes) and read whole by each
path in turn; prints records/s of each and the ratio, and writes
benchmarks/results/record_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from veltrix_ray.config.schema import KafkaConfig
from veltrix_ray.produce import produce
from veltrix_ray.source.admin import partition_count
from veltrix_ray.source.kafka import KafkaSource

BATCH_BYTES = 16 * 2**20
MAX_RECORDS = 50_000
RESULTS = Path(__file__).parent / "results"


async def ensure_events(bootstrap: str, topic: str, events: int, partitions: int) -> None:
    if await partition_count(bootstrap, topic) is None:
        report = await produce(bootstrap, topic, events=events, partitions=partitions, seed=11)
        print(f"produced {report.events} events in {report.elapsed_s:.1f}s")


async def read_all(cfg: KafkaConfig, partitions: int, lean: bool) -> tuple[int, int, float]:
    """(records, value bytes, seconds) of reading the whole topic from the start."""
    source = await KafkaSource.open(cfg, BATCH_BYTES, f"bench-{'lean' if lean else 'getmany'}",
                                    lean=lean)
    try:
        parts = list(range(partitions))
        await source.bind(dict.fromkeys(parts, 0))
        ends = await source.end_offsets(parts)
        total = sum(ends.values())
        records = nbytes = 0
        started = time.perf_counter()
        while records < total:
            fetched = await source.fetch(parts, MAX_RECORDS)
            records += len(fetched)
            nbytes += fetched.nbytes
        return records, nbytes, time.perf_counter() - started
    finally:
        await source.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--topic", default=None)
    args = ap.parse_args()
    bootstrap = os.environ.get("VELTRIX_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    topic = args.topic or f"bench-record-path-{args.events}-{args.partitions}"
    await ensure_events(bootstrap, topic, args.events, args.partitions)
    cfg = KafkaConfig(bootstrap=bootstrap, topic=topic, sasl_username=None, sasl_password=None)
    rates: dict[str, list[float]] = {"getmany": [], "lean": []}
    seen: dict[str, tuple[int, int]] = {}
    for r in range(args.rounds):
        for name in ("getmany", "lean"):
            records, nbytes, secs = await read_all(cfg, args.partitions, name == "lean")
            seen.setdefault(name, (records, nbytes))
            rates[name].append(records / secs)
            print(f"round {r + 1} {name:8s} {records} records {secs:6.2f}s "
                  f"{records / secs:12,.0f} records/s")
    assert seen["getmany"] == seen["lean"], f"the paths read different data: {seen}"
    old, new = (statistics.median(rates[k]) for k in ("getmany", "lean"))
    print(f"getmany {old:,.0f} records/s, lean {new:,.0f} records/s: {new / old:.2f}x "
          f"(median of {args.rounds} rounds, {seen['lean'][0]} records of {topic})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "record_path.json").write_text(json.dumps({
        "records": seen["lean"][0], "partitions": args.partitions, "max_records": MAX_RECORDS,
        "getmany_records_per_s": rates["getmany"], "lean_records_per_s": rates["lean"],
        "ratio": new / old}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
