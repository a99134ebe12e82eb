"""The coordinator's side of the control plane: a heartbeat with its progress at most every
control interval, and the operators' requests applied (stop; rescale, acknowledged when
done). Nothing here blocks supervision: PostgreSQL calls run in threads and a rescale in
its own task; a heartbeat that fails is logged and tried again at the next interval."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, Protocol

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.control.plane import ControlPlane, Requests, control_interval

log = logging.getLogger(__name__)
FINISH_WAIT_S = 10.0


class Steerable(Protocol):
    def progress(self) -> dict[str, Any]: ...

    async def stop(self) -> None: ...

    async def rescale(self, workers: int) -> dict[str, Any]: ...


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def status_of(progress: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The progress report as stored in the control row: commit latency percentiles instead
    of every latency, the last few moves only."""
    out = {k: v for k, v in progress.items() if k != "latencies"}
    latencies = progress.get("latencies", [])
    out["commit_p50_s"] = _pct(latencies, 0.5)
    out["commit_p95_s"] = _pct(latencies, 0.95)
    out["moves"] = list(progress.get("moves", []))[-5:]
    out["events"] = list(progress.get("events", []))[-20:]
    return out | (extra or {})


class Steering:
    def __init__(self, settings: VeltrixConfig, actor: str,
                 plane: ControlPlane | None = None) -> None:
        self.plane = plane or ControlPlane(settings, application_name=f"veltrix-ray {actor}")
        self.owner = f"{socket.gethostname()}:{os.getpid()} {actor}"
        self.interval = control_interval(settings)
        self._due = 0.0
        self._beat: asyncio.Future[Requests | None] | None = None
        self._rescale: asyncio.Task[None] | None = None
        self._handling = 0  # the request id of the rescale in flight or last applied
        self._applied_id = 0
        self._applied: dict[str, Any] | None = None  # the last rescale's outcome
        self._stopping = False
        self._failing = False
        self._lost = False

    def setup(self) -> None:
        """Create the table and take the row for this run (blocking: call it in a thread)."""
        self.plane.setup()
        self.plane.start(self.owner, self.interval)

    def _status(self, coord: Steerable) -> dict[str, Any]:
        extra: dict[str, Any] = {"owner": self.owner, "control_interval_s": self.interval}
        if self._applied is not None:
            extra["applied"] = self._applied
        return status_of(coord.progress(), extra)

    async def tick(self, coord: Steerable) -> None:
        """Called on every supervision tick; does something at most once per interval."""
        if self._beat is not None and self._beat.done():
            beat, self._beat = self._beat, None
            try:
                requests = beat.result()
            except Exception as exc:  # noqa: BLE001 - the next heartbeat tries again
                if not self._failing:
                    log.warning("control plane: heartbeat failed (%s); `veltrix-ray status` "
                                "may show this pipeline as not running until it succeeds", exc)
                self._failing = True
            else:
                if self._failing:
                    log.warning("control plane: heartbeats succeed again")
                self._failing = False
                await self._apply(requests, coord)
        if self._beat is None and time.monotonic() >= self._due:
            self._due = time.monotonic() + self.interval
            self._beat = asyncio.ensure_future(asyncio.to_thread(
                self.plane.heartbeat, self._status(coord), self.owner, self._applied_id))

    async def _apply(self, requests: Requests | None, coord: Steerable) -> None:
        if requests is None:
            if not self._lost:
                log.warning("control plane: the %s row of this pipeline belongs to another "
                            "run now (%s); operator requests go there", self.plane.table,
                            "another coordinator started with the same pipeline.name and "
                            "kafka.topic")
            self._lost = True
            return
        self._lost = False
        if requests.stop and not self._stopping:
            self._stopping = True
            log.warning("control plane: stop requested (request %d); finishing the batches "
                        "in flight", requests.request_id)
            await coord.stop()
        n = requests.desired_workers
        if (n is not None and not self._stopping and self._rescale is None
                and requests.request_id > self._handling):
            self._handling = requests.request_id
            log.warning("control plane: rescale to %d workers requested (request %d)", n,
                        requests.request_id)
            self._rescale = asyncio.ensure_future(self._rescaled(coord, n, requests.request_id))

    async def _rescaled(self, coord: Steerable, workers: int, request_id: int) -> None:
        try:
            move = await coord.rescale(workers)
            outcome: dict[str, Any] = {"request_id": request_id, "workers": move["workers"],
                                       "moved": move["moved"], "sets": move["sets"]}
        except Exception as exc:  # noqa: BLE001 - the request's outcome says why; the run goes on
            log.warning("control plane: rescale to %d workers failed: %s", workers, exc)
            outcome = {"request_id": request_id, "workers": workers,
                       "error": f"{type(exc).__name__}: {exc}"}
        self._applied = outcome
        self._applied_id = request_id
        try:
            await asyncio.to_thread(self.plane.applied, request_id, self._status(coord),
                                    self.owner)
        except Exception as exc:  # noqa: BLE001 - the next heartbeat acknowledges it
            log.warning("control plane: acknowledging request %d failed: %s", request_id, exc)
        finally:
            self._rescale = None

    async def finish(self, coord: Steerable) -> None:
        """The run ended: mark the row not running, after any heartbeat still in flight."""
        pending = [t for t in (self._beat, self._rescale) if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=FINISH_WAIT_S)
        try:
            status = self._status(coord)
            await asyncio.to_thread(self.plane.finish, status, self.owner)
        except Exception as exc:  # noqa: BLE001 - the run has ended either way
            log.warning("control plane: could not mark the run finished (%s); `veltrix-ray "
                        "status` shows it as running until its heartbeat ages out", exc)
