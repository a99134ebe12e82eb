"""`veltrix-ray status`: offsets and counters from PostgreSQL (`veltrix_offsets`), the end of
each partition from Kafka, and, while the pipeline runs, owners, workers and the autoscaler
from the coordinator's last heartbeat (`veltrix_control`)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import sql

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.control.kafka import offsets_at
from veltrix_ray.control.plane import ControlPlane, ControlRow, json_safe, running
from veltrix_ray.sink.offsets import OFFSETS


def stored_offsets(plane: ControlPlane) -> dict[int, dict[str, Any]]:
    """veltrix_offsets of the pipeline, by partition (empty: no table or no rows yet)."""

    def run(cur: psycopg.Cursor) -> dict[int, dict[str, Any]]:
        cur.execute("SELECT to_regclass(%s)", (f'"{plane.db_schema}"."{OFFSETS}"',))
        found = cur.fetchone()
        if found is None or found[0] is None:
            return {}
        cur.execute(sql.SQL("SELECT partition, next_offset, owner_epoch, rows_total, "
                            "dead_letters_total FROM {} WHERE pipeline = %s AND topic = %s"
                            ).format(sql.Identifier(plane.db_schema, OFFSETS)),
                    (plane.pipeline, plane.topic))
        return {p: {"committed": n, "epoch": e, "rows": r, "dead_letters": d}
                for p, n, e, r, d in cur.fetchall()}

    return plane.transact("reading offsets", run)


def collect(settings: VeltrixConfig) -> dict[str, Any]:
    """The status object (`status --json`)."""
    s = settings
    plane = ControlPlane(s, max_elapsed_s=10.0, application_name="veltrix-ray status")
    row = plane.read()
    live = running(row)
    stored = stored_offsets(plane)
    kafka_error = None
    try:
        count, (begins, ends) = asyncio.run(offsets_at(s.kafka, ["earliest", "latest"]))
    except Exception as exc:  # noqa: BLE001 - status still shows what PostgreSQL knows
        count, begins, ends = 0, {}, {}
        kafka_error = f"{type(exc).__name__}: {exc}"
    report: dict[str, Any] = (row.status if row is not None and live else {}) or {}
    reported = report.get("partitions", {})
    workers = report.get("workers", []) if live else []
    names = {w.get("slot"): w.get("worker") for w in workers}
    partitions = []
    for p in sorted(set(range(count)) | set(stored)):
        db = stored.get(p, {})
        info = reported.get(str(p), {}) if live else {}
        committed, hw = db.get("committed"), ends.get(p)
        # nothing committed yet: kafka.start says where reading begins
        start = committed if committed is not None else {
            "earliest": begins.get(p), "latest": hw}.get(s.kafka.start)
        slot = info.get("worker")
        partitions.append({
            "partition": p,
            "owner": names.get(slot, f"w{slot}") if slot is not None else None,
            "committed": committed, "high_watermark": hw,
            "lag": hw - start if hw is not None and start is not None else None,
            "epoch": db.get("epoch"),
            "rows": db.get("rows", 0), "dead_letters": db.get("dead_letters", 0),
            "stopped": info.get("error")})
    out: dict[str, Any] = {
        "pipeline": s.pipeline.name, "topic": s.kafka.topic, "running": live,
        "workers": int(report.get("live_workers", 0)) if live else 0,
        "target_workers": report.get("target_workers") if live else None,
        "partitions": partitions,
        "lag": sum(p["lag"] or 0 for p in partitions),
        "worker_reports": [
            {k: w.get(k) for k in ("worker", "slot", "node", "status", "busy_ratio", "rss",
                                   "peak_rss", "budget_bytes", "restarts", "pid", "waiting")}
            for w in workers],
        "autoscale": report.get("autoscale") if live else None,
        "commit_p50_s": report.get("commit_p50_s") if live else None,
        "commit_p95_s": report.get("commit_p95_s") if live else None,
        "errors": report.get("errors", []) if live else [],
        "kafka_error": kafka_error,
    }
    out.update(_control_fields(row))
    return json_safe(out)  # type: ignore[no-any-return]


def _control_fields(row: ControlRow | None) -> dict[str, Any]:
    if row is None:
        return {"owner": None, "heartbeat_age_s": None, "started_at": None,
                "stopped_at": None, "desired_workers": None, "request_id": 0,
                "applied_request_id": 0, "last_rescale": None, "last_errors": []}
    return {"owner": row.owner, "heartbeat_age_s": row.heartbeat_age_s,
            "started_at": row.started_at, "stopped_at": row.stopped_at,
            "desired_workers": row.desired_workers, "request_id": row.request_id,
            "applied_request_id": row.applied_request_id,
            "last_rescale": row.status.get("applied"),
            "last_errors": row.status.get("errors", []) if not running(row) else []}


def _mb(n: Any) -> str:
    return f"{(n or 0) / 2**20:,.0f}"


def _num(n: Any) -> str:
    return "-" if n is None else f"{n:,}"


def render(st: dict[str, Any]) -> str:
    """The status object for a human."""
    lines = [f"pipeline {st['pipeline']}  topic {st['topic']}"]
    if st["running"]:
        lines.append(f"RUNNING  owner {st['owner']}  heartbeat {st['heartbeat_age_s']:.1f}s "
                     f"ago  started {st['started_at']}")
        lines.append(f"workers {st['workers']} live, target {st['target_workers']}"
                     + (f"  (operator asked for {st['desired_workers']})"
                        if st["desired_workers"] is not None else ""))
    else:
        when = f" since {st['stopped_at']}" if st["stopped_at"] else ""
        lines.append(f"NOT RUNNING{when}  (offsets from PostgreSQL, ends from Kafka)")
    auto = st.get("autoscale")
    if auto:
        bounds = auto.get("bounds") or ["?", "?"]
        lines.append(f"autoscaler {bounds[0]}..{bounds[1]} workers, target {auto.get('target')}"
                     + ("  (paused by a manual rescale)" if auto.get("paused") else "")
                     + (f"  last decision {auto['decision']}: {auto.get('reason')}"
                        if auto.get("decision") else ""))
    if st.get("kafka_error"):
        lines.append(f"no high watermarks from Kafka: {st['kafka_error']}")
    lines.append("")
    lines.append(f"{'partition':>9}  {'owner':<22} {'committed':>12} {'high wm':>12} "
                 f"{'lag':>10} {'rows':>12} {'dead':>8}  stopped")
    for p in st["partitions"]:
        lines.append(f"{p['partition']:>9}  {p['owner'] or '-':<22} {_num(p['committed']):>12} "
                     f"{_num(p['high_watermark']):>12} {_num(p['lag']):>10} "
                     f"{_num(p['rows']):>12} {_num(p['dead_letters']):>8}  "
                     f"{p['stopped'] or ''}")
    lines.append(f"{'total lag':>9}  {st['lag']:,}   (rows and dead letters: all runs)")
    if st["worker_reports"]:
        lines.append("")
        lines.append(f"{'worker':<26} {'node':<18} {'status':<9} {'busy':>5} "
                     f"{'rss MB':>8} / {'budget':<7} restarts")
        for w in st["worker_reports"]:
            lines.append(f"{w['worker'] or '-':<26} {str(w.get('node') or '-')[:12]:<18} "
                         f"{w['status'] or '-':<9} {(w['busy_ratio'] or 0):>5.0%} "
                         f"{_mb(w['rss']):>8} / {_mb(w['budget_bytes']):<7} "
                         f"{w['restarts'] or 0}" + (f"  waiting: {w['waiting']}"
                                                    if w.get("waiting") else ""))
    if st["commit_p95_s"] is not None:
        lines.append(f"commit p50 {st['commit_p50_s'] * 1000:.0f} ms, p95 "
                     f"{st['commit_p95_s'] * 1000:.0f} ms")
    for kind, message in st["errors"] or st["last_errors"]:
        lines.append(f"{kind}: {message}")
    return "\n".join(lines)
