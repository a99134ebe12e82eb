"""End-to-end benchmark, one run on the local stack: veltrix-ray vs a naive consumer vs the
raw COPY ceiling, and each step of issue 11 against the path it replaced, measured in the same
run (so the gain is a ratio on the same machine): binary vs CSV COPY, the lean record path vs
getmany, upsert, launch to first committed row (the local stack's Ray head vs a cold private
Ray), end-to-end latency at a fixed rate, peak RSS per worker, and a py-spy profile of a
worker. Prints the figures and writes benchmarks/results/pipeline.json.

    .venv/bin/python benchmarks/pipeline.py [--events 1000000] [--naive-events 30000]
    .venv/bin/python benchmarks/pipeline.py --only latency   # that part alone, by stage

Throughput is measured from outside: the events committed (veltrix_offsets, written in the
same transaction as the rows) polled in PostgreSQL, between 10 % and 90 % of the topic.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from psycopg import sql

from veltrix_ray import Pipeline, RunSummary, load_config
from veltrix_ray.batch import Decoder, columns_from_config
from veltrix_ray.config import to_settings
from veltrix_ray.contracts import Fetched
from veltrix_ray.local import LocalStack
from veltrix_ray.local.procs import free_port
from veltrix_ray.local.ray_head import RayHead, temp_dir_for
from veltrix_ray.produce import generate, produce
from veltrix_ray.sink.binary import choose
from veltrix_ray.sink.ddl import pg_type
from veltrix_ray.source.admin import ensure_topic

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
    """The same rows, already decoded into Arrow, COPYed in one connection: CSV (the previous
    path) and binary (the sink's encoder), CSV first."""
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
        plan = choose(decoder.schema, {f.name: pg_type(f) for f in decoder.schema}, "ceiling")
        assert plan is not None
        rates = {}
        for fmt in ("csv", "binary"):
            conn.execute("TRUNCATE ceiling")
            conn.commit()
            start = time.perf_counter()
            for chunk in chunks:
                if fmt == "csv":
                    buf = io.BytesIO()
                    pacsv.write_csv(chunk, buf, pacsv.WriteOptions(include_header=False))
                    data = buf.getvalue()
                else:
                    data = plan.encode(pa.Table.from_batches([chunk]))
                with conn.cursor().copy(sql.SQL("COPY ceiling ({}) FROM STDIN (FORMAT {})")
                                        .format(cols, sql.SQL(fmt))) as cp:
                    cp.write(data)
                conn.commit()
            rates[fmt] = n / (time.perf_counter() - start)
    return {"rows": n, "csv_rows_per_s": rates["csv"], "binary_rows_per_s": rates["binary"]}


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


# -- runs in child processes (each its own private Ray, or the stack's head) -----------------

HERE = Path(__file__).resolve()
CLEAN = ("VELTRIX_RAY_ADDRESS", "VELTRIX_STATE_DIR", "VELTRIX_COPY_FORMAT",
         "VELTRIX_RECORD_PATH", "VELTRIX_METRICS_PORT", "RAY_ADDRESS")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return {**env, "RAY_DEDUP_LOGS": "0", **extra}


def child(args: dict[str, Any]) -> None:
    """One pipeline run in this process; worker pids go to args["pids"] as they appear."""
    settings = to_settings(load_config(args["overrides"]))

    def progress(s: RunSummary) -> None:
        pids = {w["worker"]: w["pid"] for w in s.workers if w.get("pid")}
        if pids:
            Path(args["pids"]).write_text(json.dumps(pids))

    summary = Pipeline(settings).run(on_progress=progress)
    print("RESULT " + json.dumps({
        "rows": summary.rows, "elapsed_s": summary.elapsed_s,
        "events_per_s_once_flowing": summary.processing_events_per_s,
        "peak_rss_mib": [w["peak_rss"] / 2**20 for w in summary.workers],
        "memory_mb": settings.topology.memory_mb,
        "commit_p99_ms": summary.commit_latency_ms(0.99)}), flush=True)


def committed(dsn: str, topic: str) -> int:
    """Events committed so far (their rows committed in the same transactions)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM veltrix_offsets "
                               "WHERE topic = %s", (topic,)).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def profile(pid: int, seconds: float, out: Path) -> list[str]:
    """py-spy on one worker: the top functions by own samples and by total samples."""
    raw = out.with_suffix(".txt")
    got = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                          str(pid), "--duration", str(int(seconds)), "--rate", "97",
                          "--nonblocking", "--function", "--format", "raw", "-o", str(raw)],
                         capture_output=True, text=True)
    if got.returncode != 0 or not raw.exists():
        return [f"py-spy failed: {(got.stderr or got.stdout).strip()[-300:]}"]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r" \(([^)]*/)?([^/)]+)\)$", r" (\2)", f)
                  for f in stack.split(";")[1:]]  # [0] is the thread
        samples += n
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    lines = [f"{samples} samples of worker pid {pid} over {seconds:g}s"]
    lines += [f"  own {n / samples:6.1%}  {f}" for f, n in own.most_common(12)]
    lines += [f"  all {n / samples:6.1%}  {f}" for f, n in total.most_common(25)
              if not f.startswith(("<module>", "_run_once", "run (", "run_forever",
                                   "_bootstrap", "main_loop"))][:15]
    return lines


def steady_run(name: str, topic: str, events: int, admin_dsn: str, extra: list[str],
               env: dict[str, str], profile_s: float = 0.0) -> dict[str, Any]:
    """A pipeline run in a child process; events/s from outside between 10 % and 90 %."""
    dsn = fresh_database(admin_dsn)
    pids_file = RESULTS / f"pids-{name}.json"
    pids_file.unlink(missing_ok=True)
    spec = {"overrides": [f"kafka.topic={topic}", f"postgres.dsn={dsn}", "until=drained",
                          "topology.workers=2", "progress_interval_s=0.5", *extra],
            "pids": str(pids_file)}
    proc = subprocess.Popen([sys.executable, str(HERE), "child", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=child_env(**env))
    samples: list[tuple[float, int]] = []  # (time, events committed)
    prof: list[str] = []
    while proc.poll() is None:
        samples.append((time.perf_counter(), committed(dsn, topic)))
        if profile_s and not prof and samples[-1][1] >= 0.1 * events and pids_file.exists():
            pid = next(iter(json.loads(pids_file.read_text()).values()))
            prof = profile(pid, profile_s, RESULTS / f"profile-{name}")
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    result = next((json.loads(line[7:]) for line in out.splitlines()
                   if line.startswith("RESULT ")), None)
    # from the last sample at or below 10 % to the first at or above 90 %: commits come in
    # steps, so this bounds the rate from below
    low = [s for s in samples if s[1] <= 0.1 * events]
    high = [s for s in samples if s[1] >= 0.9 * events]
    if result is None or not low or not high:
        raise RuntimeError(f"run {name} failed (exit {proc.returncode}): {out[-2000:]}")
    (t0, v0), (t1, v1) = low[-1], high[0]
    result["events_per_s"] = (v1 - v0) / (t1 - t0)
    result["profile"] = prof
    pids_file.unlink(missing_ok=True)
    return result


def launch(topic: str, admin_dsn: str, env: dict[str, str]) -> float:
    """`veltrix-ray run` as a process: its start to the first committed row."""
    dsn = fresh_database(admin_dsn)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "veltrix_ray.cli", "run",
                             f"kafka.topic={topic}", f"postgres.dsn={dsn}", "until=drained"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=child_env(**env))
    first = None
    while proc.poll() is None and first is None:
        if committed(dsn, topic) > 0:
            first = time.perf_counter() - started
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    if first is None or proc.returncode != 0:
        raise RuntimeError(f"launch run failed ({proc.returncode}): {err[-2000:]}")
    if bool(env) != ("attached to the local stack's Ray" in err):
        raise RuntimeError(f"expected {'the stack head' if env else 'a private Ray'}: {err}")
    return first


def stack_head() -> tuple[RayHead, dict[str, str]]:
    """A Ray head as `veltrix-ray local up` starts it, recorded in a state dir of its own (the
    services may be someone else's stack)."""
    state = Path(tempfile.mkdtemp(prefix="vxb", dir="/tmp"))
    home = state / "ray"
    record = {"ray_port": free_port(), "ray_num_cpus": os.cpu_count() or 1,
              "ray_temp_dir": str(temp_dir_for(home))}
    (state / "stack.json").write_text(json.dumps(record))
    head = LocalStack(state).ray_head()
    assert head is not None
    head.start()
    return head, {"VELTRIX_RAY_ADDRESS": head.address, "VELTRIX_STATE_DIR": str(state)}


async def paced(bootstrap: str, topic: str, rate: int, seconds: float, seed: int) -> int:
    """Standard events stamped with the time they are sent, `rate` per second."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    values = [json.loads(r.value) for r in generate(int(rate * seconds), seed=seed)]
    sent, tick, start = 0, 0.01, time.perf_counter()
    try:
        while sent < len(values):
            due = min(len(values), int((time.perf_counter() - start) * rate) + 1)
            for v in values[sent:due]:
                v["ts"] = dt.datetime.now(dt.timezone.utc).isoformat()
                await producer.send(topic, json.dumps(v).encode(), key=v["event_id"].encode())
            sent = due
            await asyncio.sleep(tick)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def latency(bootstrap: str, admin_dsn: str, rate: int, seconds: float) -> dict[str, float]:
    """Event created (its ts, stamped at send) -> row inserted (clock_timestamp() of the row),
    with the pipeline running before the first event."""
    dsn = fresh_database(admin_dsn)
    topic = f"lat-{uuid.uuid4().hex[:8]}"
    asyncio.run(log_append_topic(bootstrap, topic, 8))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL, "
                     "user_id bigint NOT NULL, kind text NOT NULL, amount double precision "
                     "NOT NULL, country text NOT NULL, payload jsonb, "
                     "inserted_at timestamptz DEFAULT clock_timestamp())")
    proc = subprocess.Popen([sys.executable, "-m", "veltrix_ray.cli", "run",
                             f"kafka.topic={topic}", f"postgres.dsn={dsn}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=child_env())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # running: its offsets are claimed
            with psycopg.connect(dsn, autocommit=True) as conn:
                if conn.execute("SELECT to_regclass('veltrix_offsets') IS NOT NULL"
                                ).fetchone() == (True,) and conn.execute(
                        "SELECT count(*) > 0 FROM veltrix_offsets").fetchone() == (True,):
                    break
            time.sleep(0.2)
        time.sleep(2)
        sent = asyncio.run(paced(bootstrap, topic, rate, seconds, seed=5))
        while committed(dsn, topic) < sent and time.monotonic() < deadline + 120:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    with psycopg.connect(dsn) as conn:
        p50, p99, n = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) "
            "WITHIN GROUP (ORDER BY ms), count(*) FROM (SELECT extract(epoch FROM inserted_at "
            "- ts) * 1000 AS ms FROM events) l").fetchone()  # type: ignore[misc]
        rows = conn.execute(
            "SELECT event_id, extract(epoch FROM ts), extract(epoch FROM inserted_at), "
            "xmin::text::bigint FROM events").fetchall()
    appended = asyncio.run(append_times(bootstrap, topic))
    return {"events": n, "rate": rate, "p50_ms": p50, "p99_ms": p99,
            "stages": stages(rows, appended)}


async def log_append_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """A topic whose record timestamps are the broker's append time (LogAppendTime)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={
            "message.timestamp.type": "LogAppendTime"})])
    finally:
        await admin.close()
    await ensure_topic(bootstrap, topic, partitions)


async def append_times(bootstrap: str, topic: str) -> dict[str, float]:
    """event_id -> the broker's append time (s since the epoch, ms precision)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    out: dict[str, float] = {}
    try:
        while True:
            got = await consumer.getmany(timeout_ms=2000, max_records=10_000)
            if not got:
                return out
            for records in got.values():
                for r in records:
                    out[r.key.decode()] = r.timestamp / 1000
    finally:
        await consumer.stop()


def stages(rows: list[tuple[Any, ...]], appended: dict[str, float]) -> dict[str, Any]:
    """Per row: created -> Kafka append -> inserted (the row's clock_timestamp() in its COPY);
    per transaction (xmin): its rows' spread; for the slowest 1 %: where their time went and
    when they were created (clustered in time or spread)."""
    per = []
    for event_id, ts, ins, xid in rows:
        app = appended.get(event_id, float(ts))
        per.append((float(ins) - float(ts), app - float(ts), float(ins) - app, float(ts), xid))
    per.sort()
    cut = per[int(0.99 * len(per))][0]
    slow = [r for r in per if r[0] >= cut]
    t0 = min(r[3] for r in per)
    seconds = Counter(int(r[3] - t0) for r in slow)
    txs = Counter(r[4] for r in per)
    slow_txs = Counter(r[4] for r in slow)

    def q(xs: list[float], f: float) -> float:
        xs = sorted(xs)
        return 1000 * xs[min(len(xs) - 1, int(f * len(xs)))]

    return {
        "p99_cut_ms": 1000 * cut,
        "all_to_append_p50_p99_ms": [q([r[1] for r in per], .5), q([r[1] for r in per], .99)],
        "all_append_to_insert_p50_p99_ms": [q([r[2] for r in per], .5),
                                            q([r[2] for r in per], .99)],
        "slow_to_append_p50_max_ms": [q([r[1] for r in slow], .5), q([r[1] for r in slow], 1)],
        "slow_append_to_insert_p50_max_ms": [q([r[2] for r in slow], .5),
                                             q([r[2] for r in slow], 1)],
        "slow_rows_by_second_created": sorted(seconds.items()),
        "transactions": len(txs), "rows_per_tx_p50": statistics.median(txs.values()),
        "slow_transactions": len(slow_txs),
        "slow_tx_sizes": sorted(slow_txs.values(), reverse=True)[:10],
        "slow_onsets_s": sorted({round(min(r[3] for r in slow if r[4] == x) - t0, 2)
                                 for x in slow_txs}),
    }


def ratio(new: float, old: float) -> str:
    return f"{new:,.0f} vs {old:,.0f} ({new / old:.2f}x)"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--naive-events", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--launches", type=int, default=3)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument("--profile-s", type=float, default=4.0)
    parser.add_argument("--only", choices=["latency"], default=None,
                        help="run one part: latency (end-to-end at 10k events/s, by stage)")
    args = parser.parse_args()
    bootstrap, admin_dsn = services()
    if args.only == "latency":
        lat = latency(bootstrap, admin_dsn, 10_000, args.latency_s)
        print(json.dumps(lat, indent=1))
        print(f"end-to-end latency at {lat['rate']:,} events/s ({lat['events']:,} events): "
              f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms")
        return
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    RESULTS.mkdir(exist_ok=True)
    out: dict[str, Any] = {"events": args.events, "partitions": 8, "workers": 2}
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    report = asyncio.run(produce(bootstrap, topic, events=args.events, partitions=8,
                                 seed=args.seed, progress=True))
    print(report.summary())
    out["producer_events_per_s"] = report.events_per_s

    ceil = ceiling(fresh_database(admin_dsn), args.events, args.seed)
    out["ceiling_csv_rows_per_s"] = ceil["csv_rows_per_s"]
    out["ceiling_binary_rows_per_s"] = ceil["binary_rows_per_s"]
    say("raw ceiling (Arrow -> COPY, 1 connection), binary vs CSV: "
        + ratio(ceil["binary_rows_per_s"], ceil["csv_rows_per_s"]) + " rows/s")
    base = asyncio.run(naive(bootstrap, topic, fresh_database(admin_dsn), args.naive_events))
    out["naive_events_per_s"] = base["events_per_s"]
    say(f"naive consumer (json.loads + INSERT per event): {base['events_per_s']:,.0f} events/s")

    runs = {
        "append": ([], {}),
        "append_csv": ([], {"VELTRIX_COPY_FORMAT": "csv"}),
        "append_getmany": ([], {"VELTRIX_RECORD_PATH": "getmany"}),
        "append_previous": ([], {"VELTRIX_COPY_FORMAT": "csv", "VELTRIX_RECORD_PATH": "getmany"}),
        "upsert": (["pipeline=user_totals"], {}),
        "upsert_csv": (["pipeline=user_totals"], {"VELTRIX_COPY_FORMAT": "csv"}),
    }
    got = {}
    for name, (extra, env) in runs.items():
        got[name] = steady_run(name, topic, args.events, admin_dsn, extra, env)
        out[f"{name}_events_per_s"] = got[name]["events_per_s"]
        print(f"  {name:16} {got[name]['events_per_s']:,.0f} events/s (10-90 %), peak RSS "
              f"{', '.join(f'{m:.0f}' for m in got[name]['peak_rss_mib'])} MiB", flush=True)
    a = got["append"]["events_per_s"]
    say(f"append, exactly once, binary vs CSV COPY:        "
        f"{ratio(a, got['append_csv']['events_per_s'])} events/s  (target >= 250,000)")
    say(f"append, lean record path vs getmany:             "
        f"{ratio(a, got['append_getmany']['events_per_s'])} events/s")
    say(f"append, both vs the previous path (CSV+getmany): "
        f"{ratio(a, got['append_previous']['events_per_s'])} events/s")
    say(f"upsert user_totals, binary vs CSV staging:       "
        f"{ratio(got['upsert']['events_per_s'], got['upsert_csv']['events_per_s'])} events/s "
        "(target >= 100,000)")
    memory = got["append"]["memory_mb"]
    peaks = [m for r in got.values() for m in r["peak_rss_mib"]]
    out["peak_rss_mib_per_worker_max"] = max(peaks)
    say(f"peak RSS per worker: max {max(peaks):.0f} MiB over all runs, topology.memory_mb "
        f"{memory} ({'within' if max(peaks) <= memory else 'OVER'})")

    # launch -> first committed row: the local stack's Ray head vs a cold private Ray
    small = f"launch-{uuid.uuid4().hex[:8]}"
    asyncio.run(produce(bootstrap, small, events=20_000, partitions=8, seed=3))
    head, head_env = stack_head()
    try:
        warm, cold = [], []
        for _ in range(args.launches):
            warm.append(launch(small, admin_dsn, head_env))
            cold.append(launch(small, admin_dsn, {}))
    finally:
        head.stop()
        shutil.rmtree(Path(head_env["VELTRIX_STATE_DIR"]), ignore_errors=True)
        shutil.rmtree(head.temp_dir, ignore_errors=True)
    out["launch_stack_head_s"], out["launch_cold_s"] = warm, cold
    say(f"launch -> first committed row (`veltrix-ray run`, median of {args.launches}): "
        f"stack head {statistics.median(warm):.2f} s vs cold private Ray "
        f"{statistics.median(cold):.2f} s  (target <= 3 s; each: "
        f"{', '.join(f'{w:.2f}' for w in warm)} vs {', '.join(f'{c:.2f}' for c in cold)})")

    lat = latency(bootstrap, admin_dsn, 10_000, args.latency_s)
    out["latency_p50_ms"], out["latency_p99_ms"] = lat["p50_ms"], lat["p99_ms"]
    say(f"end-to-end latency at {lat['rate']:,} events/s ({lat['events']:,} events, created -> "
        f"row inserted): p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
        "(target p99 < 100 ms)")

    prof = steady_run("profiled", topic, args.events, admin_dsn, [], {},
                      profile_s=args.profile_s)
    out["profile"] = prof["profile"]
    say("py-spy, one worker of the append run (own = leaf samples, all = inclusive):")
    for line in prof["profile"]:
        say("  " + line)

    (RESULTS / "pipeline.json").write_text(json.dumps(out, indent=2))
    print("\n".join(["", "== summary =="] + lines))


if __name__ == "__main__":
    main()
