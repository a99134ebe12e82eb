"""A Kafka consumer bound to an explicit partition set: no consumer group, no rebalances."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from veltrix_ray.config.parse import parse_start
from veltrix_ray.config.schema import SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaConfig
from veltrix_ray.contracts import Fetched
from veltrix_ray.source.records import lean_reader
from veltrix_ray.source.security import explain, ssl_context
from veltrix_ray.source.waits import BrokerWait, broker_wait


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection settings shared by consumers and admin clients (credentials from env).
    Raises KafkaSecurityError naming the kafka.ssl key of a file that cannot be loaded."""
    opts: dict[str, Any] = {"bootstrap_servers": cfg.bootstrap,
                            "security_protocol": cfg.security_protocol,
                            "request_timeout_ms": cfg.request_timeout_ms}
    if cfg.security_protocol in TLS_PROTOCOLS:
        opts["ssl_context"] = ssl_context(cfg.ssl)
    if cfg.security_protocol in SASL_PROTOCOLS:
        opts.update(sasl_mechanism=cfg.sasl_mechanism, sasl_plain_username=cfg.sasl_username,
                    sasl_plain_password=cfg.sasl_password)
    return opts


async def open_consumer(cfg: KafkaConfig, batch_bytes: int, client_id: str) -> AIOKafkaConsumer:
    """A started consumer; a broker that is briefly away (restarting) is waited for, up to
    kafka.connect_timeout_s."""
    deadline = time.monotonic() + cfg.connect_timeout_s
    delay = 0.5
    options = client_options(cfg)
    while True:
        consumer = AIOKafkaConsumer(
            **options, client_id=client_id, group_id=None,
            enable_auto_commit=False, auto_offset_reset="none",
            isolation_level="read_committed", fetch_max_bytes=batch_bytes,
            max_partition_fetch_bytes=batch_bytes, fetch_max_wait_ms=cfg.fetch_wait_ms)
        try:
            await consumer.start()
            return consumer
        except KafkaConnectionError as exc:
            await consumer.stop()
            # an untrusted certificate or refused credentials do not pass by waiting
            problem = await explain(cfg.bootstrap, options)
            if problem is not None:
                raise problem from exc
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def close_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop the consumer. aiokafka re-raises the CancelledError of a fetch it cancels while
    that fetch waits to retry (a broker was away); only our own cancellation may pass."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and getattr(task, "cancelling", lambda: 0)():
            raise


async def start_offsets(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition],
                        start: str) -> dict[TopicPartition, int]:
    """Where partitions with no stored offset begin."""
    where = parse_start(start)
    if where == "earliest":
        return dict(await consumer.beginning_offsets(list(tps)))
    ends = dict(await consumer.end_offsets(list(tps)))
    if where == "latest":
        return ends
    found = await consumer.offsets_for_times(dict.fromkeys(tps, where))
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}


class KafkaSource:
    """PartitionSource over aiokafka: exactly the bound partitions of one topic, read from
    offsets stored elsewhere (PostgreSQL), so there is no consumer group to rebalance.
    Records are read by the lean path (veltrix_ray.source.records) where aiokafka's version
    allows it (`lean=False`: always `getmany`)."""

    def __init__(self, cfg: KafkaConfig, consumer: AIOKafkaConsumer, lean: bool = True,
                 wait: BrokerWait | None = None) -> None:
        self.cfg = cfg
        self.consumer = consumer
        self.wait = wait
        self._tps: dict[int, TopicPartition] = {}
        self._paused: set[TopicPartition] = set()
        # benchmark-only, not a setting (no pipeline wants the slower path, so no config key):
        # benchmarks/pipeline.py measures the previous path with VELTRIX_RECORD_PATH=getmany
        lean = lean and os.environ.get("VELTRIX_RECORD_PATH") != "getmany"
        self._lean = lean_reader(consumer) if lean else None

    @classmethod
    async def open(cls, cfg: KafkaConfig, batch_bytes: int, client_id: str,
                   lean: bool = True) -> KafkaSource:
        wait = broker_wait(client_id, cfg.bootstrap)
        return cls(cfg, await open_consumer(cfg, batch_bytes, client_id), lean, wait)

    async def bind(self, positions: Mapping[int, int | None]) -> dict[int, int]:
        self._tps = {p: TopicPartition(self.cfg.topic, p) for p in positions}
        self.consumer.assign(list(self._tps.values()))
        self._paused = set()
        fresh = [self._tps[p] for p, offset in positions.items() if offset is None]
        starts = await start_offsets(self.consumer, fresh, self.cfg.start) if fresh else {}
        out = {}
        for p, offset in positions.items():
            out[p] = starts[self._tps[p]] if offset is None else offset
            self.consumer.seek(self._tps[p], out[p])
        return out

    async def fetch(self, partitions: Sequence[int], max_records: int) -> Fetched:
        wanted = {self._tps[p] for p in partitions}
        # partitions that are done or stopped: no prefetching of them either
        idle = [tp for tp in self._tps.values() if tp not in wanted and tp not in self._paused]
        if idle:
            self.consumer.pause(*idle)
            self._paused.update(idle)
        if not wanted:
            return Fetched([], [], [], [], [], topic=self.cfg.topic)
        fetched = await self._fetch(wanted, max_records)
        if len(fetched) and self.wait is not None:
            self.wait.answered()
        return fetched

    async def _fetch(self, wanted: set[TopicPartition], max_records: int) -> Fetched:
        if self._lean is not None:
            c = await self._lean.getmany(wanted, self.cfg.fetch_wait_ms, max_records)
            return Fetched(c.partitions, c.offsets, c.keys, c.values, c.timestamps, c.spans,
                           self.cfg.topic)
        data = await self.consumer.getmany(*wanted, timeout_ms=self.cfg.fetch_wait_ms,
                                           max_records=max_records)
        parts: list[int] = []
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        stamps: list[int] = []
        spans: dict[int, tuple[int, int]] = {}
        for tp, records in data.items():
            if not records:
                continue
            spans[tp.partition] = (len(parts), len(records))
            parts += [tp.partition] * len(records)
            offsets += [r.offset for r in records]
            keys += [r.key for r in records]
            values += [r.value for r in records]
            stamps += [r.timestamp for r in records]
        return Fetched(parts, offsets, keys, values, stamps, spans, self.cfg.topic)

    def high_watermark(self, partition: int) -> int | None:
        return self.consumer.highwater(self._tps[partition])  # type: ignore[no-any-return]

    async def end_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        ends = await self.consumer.end_offsets([self._tps[p] for p in partitions])
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def position(self, partition: int) -> int:
        return int(await self.consumer.position(self._tps[partition]))

    async def close(self) -> None:
        await close_consumer(self.consumer)
