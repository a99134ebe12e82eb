"""A Kafka consumer bound to an explicit partition set: no consumer group, no rebalances."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from veltrix_ray.config.schema import KafkaConfig
from veltrix_ray.errors import ConfigError


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection settings shared by consumers and admin clients (credentials from env)."""
    opts: dict[str, Any] = {"bootstrap_servers": cfg.bootstrap,
                            "security_protocol": cfg.security_protocol,
                            "request_timeout_ms": cfg.request_timeout_ms}
    if cfg.sasl_mechanism:
        opts.update(sasl_mechanism=cfg.sasl_mechanism, sasl_plain_username=cfg.sasl_username,
                    sasl_plain_password=cfg.sasl_password)
    return opts


async def open_consumer(cfg: KafkaConfig, batch_bytes: int, client_id: str) -> AIOKafkaConsumer:
    """A started consumer; a broker that is briefly away (restarting) is waited for, up to
    kafka.connect_timeout_s."""
    deadline = time.monotonic() + cfg.connect_timeout_s
    delay = 0.5
    while True:
        consumer = AIOKafkaConsumer(
            **client_options(cfg), client_id=client_id, group_id=None,
            enable_auto_commit=False, auto_offset_reset="none",
            isolation_level="read_committed", fetch_max_bytes=batch_bytes,
            max_partition_fetch_bytes=batch_bytes, fetch_max_wait_ms=cfg.fetch_wait_ms)
        try:
            await consumer.start()
            return consumer
        except KafkaConnectionError:
            await consumer.stop()
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


def parse_start(start: str) -> str | int:
    """earliest | latest | an ISO-8601 timestamp (-> epoch milliseconds)."""
    if start in ("earliest", "latest"):
        return start
    try:
        ts = dt.datetime.fromisoformat(start)
    except ValueError as exc:
        raise ConfigError(f"kafka.start={start!r} is not earliest, latest or an ISO-8601 "
                          "timestamp such as 2026-11-26T00:00:00+00:00.") from exc
    if ts.tzinfo is None:
        raise ConfigError(f"kafka.start={start!r} has no time zone; add one, e.g. +00:00.")
    return int(ts.timestamp() * 1000)


async def start_offsets(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition],
                        start: str) -> dict[TopicPartition, int]:
    """Where partitions with no stored offset begin."""
    where = parse_start(start)
    if where == "earliest":
        return dict(await consumer.beginning_offsets(list(tps)))
    ends = dict(await consumer.end_offsets(list(tps)))
    if where == "latest":
        return ends
    found = await consumer.offsets_for_times({tp: where for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}
