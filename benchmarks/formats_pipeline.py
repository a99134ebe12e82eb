"""End to end with each value format, one run on the local stack: the same standard events
(same seed) as JSON, Avro and Protobuf through the shipped pipelines (events, events_avro,
events_protobuf), 8 partitions, 2 workers, exactly once. Events/s measured from outside as in
benchmarks/pipeline.py (committed offsets between 10 % and 90 %), so the ratios to JSON hold on
a noisy machine. Writes benchmarks/results/formats_pipeline.json.

    .venv/bin/python benchmarks/formats_pipeline.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from pipeline import RESULTS, child_env, services, steady_run  # noqa: E402

from veltrix_ray.produce import produce  # noqa: E402
from veltrix_ray.source.admin import ensure_topic  # noqa: E402

PIPELINES = {"json": "events", "avro": "events_avro", "protobuf": "events_protobuf"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--formats", default="json,avro,protobuf")
    args = parser.parse_args()
    bootstrap, dsn = services()
    registry = os.environ.get("VELTRIX_SCHEMA_REGISTRY_URL")
    if not registry:
        sys.exit("needs the schema registry: `veltrix-ray local up` and `eval $(veltrix-ray "
                 "local env)`")
    RESULTS.mkdir(exist_ok=True)
    out: dict[str, Any] = {"events": args.events, "partitions": 8, "workers": 2}
    for fmt in args.formats.split(","):
        topic = f"bench-{fmt}-{uuid.uuid4().hex[:6]}"
        asyncio.run(ensure_topic(bootstrap, topic, 8))
        asyncio.run(produce(bootstrap, topic, events=args.events, partitions=8, seed=3,
                            format=fmt, registry_url=registry))
        result = steady_run(fmt, topic, args.events, dsn, [f"pipeline={PIPELINES[fmt]}"],
                            child_env(VELTRIX_SCHEMA_REGISTRY_URL=registry))
        assert result["rows"] == args.events, result
        out[fmt] = {"events_per_s": round(result["events_per_s"]),
                    "events_per_s_once_flowing": round(result["events_per_s_once_flowing"]),
                    "peak_rss_mib": [round(m) for m in result["peak_rss_mib"]]}
        print(f"{fmt:>9}: {result['events_per_s']:>10,.0f} events/s (10-90 %), "
              f"{result['events_per_s_once_flowing']:>10,.0f} once flowing, peak RSS "
              f"{max(result['peak_rss_mib']):.0f} MiB", flush=True)
    base = out.get("json", {}).get("events_per_s")
    for fmt in PIPELINES:
        if base and fmt in out and fmt != "json":
            print(f"{fmt} / json: {out[fmt]['events_per_s'] / base:.2f}x")
    (RESULTS / "formats_pipeline.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
