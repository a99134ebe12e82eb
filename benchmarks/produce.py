"""Producer throughput: veltrix-ray's batch writer against aiokafka's send() per message.

Writes standard events (bad_fraction 0) to fresh 8-partition topics on the Kafka at
$VELTRIX_KAFKA_BOOTSTRAP, prints events/s and MB/s (keys + values) for both, and saves
the figures to benchmarks/results/produce.json.

    VELTRIX_KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python benchmarks/produce.py

The baseline gets its records generated before the clock starts, while the batch run
generates its own as it goes, so the ratio understates the difference. The broker runs on
the same 2 cores, so each side runs ``--repeat`` times and the median counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from veltrix_ray.produce import ENV_BOOTSTRAP, generate, produce
from veltrix_ray.source.admin import ensure_topic

RESULTS = Path(__file__).resolve().parent / "results" / "produce.json"
PARTITIONS = 8


def _cpu_idle(seconds: float = 1.0) -> float | None:
    """Share of the machine's CPU time that was idle (Linux only): other load on these
    2 cores skews the figures, so the results record it."""
    if not Path("/proc/stat").exists():
        return None

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


async def _delete(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def _batch_run(bootstrap: str, topic: str, events: int, payload_bytes: int) -> dict:
    report = await produce(bootstrap, topic, events=events, partitions=PARTITIONS)
    return {
        "events": report.events,
        "elapsed_s": round(report.elapsed_s, 3),
        "events_per_s": round(report.events_per_s),
        "mb_per_s": round(payload_bytes / 1e6 / report.elapsed_s, 2),
    }


async def _send_run(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> dict:
    """aiokafka's ordinary path: one send() per message, then wait for every delivery."""
    await ensure_topic(bootstrap, topic, PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
        compression_type=None,
    )
    await producer.start()
    try:
        started = time.monotonic()
        deliveries = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*deliveries)
        elapsed = time.monotonic() - started
    finally:
        await producer.stop()
    payload = sum(len(k) + len(v) for k, v in records)
    return {
        "events": len(records),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(len(records) / elapsed),
        "mb_per_s": round(payload / 1e6 / elapsed, 2),
    }


def _median(runs: list[dict]) -> dict:
    return {
        key: statistics.median(run[key] for run in runs)
        for key in ("events_per_s", "mb_per_s", "elapsed_s")
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = os.environ.get(ENV_BOOTSTRAP)
    if not bootstrap:
        sys.exit(
            f"{ENV_BOOTSTRAP} is not set: run `veltrix-ray local up` and "
            '`eval "$(veltrix-ray local env)"` first'
        )
    batch_payload = sum(len(r.key) + len(r.value) for r in generate(args.events))
    baseline_records = [(r.key, r.value) for r in generate(args.baseline_events)]
    idle = _cpu_idle()
    topics: list[str] = []
    batch_runs, send_runs = [], []
    try:
        for attempt in range(args.repeat):
            topics.append(f"bench-produce-{uuid.uuid4().hex[:10]}")
            batch_runs.append(await _batch_run(bootstrap, topics[-1], args.events, batch_payload))
            topics.append(f"bench-send-{uuid.uuid4().hex[:10]}")
            send_runs.append(await _send_run(bootstrap, topics[-1], baseline_records))
            print(
                f"run {attempt + 1}: batch {batch_runs[-1]['events_per_s']:,} events/s, "
                f"send() {send_runs[-1]['events_per_s']:,} events/s",
                file=sys.stderr,
            )
    finally:
        await _delete(bootstrap, topics)
    batch, send = _median(batch_runs), _median(send_runs)
    return {
        "what": "standard events (bad_fraction 0) to a fresh 8-partition topic, acks=all, "
        "idempotent, no compression; figures are medians of the runs",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "cpu_idle_before": None if idle is None else round(idle, 2),
        },
        "batch": {"events_per_run": args.events, **batch, "runs": batch_runs},
        "send_per_message": {
            "events_per_run": args.baseline_events,
            **send,
            "runs": send_runs,
        },
        "ratio_events_per_s": round(batch["events_per_s"] / send["events_per_s"], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--baseline-events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    results = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for label, figures in (
        ("batch writer", results["batch"]),
        ("send() per message", results["send_per_message"]),
    ):
        print(
            f"{label:<19} {figures['events_per_s']:>9,.0f} events/s {figures['mb_per_s']:6.1f} MB/s"
        )
    print(f"ratio: {results['ratio_events_per_s']}x (written to {RESULTS})")
