"""Prometheus metrics through ray.util.metrics, exported by Ray's per-node metrics agent
(Ray prefixes `ray_` and suffixes counters with `_total`).

The coordinator exports the pipeline's view, from the same progress reports that feed the
live line and the summary: counters follow the per-partition totals, gauges are set again on
every tick (Ray drops a gauge's value at each export, so an idle pipeline stays visible only
that way). A worker exports what happens per commit: the commit latency and batch size
histograms. PostgreSQL stays the source of truth; these are for watching."""

from __future__ import annotations

import time
from typing import Any

from veltrix_ray.runtime.meter import Window

PIPELINE = ("pipeline",)
PARTITION = ("pipeline", "partition")
WORKER = ("pipeline", "worker")
COMMIT_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
BATCH_BUCKETS: list[float] = [1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000]
STOPPED_REASON = "dead_letter_limit"


class WorkerMetrics:
    """In a worker: one observation per committed batch. `worker` is the slot index, stable
    across restarts."""

    def __init__(self, pipeline: str, slot: int) -> None:
        from ray.util.metrics import Histogram

        self.tags = {"pipeline": pipeline, "worker": str(slot)}
        self.commit_seconds = Histogram(
            "veltrix_commit_seconds", "Seconds of one batch's PostgreSQL transaction "
            "(rows, dead letters and offsets)", COMMIT_BUCKETS_S, WORKER)
        self.batch_rows = Histogram("veltrix_batch_rows", "Rows per committed batch",
                                    BATCH_BUCKETS, PIPELINE)

    def committed(self, seconds: float, rows: int) -> None:
        self.commit_seconds.observe(seconds, self.tags)
        self.batch_rows.observe(rows, {"pipeline": self.tags["pipeline"]})


class PipelineMetrics:
    """In the coordinator: the pipeline's counters and gauges from its progress reports."""

    def __init__(self, pipeline: str, rate_window_s: float = 60.0) -> None:
        from ray.util.metrics import Counter, Gauge

        self.pipeline = pipeline
        self.tags = {"pipeline": pipeline}
        c, g = Counter, Gauge
        self.rows = c("veltrix_rows_committed", "Rows committed to the target table", PARTITION)
        self.records = c("veltrix_records_consumed", "Records of committed batches (rows, "
                         "dead letters and skipped tombstones)", PARTITION)
        self.dead = c("veltrix_dead_letters", "Records dead-lettered, by the stage that "
                      "rejected them (decode, transform, sink)", PARTITION + ("reason",))
        self.lag = g("veltrix_partition_lag_records", "High watermark minus committed offset",
                     PARTITION)
        self.committed = g("veltrix_partition_committed_offset", "Next offset to process, "
                           "as committed in PostgreSQL", PARTITION)
        self.high_watermark = g("veltrix_partition_high_watermark", "Kafka's high watermark",
                                PARTITION)
        self.stopped = g("veltrix_partition_stopped", "1 when the dead-letter limit stopped "
                         "the partition", PARTITION + ("reason",))
        self.lag_seconds = g("veltrix_lag_seconds", "Backlog divided by the committed rate "
                             "(records/s over the last minute); with no progress, the "
                             "backlog's age", PIPELINE)
        self.busy = g("veltrix_worker_busy_ratio", "Time in decode, transform and commit per "
                      "second of wall time (last 10 s)", WORKER)
        self.rss = g("veltrix_worker_rss_bytes", "Resident memory of the worker process",
                     WORKER)
        self.peak_rss = g("veltrix_worker_peak_rss_bytes", "Peak resident memory of the "
                          "worker process (the kernel's high-water mark), to hold against "
                          "veltrix_worker_budget_bytes", WORKER)
        self.held = g("veltrix_worker_held_bytes", "Fetched bytes the worker holds (in "
                      "batches not yet committed)", WORKER)
        self.budget = g("veltrix_worker_budget_bytes", "The worker's memory budget "
                        "(topology.memory_mb)", WORKER)
        self.workers = g("veltrix_workers", "Live workers", PIPELINE)
        self.target = g("veltrix_workers_target", "Workers the pipeline should have", PIPELINE)
        self.restarts = c("veltrix_worker_restarts", "Workers restarted after a fault",
                          PIPELINE)
        self.fenced = c("veltrix_fenced_commits", "Commits refused because another owner "
                        "took the partition (a newer epoch)", PIPELINE)
        self.rescales = c("veltrix_rescales", "Changes of the number of workers", PIPELINE)
        self._seen: dict[tuple[Any, ...], int] = {}
        self._rate = Window(rate_window_s)
        self._behind_since: float | None = None

    def _count(self, counter: Any, key: tuple[Any, ...], total: int, tags: dict[str, str]
               ) -> None:
        """Advance a counter to a cumulative total (a total that went back, e.g. a worker
        lost before it reported, never makes the counter go back)."""
        seen = self._seen.get(key, 0)
        if total > seen:
            counter.inc(total - seen, tags)
            self._seen[key] = total

    def tick(self, progress: dict[str, Any], *, live: int, target: int) -> None:
        lag_total = 0
        committed_total = 0
        for p, info in progress["partitions"].items():
            tags = {"pipeline": self.pipeline, "partition": str(p)}
            self._count(self.rows, ("rows", p), info["rows"], tags)
            self._count(self.records, ("records", p), info.get("records", 0), tags)
            for reason, n in info.get("reasons", {}).items():
                self._count(self.dead, ("dead", p, reason), n, tags | {"reason": reason})
            committed, hw = info["committed"], info["high_watermark"]
            if committed is not None:
                self.committed.set(committed, tags)
                committed_total += committed
            if hw is not None:
                self.high_watermark.set(hw, tags)
                lag = max(0, hw - (committed or 0))
                self.lag.set(lag, tags)
                lag_total += lag
            stopped = bool(info.get("error"))
            self.stopped.set(int(stopped), tags | {"reason": STOPPED_REASON if stopped else "none"})
        self._rate.sample(committed_total)
        self.lag_seconds.set(self._lag_seconds(lag_total), self.tags)
        for w in progress["workers"]:
            if w.get("slot") is None or w.get("status") not in ("starting", "running"):
                continue
            tags = {"pipeline": self.pipeline, "worker": str(w["slot"])}
            self.busy.set(w.get("busy_ratio", 0.0), tags)
            self.rss.set(w["rss"], tags)
            self.peak_rss.set(w.get("peak_rss", 0), tags)
            self.held.set(w["held_bytes"], tags)
            self.budget.set(w["budget_bytes"], tags)
        self.workers.set(live, self.tags)
        self.target.set(target, self.tags)

    def _lag_seconds(self, lag: int) -> float:
        now = time.monotonic()
        if lag == 0:
            self._behind_since = None
            return 0.0
        if self._behind_since is None:
            self._behind_since = now
        rate = self._rate.rate()
        return lag / rate if rate > 0 else now - self._behind_since

    def restarted(self) -> None:
        self.restarts.inc(1, self.tags)

    def fenced_commit(self) -> None:
        self.fenced.inc(1, self.tags)

    def rescaled(self) -> None:
        self.rescales.inc(1, self.tags)
