"""Synthetic event producer (``veltrix-ray produce``): the demo's and benchmarks' input.

Events are a pure function of ``(seed, index)``: the same seed always writes the same
records to the same partitions in the same order, so a pipeline run can be checked
against ``generate()`` record by record.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TextIO

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from veltrix_ray.source.admin import ensure_topic

BAD_SORTS = ("malformed_json", "wrong_type", "missing_field", "non_utf8", "oversized")
KINDS = ("view", "click", "cart", "purchase", "refund")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL")
COUNTRIES += ("SE", "JP", "BR", "IN", "CA", "AU", "MX", "CH")
USER_ID_BASE = 1_000_000
"""user_id = USER_ID_BASE + a number below ``users``; keys are str(user_id) in UTF-8."""
BASE_TS_US = 1_767_225_600_000_000
"""Event time of index 0 (2026-01-01T00:00:00Z); index i is i*1.024 ms later plus jitter
below that step, so event time grows with the index. Fixed rather than "now" so that a
seed fully determines the records."""
ENV_BOOTSTRAP = "VELTRIX_KAFKA_BOOTSTRAP"

_BLOCK = 1024
"""Events per RNG stream: event i depends on (seed, i // _BLOCK) only, so ``start`` is cheap."""
_STEP_US = 1024
# Each event gets four random 64-bit words: two for its UUID, one for the user, and one cut
# into the bit fields below (tables of 2**bits entries, so a field is one shift and mask).
_KIND_TABLE = ("view",) * 77 + ("click",) * 26 + ("cart",) * 13 + ("purchase",) * 10 + (
    "refund",
) * 2
_PRICED = frozenset({"cart", "purchase", "refund"})
_UTC_PLUS_ZERO = None
"""Marks the zone written as "+00:00" (msgspec writes every zero offset as "Z")."""
_ZONES = (
    timezone.utc,
    timezone.utc,
    timezone.utc,
    _UTC_PLUS_ZERO,
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
)
_PAYLOAD_POOL = 4096
_UUID_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_BATCH_BYTES = 512 * 1024
"""Per-partition batch; below the broker's default message.max.bytes (1 MiB)."""
_PROGRESS_EVERY_S = 0.2
_RATE_TICK_S = 0.05


class _Payload(msgspec.Struct, gc=False):
    page: str
    ab: str
    items: list[int]


class _BigPayload(msgspec.Struct, gc=False):
    page: str
    ab: str
    items: list[int]
    note: str


class _Event(msgspec.Struct, gc=False):
    """Field order here is the field order on the wire; msgspec writes UUID and datetime."""

    event_id: uuid.UUID
    ts: datetime | str
    user_id: int
    kind: str
    amount: float
    country: str
    payload: _Payload | _BigPayload


_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class Record:
    """One Kafka record as written: ``sort`` is "good" or one of BAD_SORTS."""

    key: bytes
    value: bytes
    sort: str
    event_id: str | None


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a key (Java client's murmur2, made positive)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _uuid4(bits: int, _new=object.__new__, _set=object.__setattr__) -> uuid.UUID:
    """uuid.UUID(int=bits, version=4) at a quarter of the cost (it was the hot loop's biggest
    item). It sets the same two slots that UUID.__init__ sets."""
    value = _new(uuid.UUID)
    _set(value, "int", bits & _UUID_MASK | _UUID4_BITS)
    _set(value, "is_safe", _SAFE_UNKNOWN)
    return value


def _payloads(seed: int) -> tuple[_Payload, ...]:
    """A per-seed pool of payloads: picking one costs one draw instead of five."""
    rng = random.Random(f"veltrix:{seed}:payloads")
    return tuple(
        _Payload(
            f"/p/{rng.randrange(1, 2001)}",
            rng.choice("AB"),
            [rng.randrange(100_000, 1_000_000) for _ in range(rng.randrange(4))],
        )
        for _ in range(_PAYLOAD_POOL)
    )


def _bad_value(sort: str, nth: int, event: _Event, good: bytes, oversize_bytes: int) -> bytes:
    """Corrupt a good event into ``sort``; ``nth`` varies the flavour within a sort."""
    encode = _ENCODER.encode
    replace = msgspec.structs.replace
    if sort == "malformed_json":
        return good[: len(good) // 2] if nth % 2 == 0 else good[:-1] + b",}"
    if sort == "wrong_type":
        if nth % 2 == 0:
            return encode(replace(event, user_id=f"u{event.user_id}"))
        return encode(replace(event, amount="abc"))
    if sort == "missing_field":
        fields = msgspec.structs.asdict(event)
        del fields["ts" if nth % 2 == 0 else "user_id"]
        return encode(fields)
    if sort == "non_utf8":
        return good.replace(b'"country":"', b'"country":"\xff\xfe', 1)
    payload = event.payload
    big = _BigPayload(payload.page, payload.ab, payload.items, "x" * oversize_bytes)
    return encode(replace(event, payload=big))


def _check(events: int, bad_fraction: float, users: int, start: int) -> None:
    """Reject arguments up front: generators would only raise at their first next()."""
    if events < 0 or start < 0:
        raise ValueError(f"events and start must be >= 0, got {events} and {start}")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1], got {bad_fraction}")
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")


def bad_counts(events: int, bad_fraction: float) -> dict[str, int]:
    """How many records of each bad sort generate(events, bad_fraction=...) yields."""
    n_bad = round(events * bad_fraction)
    return {
        sort: len(range(k, n_bad, len(BAD_SORTS))) for k, sort in enumerate(BAD_SORTS)
    }


def _bad_index(k: int, events: int, n_bad: int) -> int:
    """Index of the k-th bad record: the first j with floor((j+1)*n_bad/events) > k."""
    return ((k + 1) * events + n_bad - 1) // n_bad - 1


def _records(
    events: int,
    seed: int,
    bad_fraction: float,
    users: int,
    oversize_bytes: int,
    start: int,
    partitions: int,
) -> Iterator[tuple[int, bytes, bytes, str, uuid.UUID | None]]:
    """The hot loop behind generate() and produce(), yielding plain tuples
    (partition, key, value, sort, event_id); ``partitions=1`` skips the hashing.

    Randomness comes in bulk (one randbytes() per block, read as 64-bit words): per-event
    draws were the larger part of the cost. Words are read in the host's byte order, so
    the streams are the same on every little-endian machine.
    """
    n_bad = round(events * bad_fraction)
    bad_seen = 0
    next_bad = _bad_index(0, events, n_bad) if n_bad else -1
    encode = _ENCODER.encode
    from_ts = datetime.fromtimestamp
    utc = timezone.utc
    keys: list[bytes | None] = [None] * users
    partition_of = [0] * users
    payloads = _payloads(seed)
    kinds, priced, zones, countries = _KIND_TABLE, _PRICED, _ZONES, COUNTRIES
    j = 0
    while j < events:
        block, first = divmod(start + j, _BLOCK)
        count = min(_BLOCK - first, events - j)
        rng = random.Random(f"veltrix:{seed}:{block}")
        words = iter(memoryview(rng.randbytes(32 * _BLOCK)).cast("Q")[4 * first :].tolist())
        base_us = BASE_TS_US + (start + j) * _STEP_US
        quads = zip(range(count), words, words, words, words, strict=False)
        for step, id_high, id_low, user_word, bits in quads:
            u = user_word % users
            key = keys[u]
            if key is None:
                key = keys[u] = str(USER_ID_BASE + u).encode()
                partition_of[u] = partition_for(key, partitions) if partitions > 1 else 0
            zone = zones[bits >> 7 & 7]
            seconds = (base_us + step * _STEP_US + (bits >> 26 & 1023)) / 1e6
            kind = kinds[bits & 127]
            event = _Event(
                _uuid4(id_high << 64 | id_low),
                from_ts(seconds, utc).isoformat() if zone is None else from_ts(seconds, zone),
                USER_ID_BASE + u,
                kind,
                (100 + (bits >> 36) % 49_900) / 100 if kind in priced else 0.0,
                countries[bits >> 10 & 15],
                payloads[bits >> 14 & 4095],
            )
            value = encode(event)
            if j + step != next_bad:
                yield partition_of[u], key, value, "good", event.event_id
                continue
            sort = BAD_SORTS[bad_seen % len(BAD_SORTS)]
            bad_value = _bad_value(sort, bad_seen // len(BAD_SORTS), event, value, oversize_bytes)
            bad_seen += 1
            next_bad = _bad_index(bad_seen, events, n_bad) if bad_seen < n_bad else -1
            yield partition_of[u], key, bad_value, sort, None
        j += count


def generate(
    events: int,
    *,
    seed: int = 0,
    bad_fraction: float = 0.0,
    users: int = 10_000,
    oversize_bytes: int = 200_000,
    start: int = 0,
) -> Iterator[Record]:
    """Records ``start .. start+events-1`` of the seed's event stream.

    Exactly round(events * bad_fraction) of them are bad, evenly spaced, their sorts
    round-robin over BAD_SORTS (see bad_counts). A bad record replaces the good event of
    its index, so the good records are the same whatever ``bad_fraction`` is.
    """
    _check(events, bad_fraction, users, start)
    return (
        Record(key, value, sort, None if event_id is None else str(event_id))
        for _, key, value, sort, event_id in _records(
            events, seed, bad_fraction, users, oversize_bytes, start, 1
        )
    )


@dataclass
class ProduceReport:
    """What one produce() run wrote; ``elapsed_s`` covers writing up to the last ack."""

    topic: str
    partitions: int
    events: int
    good: int
    bad: dict[str, int]
    elapsed_s: float
    events_per_s: float
    per_partition: dict[int, int]
    value_bytes: int = 0

    def summary(self) -> str:
        """Human-readable report; the last line is the headline figure."""
        mb_per_s = self.value_bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0
        bad = " ".join(f"{sort}={n:,}" for sort, n in self.bad.items())
        spread = " ".join(f"{p}:{n:,}" for p, n in sorted(self.per_partition.items()))
        return "\n".join(
            (
                f"topic {self.topic}: {self.partitions} partitions",
                f"  good events: {self.good:,}",
                f"  bad records: {sum(self.bad.values()):,} ({bad})",
                f"  per partition: {spread}",
                f"  values: {self.value_bytes / 1e6:,.1f} MB, {mb_per_s:,.1f} MB/s",
                f"produced {self.events} events to {self.topic} in {self.elapsed_s:.2f}s: "
                f"{self.events_per_s:,.0f} events/s",
            )
        )


class _Writer:
    """One open batch per partition, shipped when full: aiokafka's batch API without the
    per-message future and coroutine that cap ``send()`` near 48k messages/s."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, partitions: int, progress: TextIO | None
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._builders = [producer.create_batch() for _ in range(partitions)]
        self._acks: deque[asyncio.Future] = deque()
        self._partition_of: dict[bytes, int] = {}
        self._progress = progress
        self._started = time.monotonic()
        self._shown = 0.0
        self.per_partition = [0] * partitions
        self.bad = dict.fromkeys(BAD_SORTS, 0)
        self.events = 0
        self.value_bytes = 0

    async def write(
        self, records: Iterator[tuple[bytes, bytes, str, uuid.UUID | None]], limit: int
    ) -> None:
        """Append the next ``limit`` records to their partitions' batches."""
        builders, partition_of, bad = self._builders, self._partition_of, self.bad
        partitions = self._partitions
        value_bytes = 0
        for n, (key, value, sort, _) in enumerate(itertools.islice(records, limit), 1):
            p = partition_of.get(key)
            if p is None:
                p = partition_of[key] = partition_for(key, partitions)
            if builders[p].append(timestamp=None, key=key, value=value) is None:
                await self._ship(p)
                # A batch's first record is always taken, however large.
                builders[p].append(timestamp=None, key=key, value=value)
            value_bytes += len(value)
            if sort != "good":
                bad[sort] += 1
            if n % 4096 == 0 and self._progress is not None:
                self._show(self.events + n)
        self.events += limit
        self.value_bytes += value_bytes
        if self._progress is not None:
            self._show(self.events)

    async def ship_all(self) -> None:
        """Send every non-empty batch now (end of run, or a rate-mode tick)."""
        for p, builder in enumerate(self._builders):
            if builder.record_count():
                await self._ship(p)

    async def wait_acks(self) -> None:
        """Wait until the broker acknowledged everything shipped; raise its first error."""
        await asyncio.gather(*self._acks)
        self._acks.clear()

    def finish_progress(self) -> None:
        """Leave the progress line complete and end it, so the summary starts afresh."""
        if self._progress is not None:
            self._show(self.events, force=True)
            self._progress.write("\n")
            self._progress.flush()

    async def _ship(self, p: int) -> None:
        builder = self._builders[p]
        builder.close()  # a closed batch skips linger_ms
        self.per_partition[p] += builder.record_count()
        self._builders[p] = self._producer.create_batch()
        self._acks.append(await self._producer.send_batch(builder, self._topic, partition=p))
        while self._acks and self._acks[0].done():
            self._acks.popleft().result()

    def _show(self, count: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._shown < _PROGRESS_EVERY_S:
            return
        self._shown = now
        rate = count / max(now - self._started, 1e-9)
        assert self._progress is not None
        self._progress.write(f"\rproduced {count:,} events, {rate:,.0f} events/s   ")
        self._progress.flush()


async def produce(
    bootstrap: str,
    topic: str,
    *,
    events: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    partitions: int = 8,
    seed: int = 0,
    bad_fraction: float = 0.0,
    progress: bool = False,
    oversize_bytes: int = 200_000,
    request_timeout_s: float = 30.0,
) -> ProduceReport:
    """Write ``events`` records as fast as possible, or ``rate`` records/s for ``duration`` s.

    The records are generate(total, seed=seed, bad_fraction=bad_fraction, ...) in order,
    each to Kafka's default partition of its key. The topic is created with
    ``partitions`` partitions if missing; an existing topic keeps its own count.
    """
    if (events is None) == (rate is None and duration is None):
        raise ValueError("give either events, or rate and duration")
    if events is not None:
        if events < 1:
            raise ValueError(f"events must be >= 1, got {events}")
        total = events
    else:
        if rate is None or duration is None or rate <= 0 or duration <= 0:
            raise ValueError(f"rate and duration must both be > 0, got {rate} and {duration}")
        total = max(1, round(rate * duration))
    records = _records(total, seed, bad_fraction, 10_000, oversize_bytes, 0)
    partitions = await ensure_topic(bootstrap, topic, partitions, timeout_s=request_timeout_s)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,  # broker-side retries must neither duplicate nor reorder
        linger_ms=5,
        max_batch_size=_BATCH_BYTES,
        max_request_size=max(_BATCH_BYTES, oversize_bytes) + 64 * 1024,
        compression_type=None,
        request_timeout_ms=max(1, int(request_timeout_s * 1000)),
    )
    await producer.start()
    try:
        writer = _Writer(producer, topic, partitions, sys.stderr if progress else None)
        started = time.monotonic()
        if rate is None:
            await writer.write(records, total)
        else:
            while writer.events < total:
                due = min(total, math.ceil(rate * (time.monotonic() - started)))
                if due > writer.events:
                    await writer.write(records, due - writer.events)
                    await writer.ship_all()
                else:
                    await asyncio.sleep(_RATE_TICK_S)
        await writer.ship_all()
        await writer.wait_acks()
        elapsed = time.monotonic() - started
        writer.finish_progress()
    finally:
        await producer.stop()
    bad = sum(writer.bad.values())
    return ProduceReport(
        topic=topic,
        partitions=partitions,
        events=writer.events,
        good=writer.events - bad,
        bad=writer.bad,
        elapsed_s=elapsed,
        events_per_s=writer.events / elapsed if elapsed > 0 else 0.0,
        per_partition=dict(enumerate(writer.per_partition)),
        value_bytes=writer.value_bytes,
    )
