"""The run's books: counters per partition committed by workers that no longer own it
(banked), corrected from PostgreSQL after a worker was lost (rebanked), partitions stopped
and why, errors, moves and ownership events; the progress report and the final summary."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from veltrix_ray.contracts import Totals
from veltrix_ray.runtime.coordinator.supervision import Slot
from veltrix_ray.runtime.reports import PartitionReport, WorkerReport

# a worker's line in the progress report (what status, the summary and the metrics show)
WORKER_FIELDS = ("worker", "pid", "status", "rss", "first_data_at", "peak_rss", "held_bytes",
                 "budget_bytes", "batches", "waiting", "node", "busy_ratio")


class Ledger:
    def __init__(self, pipeline: str, topic: str, wall: Callable[[], float] = time.time) -> None:
        self.pipeline = pipeline
        self.topic = topic
        self.wall = wall
        self.started = wall()
        self.finished: float | None = None
        self.errors: list[tuple[str, str]] = []
        self.moves: list[dict[str, Any]] = []
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)  # ownership changes
        self.banked: dict[int, dict[str, Any]] = {}
        self.retired: list[WorkerReport] = []  # final reports of rescaled-away workers
        # the durable per-partition counters in veltrix_offsets, before and after the run
        self.baseline: dict[int, Totals] = {}
        self.final: dict[int, Totals] = {}
        # partitions the dead-letter limit or a recurring crash stopped, and why: no later
        # owner resumes them; the error class of those a crash stopped
        self.stopped: dict[int, str] = {}
        self.stop_kinds: dict[int, str] = {}

    def event(self, kind: str, slot: int, partitions: list[int], **extra: Any) -> None:
        self.events.append({"at": self.wall(), "event": kind, "worker": slot,
                            "partitions": sorted(partitions)} | extra)

    def stopped_of(self, partitions: list[int]) -> dict[int, str]:
        return {p: self.stopped[p] for p in partitions if p in self.stopped}

    def stop(self, partition: int, why: str, kind: str) -> None:
        self.stopped[partition] = why
        self.stop_kinds[partition] = kind

    def note_stopped(self, partitions: Mapping[int, PartitionReport]) -> None:
        for p, info in partitions.items():
            if info.error:
                self.stopped[p] = info.error

    def bank_report(self, partitions: Mapping[int, PartitionReport]) -> None:
        """What a worker that gives partitions up (or was lost) committed of them."""
        self.note_stopped(partitions)
        for p, info in partitions.items():
            bank = self._bank(p)
            bank["rows"] += info.rows
            bank["dead_letters"] += info.dead_letters
            bank["records"] += info.records
            for reason, n in info.reasons.items():
                bank["reasons"][reason] = bank["reasons"].get(reason, 0) + n

    def rebank(self, totals: dict[int, Totals], partitions: list[int]) -> None:
        """Rows and dead letters of partitions so far, from PostgreSQL: a worker lost between
        two progress reports took its last commits' counts along."""
        for p in partitions:
            if p not in totals:
                continue
            before = self.baseline.get(p, Totals(None, 0, 0))
            bank = self._bank(p)
            bank["rows"] = max(bank["rows"], totals[p].rows - before.rows)
            bank["dead_letters"] = max(bank["dead_letters"],
                                       totals[p].dead_letters - before.dead_letters)

    def _bank(self, p: int) -> dict[str, Any]:
        return self.banked.setdefault(p, {"rows": 0, "dead_letters": 0, "records": 0,
                                          "reasons": {}})

    def progress(self, slots: list[Slot], **extra: Any) -> dict[str, Any]:
        """`extra`: the coordinator's own fields (waiting, target, autoscale, live)."""
        parts: dict[int, dict[str, Any]] = {}
        for p, bank in self.banked.items():
            parts[p] = {"worker": None, "committed": None, "high_watermark": None,
                        "error": None} | bank
        workers = []
        latencies: list[float] = []
        reports: list[tuple[int | None, int, list[int], WorkerReport | None]] = [
            (slot.index, slot.restarts, slot.partitions, slot.last) for slot in slots]
        reports += [(None, 0, [], info) for info in self.retired]
        for index, restarts, owned, info in reports:
            for p in owned:
                cur = info.partitions.get(p) if info is not None else None
                parts[p] = self._partition(index, cur, self.banked.get(p, {}))
            if info is not None:
                workers.append({k: getattr(info, k) for k in WORKER_FIELDS}
                               | {"restarts": restarts, "slot": index})
                latencies += info.latencies
        end = self.finished or self.wall()
        first = min((w["first_data_at"] for w in workers if w["first_data_at"]), default=None)
        return {"pipeline": self.pipeline, "topic": self.topic,
                "elapsed_s": end - self.started,
                "processing_s": end - first if first is not None else 0.0,
                "partitions": parts, "workers": workers, "latencies": latencies,
                "errors": list(self.errors), "moves": list(self.moves)} | extra | {
                "events": list(self.events)}

    @staticmethod
    def _partition(index: int | None, cur: PartitionReport | None, bank: dict[str, Any]
                   ) -> dict[str, Any]:
        reasons = dict(bank.get("reasons", {}))
        for reason, n in (cur.reasons if cur else {}).items():
            reasons[reason] = reasons.get(reason, 0) + n
        return {"worker": index, "committed": cur.committed if cur else None,
                "high_watermark": cur.high_watermark if cur else None,
                "rows": bank.get("rows", 0) + (cur.rows if cur else 0),
                "dead_letters": bank.get("dead_letters", 0) + (cur.dead_letters if cur else 0),
                "records": bank.get("records", 0) + (cur.records if cur else 0),
                "reasons": reasons, "error": cur.error if cur else None}

    def summary(self, progress: dict[str, Any]) -> dict[str, Any]:
        """The final report: counts and offsets from PostgreSQL, exact across crashes."""
        for p, total in self.final.items():
            info = progress["partitions"].setdefault(p, {"worker": None, "error": None,
                                                         "high_watermark": None})
            before = self.baseline.get(p, Totals(None, 0, 0))
            info.update(committed=total.next_offset, rows=total.rows - before.rows,
                        dead_letters=total.dead_letters - before.dead_letters)
        for p, info in progress["partitions"].items():
            if info["error"]:
                progress["errors"].append((self.stop_kinds.get(p, "DeadLetterLimitExceeded"),
                                           info["error"]))
        return progress
