"""The lean record path (veltrix_ray.source.records) reads exactly what aiokafka's getmany
reads: same (partition, offset, key, value, timestamp) per partition, in order, on real Kafka,
for plain, compressed, transactional (read_committed) and compacted topics."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import aiokafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from veltrix_ray.config.schema import KafkaConfig
from veltrix_ray.source import records
from veltrix_ray.source.admin import ensure_topic
from veltrix_ray.source.kafka import KafkaSource

pytestmark = pytest.mark.timeout(300)

Row = tuple[int, bytes | None, bytes | None, int]  # offset, key, value, timestamp
Rows = dict[int, list[Row]]  # partition -> rows in the order read


def _topic() -> str:
    return f"t-rp-{uuid.uuid4().hex[:12]}"


def _record(i: int) -> tuple[bytes | None, bytes | None]:
    key = None if i % 11 == 0 and i % 29 != 3 else f"key-{i % 37}".encode()
    value = None if i % 29 == 3 else (b"" if i % 31 == 5 else f"value-{i}-".encode() * (i % 9))
    return key, value


async def _produce(bootstrap: str, topic: str, n: int, partitions: int = 1,
                   **options: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=4096, **options)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            key, value = _record(i)
            futures.append(await producer.send(
                topic, value, key=key, partition=i % partitions,
                timestamp_ms=1_700_000_000_000 + i if i % 3 else None,
                headers=[("h", b"x")] if i % 5 == 0 else None))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _consumer(bootstrap: str, **options: Any) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="none",
                                isolation_level="read_committed", **options)
    await consumer.start()
    return consumer


async def _reference(bootstrap: str, topic: str, partitions: int) -> Rows:
    """Everything committed in the topic, read by aiokafka's getmany."""
    consumer = await _consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        rows: Rows = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 60
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, "getmany did not reach the end"
            for tp, batch in (await consumer.getmany(*tps, timeout_ms=200)).items():
                rows[tp.partition] += [(r.offset, r.key, r.value, r.timestamp) for r in batch]
        return rows
    finally:
        await consumer.stop()


async def _lean(bootstrap: str, topic: str, partitions: int, max_records: int,
                batch_bytes: int = 1 << 20, start: dict[int, int | None] | None = None) -> Rows:
    """The same through KafkaSource on the lean path, checking each fetch's shape."""
    cfg = KafkaConfig(bootstrap=bootstrap, topic=topic, sasl_username=None, sasl_password=None,
                      fetch_wait_ms=100)
    source = await KafkaSource.open(cfg, batch_bytes, "test-lean")
    try:
        assert source._lean is not None, "the lean path is not in use"
        parts = list(range(partitions))
        await source.bind(start or dict.fromkeys(parts))
        ends = await source.end_offsets(parts)
        rows: Rows = {p: [] for p in parts}
        deadline = time.monotonic() + 60
        while any([await source.position(p) < ends[p] for p in parts]):
            assert time.monotonic() < deadline, "the lean path did not reach the end"
            f = await source.fetch(parts, max_records)
            assert len(f) <= max_records
            assert len(f.partitions) == len(f.offsets) == len(f.keys) == len(f.timestamps)
            assert sum(n for _, n in f.spans.values()) == len(f)
            for p, (first, n) in f.spans.items():
                assert f.partitions[first:first + n] == [p] * n
                span = slice(first, first + n)
                got = list(zip(f.offsets[span], f.keys[span], f.values[span],
                               f.timestamps[span], strict=True))
                rows[p] += got
                # the position is right after the last record returned (or past a gap)
                assert await source.position(p) >= got[-1][0] + 1
        for p in parts:
            assert await source.position(p) == ends[p]
        return rows
    finally:
        await source.close()


async def _same(bootstrap: str, topic: str, partitions: int = 1, *,
                expect: int | None = None, batch_bytes: int = 1 << 20) -> Rows:
    want = await _reference(bootstrap, topic, partitions)
    if expect is not None:
        assert sum(map(len, want.values())) == expect
    for max_records in (7, 100_000):
        got = await _lean(bootstrap, topic, partitions, max_records, batch_bytes)
        assert got == want, f"max_records={max_records}"
    return want


def test_plain_records_several_partitions_and_small_fetches(kafka_bootstrap: str) -> None:
    topic = _topic()

    async def go() -> None:
        await ensure_topic(kafka_bootstrap, topic, 3)
        await _produce(kafka_bootstrap, topic, 3000, partitions=3)
        want = await _same(kafka_bootstrap, topic, 3, expect=3000)
        assert all(len(rows) == 1000 for rows in want.values())
        # fetches capped by a few KiB of bytes still read everything, once
        assert await _lean(kafka_bootstrap, topic, 3, 50_000, batch_bytes=2048) == want

    asyncio.run(go())


@pytest.mark.parametrize("codec", ["gzip", "lz4", "snappy", "zstd"])
def test_compressed_batches(kafka_bootstrap: str, codec: str) -> None:
    topic = _topic()

    async def go() -> None:
        await ensure_topic(kafka_bootstrap, topic, 2)
        await _produce(kafka_bootstrap, topic, 2000, partitions=2, compression_type=codec)
        await _same(kafka_bootstrap, topic, 2, expect=2000)

    asyncio.run(go())


def test_seek_in_the_middle_of_a_batch(kafka_bootstrap: str) -> None:
    topic = _topic()

    async def go() -> None:
        await ensure_topic(kafka_bootstrap, topic, 1)
        await _produce(kafka_bootstrap, topic, 500, compression_type="gzip")
        want = (await _reference(kafka_bootstrap, topic, 1))[0]
        got = await _lean(kafka_bootstrap, topic, 1, 5, start={0: 123})
        assert got[0] == [r for r in want if r[0] >= 123]

    asyncio.run(go())


def test_transactional_producer_with_an_aborted_transaction(kafka_bootstrap: str) -> None:
    topic = _topic()

    async def go() -> None:
        await ensure_topic(kafka_bootstrap, topic, 2)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                    transactional_id=f"rp-{uuid.uuid4().hex[:8]}",
                                    linger_ms=10, max_batch_size=2048)
        await producer.start()
        try:
            for txn in range(6):
                await producer.begin_transaction()
                futures = [await producer.send(topic, f"txn{txn}-{i}".encode(),
                                               key=f"k{i}".encode(), partition=i % 2)
                           for i in range(40)]
                await asyncio.gather(*futures)
                if txn in (1, 4):
                    await producer.abort_transaction()
                else:
                    await producer.commit_transaction()
        finally:
            await producer.stop()
        want = await _same(kafka_bootstrap, topic, 2, expect=4 * 40)
        values = {v for rows in want.values() for _, _, v, _ in rows}
        assert values and not any(v and v.startswith((b"txn1-", b"txn4-")) for v in values)
        # offsets skip the aborted records and the transaction markers
        offsets = [o for o, *_ in want[0]]
        assert offsets[-1] - offsets[0] + 1 > len(offsets)

    asyncio.run(go())


async def _compacted_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "cleanup.policy": "compact", "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
            "min.compaction.lag.ms": "0"})])
    finally:
        await admin.close()


def test_compacted_topic_with_offset_gaps(kafka_bootstrap: str) -> None:
    topic = _topic()

    async def go() -> None:
        await _compacted_topic(kafka_bootstrap, topic)
        await ensure_topic(kafka_bootstrap, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
        await producer.start()
        try:
            # batches mixing keys written once with keys overwritten later: compaction
            # leaves gaps inside batches and may drop a batch's last record
            for rnd in range(4):
                futures = [await producer.send(
                    topic, f"r{rnd}-{i}".encode(),
                    key=(f"once-{rnd}-{i}" if i % 3 == 0 else f"dup-{i % 4}").encode())
                    for i in range(30)]
                await asyncio.gather(*futures)
                await asyncio.sleep(0.3)  # segments roll after segment.ms
            deadline = time.monotonic() + 120
            while True:  # the log cleaner runs every ~15 s
                await producer.send_and_wait(topic, b"tick", key=b"tick")
                offsets = [o for o, *_ in (await _reference(kafka_bootstrap, topic, 1))[0]]
                if any(b - a > 1 for a, b in zip(offsets[:-1], offsets[1:], strict=True)):
                    break
                assert time.monotonic() < deadline, "the broker did not compact the topic"
                await asyncio.sleep(2)
        finally:
            await producer.stop()
        # the cleaner may go on compacting while the paths read: compare reads of a log
        # that did not change between a reference read before and one after them
        for _ in range(20):
            want = await _reference(kafka_bootstrap, topic, 1)
            got = {n: await _lean(kafka_bootstrap, topic, 1, n) for n in (7, 100_000)}
            if await _reference(kafka_bootstrap, topic, 1) == want:
                break
            await asyncio.sleep(1)
        else:
            raise AssertionError("the broker kept compacting the topic for 20 rounds")
        for n, rows in got.items():
            assert rows == want, f"max_records={n}"
        keys = [k for _, k, _, _ in want[0]]
        assert any(k and k.startswith(b"once-0-") for k in keys)

    asyncio.run(go())


def test_untested_aiokafka_falls_back_to_getmany(kafka_bootstrap: str,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    topic = _topic()
    # the installed aiokafka stays as it is: the project's list of tested versions changes
    monkeypatch.setattr(records, "TESTED_AIOKAFKA", ("0.0.1",))
    monkeypatch.setattr(records, "_warned", False)

    async def go() -> None:
        await ensure_topic(kafka_bootstrap, topic, 1)
        await _produce(kafka_bootstrap, topic, 100)
        cfg = KafkaConfig(bootstrap=kafka_bootstrap, topic=topic, sasl_username=None,
                          sasl_password=None)
        source = await KafkaSource.open(cfg, 1 << 20, "test-fallback")
        try:
            assert source._lean is None
            await source.bind({0: None})
            n = 0
            while n < 100:
                n += len(await source.fetch([0], 1000))
            assert await source.position(0) == 100
        finally:
            await source.close()

    with caplog.at_level(logging.WARNING, logger=records.__name__):
        asyncio.run(go())
    assert (f"aiokafka {aiokafka.__version__} is not one of the tested versions "
            "('0.0.1',)") in caplog.text
