"""What a run reports: the live progress line and the final summary table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _stop_label(error: str | None) -> str:
    if not error:
        return ""
    return "stopped (writer schema)" if "schema id" in error else "stopped (dead-letter limit)"


@dataclass
class RunSummary:
    pipeline: str
    topic: str
    elapsed_s: float
    partitions: dict[int, dict[str, Any]]
    workers: list[dict[str, Any]]
    latencies: list[float] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    processing_s: float = 0.0  # from the first records fetched to the end (no start-up)
    moves: list[dict[str, Any]] = field(default_factory=list)  # rescales during the run
    waiting: str | None = None  # the coordinator's claim waiting for a lock

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> RunSummary:
        return cls(report["pipeline"], report["topic"], report["elapsed_s"],
                   {int(p): v for p, v in report["partitions"].items()}, report["workers"],
                   report.get("latencies", []),
                   [(str(kind), str(message)) for kind, message in report["errors"]],
                   report.get("processing_s", 0.0), report.get("moves", []),
                   report.get("waiting"))

    @property
    def rows(self) -> int:
        return sum(p["rows"] for p in self.partitions.values())

    @property
    def dead_letters(self) -> int:
        return sum(p["dead_letters"] for p in self.partitions.values())

    @property
    def lag(self) -> int:
        return sum(max(0, (p["high_watermark"] or 0) - (p["committed"] or 0))
                   for p in self.partitions.values() if p["high_watermark"] is not None)

    @property
    def events_per_s(self) -> float:
        return (self.rows + self.dead_letters) / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def processing_events_per_s(self) -> float:
        """Throughput once records flow: Ray start-up and actor placement excluded."""
        n = self.rows + self.dead_letters
        return n / self.processing_s if self.processing_s else 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def commit_latency_ms(self, q: float) -> float:
        return _pct(self.latencies, q) * 1000

    @property
    def stopped(self) -> list[int]:
        """Partitions stopped (the dead-letter limit, a writer schema the table cannot take)."""
        return sorted(p for p, i in self.partitions.items() if i["error"])

    def line(self) -> str:
        stopped = f"  STOPPED partitions {self.stopped}" if self.stopped else ""
        waits = "; ".join([f"{w['worker']}: {w['waiting']}" for w in self.workers
                           if w.get("waiting")] + ([self.waiting] if self.waiting else []))
        waiting = f"  WAITING {waits}" if waits else ""
        return (f"{self.rows:>12,} rows  {self.dead_letters:>8,} dead letters  "
                f"{self.events_per_s:>10,.0f} events/s  lag {self.lag:>10,}  "
                f"{self.elapsed_s:7.1f}s{stopped}{waiting}")

    def table(self) -> str:
        out = [f"pipeline {self.pipeline}  topic {self.topic}",
               f"{'partition':>9} {'worker':>6} {'next offset':>12} {'high wm':>12} "
               f"{'lag':>9} {'rows':>10} {'dead':>8} {'rows/s':>9}  error"]
        for p in sorted(self.partitions):
            i = self.partitions[p]
            hw, committed = i["high_watermark"], i["committed"]
            lag = "" if hw is None else f"{max(0, hw - (committed or 0)):,}"
            rate = i["rows"] / self.processing_s if self.processing_s else 0.0
            out.append(f"{p:>9} {str(i['worker']):>6} {str(committed):>12} {str(hw):>12} "
                       f"{lag:>9} {i['rows']:>10,} {i['dead_letters']:>8,} {rate:>9,.0f}  "
                       f"{_stop_label(i['error'])}")
        for w in self.workers:
            out.append(f"worker {w['worker']}: peak RSS {w['peak_rss'] / 2**20:,.0f} MiB of "
                       f"{w['budget_bytes'] / 2**20:,.0f} MiB budget, {w['batches']} batches, "
                       f"{w['restarts']} restarts")
            if w["peak_rss"] > w["budget_bytes"]:
                out.append(f"warning: worker {w['worker']} went over its memory budget "
                           "(topology.memory_mb): see its peak RSS above")
        out.append(f"rows written {self.rows:,}, dead letters {self.dead_letters:,}, elapsed "
                   f"{self.elapsed_s:.1f}s, {self.events_per_s:,.0f} events/s "
                   f"({self.processing_events_per_s:,.0f}/s once records flow), commit latency "
                   f"p50 {self.commit_latency_ms(0.5):.0f} ms p99 "
                   f"{self.commit_latency_ms(0.99):.0f} ms")
        for kind, message in self.errors:
            out.append(f"{kind}: {message}")
        return "\n".join(out)
