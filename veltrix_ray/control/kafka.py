"""What the operator verbs ask Kafka: the topic's partitions and their offsets (beginning,
end, or the first at a time), with the pipeline's own client settings."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from veltrix_ray.config.schema import KafkaConfig
from veltrix_ray.errors import ConfigError
from veltrix_ray.source.admin import partition_count
from veltrix_ray.source.kafka import client_options, start_offsets


async def topic_partitions(cfg: KafkaConfig) -> int:
    count = await partition_count(cfg.bootstrap, cfg.topic, options=client_options(cfg),
                                  timeout_s=max(1.0, cfg.request_timeout_ms / 1000))
    if count is None:
        raise ConfigError(f"Topic {cfg.topic!r} does not exist on {cfg.bootstrap}; check "
                          "kafka.topic.")
    return count


async def offsets_at(cfg: KafkaConfig, wheres: list[str]) -> tuple[int, list[dict[int, int]]]:
    """The partition count and, per entry of `wheres` (earliest | latest | an ISO-8601
    timestamp), each partition's offset there; a time after the last record: the end."""
    count = await topic_partitions(cfg)
    consumer = AIOKafkaConsumer(**client_options(cfg), group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", client_id="veltrix-ray-cli")
    await consumer.start()
    try:
        tps = [TopicPartition(cfg.topic, p) for p in range(count)]
        out = []
        for where in wheres:
            found = await start_offsets(consumer, tps, where)
            out.append({tp.partition: int(offset) for tp, offset in found.items()})
        return count, out
    finally:
        await consumer.stop()
