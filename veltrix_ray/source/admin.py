"""Topic administration: create a topic if missing and read its partition count.

Reads go through a full-cluster metadata request on purpose: asking for one named topic
lets a broker with ``auto.create.topics.enable`` create it with the default partition
count, which would silently defeat ``ensure_topic``'s partition count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from veltrix_ray.source.security import explain

_POLL_S = 0.1


@asynccontextmanager
async def _admin(bootstrap: str, timeout_s: float,
                 options: Mapping[str, Any] | None = None) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed again even when starting it failed. `options`: extra
    client settings such as security_protocol, the SSL context and SASL credentials. A broker
    that refuses them raises KafkaSecurityError naming the key to change."""
    settings = {**(options or {}), "bootstrap_servers": bootstrap,
                "request_timeout_ms": max(1, int(timeout_s * 1000))}
    client = AIOKafkaAdminClient(**settings)
    try:
        try:
            await client.start()
        except KafkaConnectionError as exc:
            problem = await explain(bootstrap, settings)
            if problem is not None:
                raise problem from exc
            raise
        yield client
    finally:
        await client.close()


async def _describe(client: AIOKafkaAdminClient, topic: str) -> dict[str, Any] | None:
    """The topic's metadata entry, or None when the cluster does not know it."""
    entry: dict[str, Any]
    for entry in await client.describe_topics():
        if entry["topic"] == topic and entry["error_code"] == 0:
            return entry
    return None


def _ready(entry: dict[str, Any] | None) -> int | None:
    """The partition count once every partition has a leader (producers can write)."""
    if entry is None or not entry["partitions"]:
        return None
    if any(p["error_code"] != 0 or p["leader"] < 0 for p in entry["partitions"]):
        return None
    return len(entry["partitions"])


async def partition_count(bootstrap: str, topic: str, *, timeout_s: float = 30.0,
                          options: Mapping[str, Any] | None = None) -> int | None:
    """Number of partitions of ``topic``, or None if it does not exist (never creates it)."""
    async with _admin(bootstrap, timeout_s, options) as client:
        entry = await _describe(client, topic)
    return None if entry is None else len(entry["partitions"])


async def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    replication: int = 1,
    *,
    timeout_s: float = 30.0,
) -> int:
    """Create ``topic`` if missing and wait until all its partitions have a leader.

    Returns the partition count. An existing topic with another count is kept as it is
    (its count is returned): repartitioning would move keys between partitions.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    async with _admin(bootstrap, timeout_s) as client:
        if await _describe(client, topic) is None:
            response = await client.create_topics(
                [NewTopic(topic, partitions, replication)],
                timeout_ms=max(1, int(timeout_s * 1000)),
            )
            for name, code, *rest in response.topic_errors:
                error = for_code(code)
                if name == topic and code != 0 and error is not TopicAlreadyExistsError:
                    message = rest[0] if rest and rest[0] else error.__name__
                    raise error(f"cannot create topic {topic!r}: {message}")
        deadline = time.monotonic() + timeout_s
        while True:
            count = _ready(await _describe(client, topic))
            if count is not None:
                return count
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"topic {topic!r} has no leader for all partitions after {timeout_s:.0f}s"
                )
            await asyncio.sleep(_POLL_S)
