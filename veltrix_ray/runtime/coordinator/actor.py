"""The Coordinator Ray actor: a thin shell that wires Ownership (core.py) to Ray (RayPool),
PostgreSQL (the sink's claims and totals), Kafka (the partition count), the control plane
and the metrics, and sets the tables up before the run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.control.steering import Steering
from veltrix_ray.errors import ConfigError
from veltrix_ray.runtime.budget import Budget
from veltrix_ray.runtime.coordinator.core import Ownership
from veltrix_ray.runtime.coordinator.names import coordinator_name, worker_name
from veltrix_ray.runtime.coordinator.raypool import RayPool
from veltrix_ray.runtime.metrics import PipelineMetrics
from veltrix_ray.sink import make_sink
from veltrix_ray.source.admin import partition_count
from veltrix_ray.source.kafka import client_options
from veltrix_ray.transform import output_schema

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, settings: VeltrixConfig) -> None:
        s = settings
        self.settings = settings
        self._sink = make_sink(s, f"veltrix-ray coordinator {s.pipeline.name}")
        budget = Budget.derive(s.topology.memory_mb, s.topology.memory,
                               s.pipeline.max_record_bytes)
        self.pool = RayPool(s, budget, output_schema(s))
        self._steering: Steering | None = None  # veltrix_control: heartbeat, requests
        self.own = Ownership(s, self.pool, self._sink, self._partitions,
                             PipelineMetrics(s.pipeline.name), control=self._control,
                             request_resources=self._request_resources)

    async def run(self, first: list[Any] | None = None) -> dict[str, Any]:
        """`first`: workers the driver created (first_workers), without partitions yet."""
        s = self.settings
        # connecting to Kafka while the tables are set up
        workers = [None if actor is None else
                   self.pool.adopt(actor, worker_name(s.pipeline.name, i, 0), i)
                   for i, actor in enumerate(first or ())]
        count = await self._partitions()
        await asyncio.to_thread(self._sink.setup, self.pool.schema)
        self._steering = Steering(s, coordinator_name(s.pipeline.name))
        await asyncio.to_thread(self._steering.setup)
        self.own.ledger.baseline = await asyncio.to_thread(self._sink.totals)
        try:
            await self.own.run(workers, count)
            self.own.ledger.final = await asyncio.to_thread(self._sink.totals)
        finally:
            self._sink.close()
            ledger = self.own.ledger
            ledger.finished = ledger.finished or ledger.wall()
            if self._steering is not None:  # not running from now on, for `status`
                await self._steering.finish(self.own)
        return self.own.summary()

    async def stop(self) -> None:
        await self.own.stop()

    async def rescale(self, workers: int, why: str = "manual") -> dict[str, Any]:
        return await self.own.rescale(workers, why)

    def progress(self) -> dict[str, Any]:
        return self.own.progress()

    def worker_pids(self) -> dict[str, int]:
        return self.own.worker_pids()

    async def _control(self, own: Ownership) -> None:
        """Heartbeat and operators' requests (veltrix_ray/control), once per interval."""
        if self._steering is not None:
            await self._steering.tick(own)

    async def _partitions(self) -> int:
        s = self.settings
        count = await partition_count(s.kafka.bootstrap, s.kafka.topic,
                                      options=client_options(s.kafka))
        if count is None:
            raise ConfigError(f"Topic {s.kafka.topic!r} does not exist on {s.kafka.bootstrap}; "
                              "create it (e.g. `veltrix-ray produce --topic ...`) or fix "
                              "kafka.topic.")
        return count

    def _request_resources(self, workers: int) -> None:
        """On a cluster: tell Ray's autoscaler how many workers' resources to keep."""
        from veltrix_ray.config.ray_address import is_local

        topo = self.settings.topology
        if is_local(topo.address):
            return
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[{"CPU": topo.num_cpus}] * workers)
        except Exception as exc:  # noqa: BLE001 - no autoscaler on this cluster: nothing to ask
            log.info("request_resources(%d workers) not applied: %s", workers, exc)
