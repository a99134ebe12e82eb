"""A lean read of aiokafka's fetched record batches: offsets, keys, values and timestamps go
straight into lists, without aiokafka's per-record `ConsumerRecord` (in profiles ~30 % of a
worker's CPU). Batches are still parsed and decompressed by aiokafka's own readers (its C
extension when built).

A thin layer over the internals of aiokafka's `Fetcher` (its buffered `FetchResult` /
`PartitionRecords`), mirroring `Fetcher.fetched_records` and `PartitionRecords._unpack_records`:
same checksums, read_committed filtering (aborted transactions, control batches), offset gaps
and position updates. Pinned to the aiokafka versions it was tested with; on any other,
`lean_reader` returns None and the caller uses `getmany`."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import aiokafka
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, CorruptRecordException

log = logging.getLogger(__name__)

TESTED_AIOKAFKA = ("0.14.0",)
READ_COMMITTED = 1  # aiokafka.consumer.fetcher.READ_COMMITTED

_offset = attrgetter("offset")
_key = attrgetter("key")
_value = attrgetter("value")
_timestamp = attrgetter("timestamp")


@dataclass
class Columns:
    """Records of several partitions, column-wise; each partition's records contiguous."""

    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets)


def unsupported(consumer: AIOKafkaConsumer) -> str | None:
    """Why the lean path cannot read this consumer's fetches (None: it can)."""
    version = aiokafka.__version__
    if version not in TESTED_AIOKAFKA:
        return f"aiokafka {version} is not one of the tested versions {TESTED_AIOKAFKA}"
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return "the consumer is not started"
    if fetcher._key_deserializer or fetcher._value_deserializer:
        return "the consumer has deserializers"
    return None


def lean_reader(consumer: AIOKafkaConsumer) -> LeanReader | None:
    """A LeanReader of a started consumer, or None (logged once) when aiokafka's internals
    are not the tested ones."""
    why = unsupported(consumer)
    if why is not None:
        global _warned
        if not _warned:
            log.warning("Kafka records are read through aiokafka's getmany (slower): %s", why)
            _warned = True
        return None
    return LeanReader(consumer)


_warned = False


class _Batches:
    """The not yet returned records of one PartitionRecords, a record batch at a time. Keeps
    `next_fetch_offset` exactly where aiokafka's own iterator would put it."""

    __slots__ = ("pr", "offsets", "keys", "values", "stamps", "at", "batch_next", "done")

    def __init__(self, pr: Any) -> None:
        self.pr = pr
        self.offsets: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.stamps: list[int] = []
        self.at = 0
        self.batch_next = 0
        self.done = False

    def take(self, cap: int, out: Columns) -> int:
        """Append up to `cap` records to `out`; returns how many."""
        pr = self.pr
        n = 0
        while True:
            left = len(self.offsets) - self.at
            if left:
                k = min(cap - n, left)
                if k <= 0:
                    break
                at, end = self.at, self.at + k
                out.offsets += self.offsets[at:end]
                out.keys += self.keys[at:end]
                out.values += self.values[at:end]
                out.timestamps += self.stamps[at:end]
                n += k
                self.at = end
                if k < left:
                    pr.next_fetch_offset = self.offsets[end - 1] + 1
                    break
                # the batch's last offset may have been compacted away: go past it
                pr.next_fetch_offset = self.batch_next
            if n >= cap:
                self.done = not pr._records.has_next()
                break
            if not self._load():
                self.done = True
                break
        return n

    def _load(self) -> bool:
        """Read the next batch with records to return (False: none left)."""
        pr = self.pr
        records = pr._records
        while records.has_next():
            batch = records.next_batch()
            if pr._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {pr._tp}")
            if pr._isolation_level == READ_COMMITTED and batch.producer_id is not None:
                pr._consume_aborted_up_to(batch.base_offset)
                if batch.is_control_batch and pr._contains_abort_marker(batch):
                    pr._aborted_producers.discard(batch.producer_id)
                if batch.is_transactional and batch.producer_id in pr._aborted_producers:
                    pr.next_fetch_offset = batch.next_offset
                    continue
            if batch.is_control_batch:
                pr.next_fetch_offset = batch.next_offset
                continue
            recs = list(batch)
            offsets = list(map(_offset, recs))
            # a fetch from the middle of a batch gets the whole batch: skip what was read
            skip = bisect.bisect_left(offsets, pr.next_fetch_offset) if offsets else 0
            if skip:
                recs = recs[skip:]
                offsets = offsets[skip:]
            if not recs:
                pr.next_fetch_offset = batch.next_offset
                continue
            self.offsets = offsets
            self.keys = list(map(_key, recs))
            self.values = list(map(_value, recs))
            self.stamps = list(map(_timestamp, recs))
            self.at = 0
            self.batch_next = batch.next_offset
            return True
        return False


class LeanReader:
    """`getmany` for a consumer with no deserializers, returning columns instead of
    ConsumerRecords. Seek, pause, position and highwater stay aiokafka's own."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.fetcher = consumer._fetcher

    async def getmany(self, partitions: Collection[TopicPartition], timeout_ms: int,
                      max_records: int) -> Columns:
        consumer = self.consumer
        if consumer._closed:
            raise ConsumerStoppedError()
        if max_records < 1:
            raise ValueError("`max_records` must be a positive Integer")
        consumer._coordinator.check_errors()
        out = Columns()
        with consumer._subscription.fetch_context():
            await self._fetched(set(partitions), timeout_ms / 1000, max_records, out)
        return out

    async def _fetched(self, partitions: set[TopicPartition], timeout: float, max_records: int,
                       out: Columns) -> None:
        """Fetcher.fetched_records, draining into `out`."""
        from aiokafka.consumer.fetcher import FetchResult

        fetcher = self.fetcher
        subscriptions = fetcher._subscriptions
        buffered = fetcher._records
        while True:
            if subscriptions.reassignment_in_progress:
                await subscriptions.wait_for_assignment()
            start = time.monotonic()
            for tp in list(buffered.keys()):
                if tp not in partitions:
                    if not subscriptions.is_assigned(tp):
                        del buffered[tp]
                    continue
                result = buffered[tp]
                if type(result) is FetchResult:
                    first = len(out)
                    try:
                        n = self._drain(tp, result, max_records - first, out)
                    except CorruptRecordException:
                        # like aiokafka: the batch is fetched again from the same position
                        del out.offsets[first:], out.keys[first:], out.values[first:]
                        del out.timestamps[first:]
                        del buffered[tp]
                        fetcher._notify(fetcher._wait_consume_future)
                        raise
                    if not result.has_more():
                        del buffered[tp]  # all consumed: the prefetcher may fetch anew
                        fetcher._notify(fetcher._wait_consume_future)
                    if n:
                        out.partitions += [tp.partition] * n
                        out.spans[tp.partition] = (first, n)
                        if len(out) >= max_records:
                            break
                elif len(out):
                    return  # the error is raised by the next call
                else:
                    del buffered[tp]
                    fetcher._notify(fetcher._wait_consume_future)
                    result.check_raise()
            if len(out) or not timeout:
                return
            waiter = fetcher._create_fetch_waiter()
            done, pending = await asyncio.wait([waiter], timeout=timeout)
            if not done or fetcher._closed:
                for fut in pending:
                    fut.cancel()
                return
            if waiter.done():
                waiter.result()  # authorization and other fetch errors
            timeout = max(0.0, timeout - (time.monotonic() - start))

    @staticmethod
    def _drain(tp: TopicPartition, result: Any, cap: int, out: Columns) -> int:
        """FetchResult.getall, into `out`."""
        if not result.check_assignment(tp) or not result.has_more():
            return 0
        pr = result._partition_records
        batches = pr.__dict__.get("_veltrix_batches")
        if batches is None:
            batches = pr._veltrix_batches = _Batches(pr)
        n: int = batches.take(cap, out)
        result._update_position()
        if batches.done:
            result._partition_records = None
        return n
