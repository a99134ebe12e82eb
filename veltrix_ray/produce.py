"""Synthetic event producer (``veltrix-ray produce``): the demo's and benchmarks' input.

A good event is a pure function of ``(seed, index)``, and which indices are bad depends
only on the run's length and bad fraction: the same arguments always write the same
records to the same partitions in the same order, so a pipeline's output can be checked
against ``generate()`` record by record. The event is written as JSON, or as Avro or
Protobuf in the Confluent wire format (magic byte 0, the 4-byte big-endian schema id that
a schema registry gave, for Protobuf the message indexes, then the encoded event).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import math
import os
import random
import struct
import sys
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, TextIO

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import murmur2

from veltrix_ray.errors import VeltrixError
from veltrix_ray.source.admin import ensure_topic

FORMATS = ("json", "avro", "protobuf")
BAD_SORTS = ("malformed_json", "wrong_type", "missing_field", "non_utf8", "oversized")
"""The JSON format's bad sorts."""
REGISTRY_BAD_SORTS = ("wrong_magic", "unknown_id", "truncated", "trailing")
"""The bad sorts of the registry formats (avro, protobuf): a wrong framing byte (1, as if
the id were in the headers), an id the registry does not have, the encoded event cut short,
bytes after it. The JSON sorts do not carry over: a wrong type or a missing field would take a
second writer schema, and whether a string that is not UTF-8 is refused is the decoder's
choice."""
UNKNOWN_SCHEMA_ID = 2**31 - 1
"""The id of ``unknown_id`` records: the largest a registry hands out, so never reached."""
KINDS = ("view", "click", "cart", "purchase", "refund")
COUNTRIES: tuple[str, ...] = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL")
COUNTRIES += ("SE", "JP", "BR", "IN", "CA", "AU", "MX", "CH")
USER_ID_BASE = 1_000_000
"""user_id = USER_ID_BASE + a number below ``users``; keys are str(user_id) in UTF-8."""
BASE_TS_US = 1_767_225_600_000_000
"""Event time of index 0 (2026-01-01T00:00:00Z); index i is i*1.024 ms later plus jitter
below that step, so event time grows with the index. Fixed rather than "now" so that a
seed fully determines the records."""
ENV_BOOTSTRAP = "VELTRIX_KAFKA_BOOTSTRAP"
ENV_REGISTRY = "VELTRIX_SCHEMA_REGISTRY_URL"
SCHEMA_FILES = {"avro": "standard_event.avsc", "protobuf": "standard_event.proto"}
"""The standard event's schema per registry format, in veltrix_ray/formats."""
REGISTRY_TYPES = {"avro": "AVRO", "protobuf": "PROTOBUF"}

_BLOCK = 1024
"""Events per RNG stream: event i depends on (seed, i // _BLOCK) only, so ``start`` is cheap."""
_STEP_US = 1024
# Each event gets four random 64-bit words: two for its UUID, one for the user, and one cut
# into the bit fields below (tables of 2**bits entries, so a field is one shift and mask).
_KIND_TABLE = (
    ("view",) * 77 + ("click",) * 26 + ("cart",) * 13 + ("purchase",) * 10 + ("refund",) * 2
)
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
_USERS = 10_000
_UUID_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_BATCH_BYTES = 512 * 1024
"""Per-partition batch; below the broker's default message.max.bytes (1 MiB)."""
_PROGRESS_EVERY_S = 0.2
_RATE_TICK_S = 0.05
_CHUNK = 16_384
# a chunk's values stay about this size when events carry a large payload (--payload-bytes)
_CHUNK_BYTES = 64 * 2**20
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
# text that compresses well, as logs, HTML or repeated JSON in real payloads do
_FILLER_TEXT = "veltrix standard event payload note: lorem ipsum dolor sit amet. "
"""Records generated per step."""


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
    """One Kafka record as written: ``sort`` is "good" or one of bad_sorts(format)."""

    key: bytes
    value: bytes
    sort: str
    event_id: str | None


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a key (Java client's murmur2, made positive)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class _Spec:
    """Everything that determines a run's records."""

    events: int
    seed: int = 0
    bad_fraction: float = 0.0
    users: int = _USERS
    oversize_bytes: int = 200_000
    start: int = 0
    partitions: int = 1
    """1 skips the murmur2 hashing when the caller has no use for partitions."""
    format: str = "json"
    schema_id: int = 1
    """The registry's id of the schema, framed into each record of a registry format."""
    payload_bytes: int = 0
    """>0: each good JSON event's payload carries a compressible `note` of this many bytes."""

    def __post_init__(self) -> None:
        # Checked here, not in the generators, which would only raise at their first next().
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not 0 <= self.schema_id < 2**31:
            raise ValueError(f"schema_id must be in [0, 2**31), got {self.schema_id}")
        if self.events < 0 or self.start < 0:
            raise ValueError(f"events and start must be >= 0, got {self.events}, {self.start}")
        if not 0.0 <= self.bad_fraction <= 1.0:
            raise ValueError(f"bad_fraction must be in [0, 1], got {self.bad_fraction}")
        if self.users < 1 or self.partitions < 1:
            raise ValueError(f"users and partitions must be >= 1: {self.users}, {self.partitions}")
        if self.payload_bytes < 0 or (self.payload_bytes and self.format != "json"):
            raise ValueError(f"payload_bytes must be >= 0, and applies to json only: got "
                             f"{self.payload_bytes} with format {self.format}")

    @property
    def chunk(self) -> int:
        """Events generated at once: _CHUNK, fewer when they are large."""
        return max(1, min(_CHUNK, _CHUNK_BYTES // max(self.payload_bytes, 1)))


def _uuid4(bits: int, _new: Any = object.__new__, _set: Any = object.__setattr__) -> uuid.UUID:
    """uuid.UUID(int=bits, version=4) at a quarter of the cost (it was the hot loop's biggest
    item). It sets the same two slots that UUID.__init__ sets."""
    value: uuid.UUID = _new(uuid.UUID)
    _set(value, "int", bits & _UUID_MASK | _UUID4_BITS)
    _set(value, "is_safe", _SAFE_UNKNOWN)
    return value


@functools.lru_cache(maxsize=4)
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


@functools.lru_cache(maxsize=4)
def _user_cache(users: int, partitions: int) -> tuple[list[bytes | None], list[int]]:
    """Each user's key and partition, filled in as users turn up and kept for the process:
    murmur2 in Python costs microseconds, and a run is generated in many slices."""
    return [None] * users, [0] * users


def schema_text(format: str) -> str:
    """The standard event's schema for a registry format, as registered."""
    return (resources.files("veltrix_ray") / "formats" / SCHEMA_FILES[format]).read_text("utf-8")


def _uuid4_text(high: int, low: int) -> str:
    """str(_uuid4(high << 64 | low)) without the UUID."""
    h = ((high << 64 | low) & _UUID_MASK | _UUID4_BITS).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _varint(n: int) -> bytes:
    """Unsigned LEB128, as Avro and Protobuf write integers."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _varint8(n: int) -> bytes:
    """_varint(n) for 2**49 <= n < 2**56, where it is always 8 bytes: one expression."""
    return (
        n & 0x7F
        | n << 1 & 0x7F00
        | n << 2 & 0x7F_0000
        | n << 3 & 0x7F00_0000
        | n << 4 & 0x7F_0000_0000
        | n << 5 & 0x7F00_0000_0000
        | n << 6 & 0x7F_0000_0000_0000
        | n << 7 & 0x7F00_0000_0000_0000
        | 0x80_8080_8080_8080
    ).to_bytes(8, "little")


def _varint5(n: int) -> bytes:
    """_varint(n) for 2**28 <= n < 2**35 (5 bytes)."""
    return (
        n & 0x7F
        | n << 1 & 0x7F00
        | n << 2 & 0x7F_0000
        | n << 3 & 0x7F00_0000
        | n << 4 & 0x7F_0000_0000
        | 0x8080_8080
    ).to_bytes(5, "little")


def _avro_long(n: int) -> bytes:
    return _varint(n << 1 if n >= 0 else ~n << 1 | 1)  # zigzag


def _avro_string(text: str) -> bytes:
    data = text.encode()
    return _avro_long(len(data)) + data


_TS_8_BYTES = range(2**48, 2**55)
"""Event times (µs) whose Avro long takes 8 bytes: all of them, until the year 3111."""
_Binary = Callable[[str, int, int, str, float, int, int], bytes]
"""(event_id, ts_us, user_id, kind, amount, country index, payload index) -> framed record."""


@functools.lru_cache(maxsize=4)
def _avro_encoder(seed: int, schema_id: int) -> _Binary:
    """The standard event (standard_event.avsc) in Avro binary, framed. Hand-written for
    this one schema: the same bytes as fastavro.schemaless_writer at 5x its rate."""
    header = b"\x00" + schema_id.to_bytes(4, "big") + _avro_long(36)  # + event_id's length
    kinds = {kind: _avro_long(i) for i, kind in enumerate(KINDS)}  # enum Kind: KINDS' order
    countries = [_avro_string(country) for country in COUNTRIES]
    payloads = [  # union branch 1, the record; items as one block, then the end block
        b"".join(
            (b"\x02", _avro_string(p.page), _avro_string(p.ab))
            + ((_avro_long(len(p.items)), *map(_avro_long, p.items)) if p.items else ())
            + (b"\x00",)
        )
        for p in _payloads(seed)
    ]
    users: dict[int, bytes] = {}
    pack_double = struct.Struct("<d").pack
    join = b"".join

    def encode(
        eid: str, ts_us: int, user_id: int, kind: str, amount: float, country: int, payload: int
    ) -> bytes:
        user = users.get(user_id)
        if user is None:
            user = users[user_id] = _avro_long(user_id)
        ts = _varint8(ts_us << 1) if ts_us in _TS_8_BYTES else _avro_long(ts_us)
        return join(
            (
                header,
                eid.encode(),
                ts,
                user,
                kinds[kind],
                pack_double(amount),
                countries[country],
                payloads[payload],
            )
        )

    return encode


def _pb_bytes(number: int, data: bytes) -> bytes:
    """A length-delimited Protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


@functools.lru_cache(maxsize=4)
def _protobuf_encoder(seed: int, schema_id: int) -> _Binary:
    """The standard event as message Event of standard_event.proto (message index [0]),
    framed. Hand-written for this one message, the same bytes as the protobuf library's
    message classes at several times their rate: fields in number order, proto3 defaults
    (a zero amount or nanos) left out."""
    header = b"\x00" + schema_id.to_bytes(4, "big") + b"\x00" + b"\x0a\x24"  # + event_id
    kinds = {kind: _pb_bytes(4, kind.encode()) for kind in KINDS}
    countries = [_pb_bytes(6, country.encode()) for country in COUNTRIES]
    payloads = [  # message Payload; items packed
        _pb_bytes(
            7,
            _pb_bytes(1, p.page.encode())
            + _pb_bytes(2, p.ab.encode())
            + (_pb_bytes(3, b"".join(map(_varint, p.items))) if p.items else b""),
        )
        for p in _payloads(seed)
    ]
    users: dict[int, bytes] = {}
    seconds_field: dict[int, bytes] = {}
    pack_amount = struct.Struct("<Bd").pack
    join, varint = b"".join, _varint

    def encode(
        eid: str, ts_us: int, user_id: int, kind: str, amount: float, country: int, payload: int
    ) -> bytes:
        user = users.get(user_id)
        if user is None:
            user = users[user_id] = b"\x18" + _varint(user_id)
        seconds, micros = divmod(ts_us, 1_000_000)
        second = seconds_field.get(seconds)
        if second is None:
            second = seconds_field[seconds] = b"\x08" + varint(seconds)
        if micros >= 268_436:  # nanos >= 2**28 (three in four): 5 bytes
            ts = b"".join((second, b"\x10", _varint5(micros * 1000)))
        else:
            ts = second + (b"\x10" + varint(micros * 1000) if micros else b"")
        return join(
            (
                header,
                eid.encode(),
                b"\x12",
                bytes((len(ts),)),
                ts,
                user,
                kinds[kind],
                pack_amount(0x29, amount) if amount else b"",
                countries[country],
                payloads[payload],
            )
        )

    return encode


def _bad_value(sort: str, nth: int, event: _Event, good: bytes, spec: _Spec) -> bytes:
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
    big = _BigPayload(payload.page, payload.ab, payload.items, "x" * spec.oversize_bytes)
    return encode(replace(event, payload=big))


def _framed_bad_value(sort: str, nth: int, good: bytes) -> bytes:
    """Corrupt a good framed record into one of REGISTRY_BAD_SORTS. A cut keeps the header
    and ends inside the event's last field, so neither format can read it as a shorter event
    (a Protobuf message cut between fields would be); the trailing bytes start with a zero
    byte, which is no Protobuf field tag."""
    if sort == "wrong_magic":
        return b"\x01" + good[1:]
    if sort == "unknown_id":
        return good[:1] + UNKNOWN_SCHEMA_ID.to_bytes(4, "big") + good[5:]
    if sort == "truncated":
        return good[: -1 - nth % 3]
    return good + b"\x00" * (1 + nth % 2)


def bad_sorts(format: str = "json") -> tuple[str, ...]:
    """The bad sorts a run of ``format`` spreads its bad records over, round-robin."""
    return BAD_SORTS if format == "json" else REGISTRY_BAD_SORTS


def bad_counts(events: int, bad_fraction: float, format: str = "json") -> dict[str, int]:
    """How many records of each bad sort generate(events, bad_fraction=..., format=...)
    yields."""
    sorts = bad_sorts(format)
    n_bad = round(events * bad_fraction)
    return {sort: len(range(k, n_bad, len(sorts))) for k, sort in enumerate(sorts)}


_ENCODERS: dict[str, Callable[[int, int], _Binary]] = {
    "avro": _avro_encoder,
    "protobuf": _protobuf_encoder,
}


def _bad_index(k: int, events: int, n_bad: int) -> int:
    """Run index of the k-th bad record: the first j with floor((j+1)*n_bad/events) > k.

    So exactly n_bad indices are bad, evenly spaced, and floor(j*n_bad/events) of them
    come before index j, which lets any slice of a run start without the ones before it.
    """
    return ((k + 1) * events + n_bad - 1) // n_bad - 1


def _records(
    spec: _Spec, lo: int = 0, hi: int | None = None
) -> Iterator[tuple[int, bytes, bytes, str, uuid.UUID | str | None]]:
    """Run indices ``lo .. hi-1`` as (partition, key, value, sort, event_id) tuples: the hot
    loop behind generate() and produce().

    Randomness comes in bulk (one randbytes() per block, read as four 64-bit words per
    event): per-event draws were the larger part of the cost. Words are read in the host's
    byte order, so the streams are the same on every little-endian machine.
    """
    events, users, partitions = spec.events, spec.users, spec.partitions
    hi = events if hi is None else hi
    n_bad = round(events * spec.bad_fraction)
    bad_seen = lo * n_bad // events if n_bad else 0
    next_bad = _bad_index(bad_seen, events, n_bad) if bad_seen < n_bad else -1
    encode = _ENCODER.encode
    from_ts = datetime.fromtimestamp
    utc = timezone.utc
    keys, partition_of = _user_cache(users, partitions)
    payloads = _payloads(spec.seed)
    kinds, priced, zones, countries = _KIND_TABLE, _PRICED, _ZONES, COUNTRIES
    sorts = bad_sorts(spec.format)
    binary = None if spec.format == "json" else _ENCODERS[spec.format](spec.seed, spec.schema_id)
    # one filler string shared by every large payload: generating costs no copy of it
    filler = (_FILLER_TEXT * (spec.payload_bytes // len(_FILLER_TEXT) + 1))[:spec.payload_bytes]
    event_id: uuid.UUID | str
    j = lo
    while j < hi:
        block, first = divmod(spec.start + j, _BLOCK)
        count = min(_BLOCK - first, hi - j)
        rng = random.Random(f"veltrix:{spec.seed}:{block}")
        words = iter(memoryview(rng.randbytes(32 * _BLOCK)).cast("Q")[4 * first :].tolist())
        base_us = BASE_TS_US + (spec.start + j) * _STEP_US
        quads = zip(range(count), words, words, words, words, strict=False)
        for step, id_high, id_low, user_word, bits in quads:
            u = user_word % users
            key = keys[u]
            if key is None:
                key = keys[u] = str(USER_ID_BASE + u).encode()
                partition_of[u] = partition_for(key, partitions) if partitions > 1 else 0
            ts_us = base_us + step * _STEP_US + (bits >> 26 & 1023)
            kind = kinds[bits & 127]
            amount = (100 + (bits >> 36) % 49_900) / 100 if kind in priced else 0.0
            if binary is None:
                zone = zones[bits >> 7 & 7]
                seconds = ts_us / 1e6
                body: _Payload | _BigPayload = payloads[bits >> 14 & 4095]
                if filler:
                    body = _BigPayload(body.page, body.ab, body.items, filler)
                event = _Event(
                    _uuid4(id_high << 64 | id_low),
                    from_ts(seconds, utc).isoformat() if zone is None else from_ts(seconds, zone),
                    USER_ID_BASE + u,
                    kind,
                    amount,
                    countries[bits >> 10 & 15],
                    body,
                )
                value = encode(event)
                event_id = event.event_id
            else:
                event_id = _uuid4_text(id_high, id_low)
                country, payload = bits >> 10 & 15, bits >> 14 & 4095
                value = binary(event_id, ts_us, USER_ID_BASE + u, kind, amount, country, payload)
            if j + step != next_bad:
                yield partition_of[u], key, value, "good", event_id
                continue
            sort = sorts[bad_seen % len(sorts)]
            nth = bad_seen // len(sorts)
            bad_seen += 1
            next_bad = _bad_index(bad_seen, events, n_bad) if bad_seen < n_bad else -1
            if binary is None:
                value = _bad_value(sort, nth, event, value, spec)
            else:
                value = _framed_bad_value(sort, nth, value)
            yield partition_of[u], key, value, sort, None
        j += count


def generate(
    events: int,
    *,
    seed: int = 0,
    bad_fraction: float = 0.0,
    users: int = 10_000,
    oversize_bytes: int = 200_000,
    start: int = 0,
    format: str = "json",
    schema_id: int = 1,
    payload_bytes: int = 0,
) -> Iterator[Record]:
    """Records ``start .. start+events-1`` of the seed's event stream.

    Exactly round(events * bad_fraction) of them are bad, evenly spaced, their sorts
    round-robin over bad_sorts(format) (see bad_counts). A bad record replaces the good event
    of its index, so the good records are the same whatever ``bad_fraction`` is, and a seed's
    events are the same in every format. A registry format frames ``schema_id``.
    ``payload_bytes`` > 0 pads each good event's payload with a compressible ``note``.
    """
    spec = _Spec(events, seed, bad_fraction, users, oversize_bytes, start, 1, format, schema_id,
                 payload_bytes)
    return (
        Record(key, value, sort, None if event_id is None else str(event_id))
        for _, key, value, sort, event_id in _records(spec)
    )


_Columns = tuple[Sequence[int], Sequence[bytes], Sequence[bytes]]
"""Partitions, keys and values of consecutive records."""


def _chunk(spec: _Spec, lo: int, hi: int) -> _Columns:
    """Run indices ``lo .. hi-1`` (lo < hi), as the producer needs them.

    The garbage collector is paused meanwhile: the rows hold no cycles, and with thousands
    of them alive its passes cost half as much again as generating them.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        partitions, keys, values, _, _ = zip(*_records(spec, lo, hi), strict=True)
    finally:
        if collecting:
            gc.enable()
    return array("I", partitions), keys, values


class _Feed:
    """The run's records in order, generated _CHUNK at a time; rate mode takes odd amounts."""

    def __init__(self, spec: _Spec) -> None:
        self._spec = spec
        self._chunk: _Columns = ((), (), ())
        self._at = 0
        self._generated = 0

    def take(self, n: int) -> list[_Columns]:
        taken: list[_Columns] = []
        while n > 0:
            if self._at == len(self._chunk[0]):
                lo = self._generated
                self._generated = min(lo + self._spec.chunk, self._spec.events)
                self._chunk, self._at = _chunk(self._spec, lo, self._generated), 0
            end = min(self._at + n, len(self._chunk[0]))
            partitions, keys, values = self._chunk
            taken.append((partitions[self._at : end], keys[self._at : end], values[self._at : end]))
            n -= end - self._at
            self._at = end
        return taken


@dataclass
class ProduceReport:
    """What one produce() run wrote. ``elapsed_s`` covers writing up to the last ack (not
    the topic and connection set-up); ``batch_bytes`` is the record batches' size."""

    topic: str
    partitions: int
    events: int
    good: int
    bad: dict[str, int]
    elapsed_s: float
    events_per_s: float
    per_partition: dict[int, int]
    batch_bytes: int = 0
    format: str = "json"
    schema_id: int | None = None
    """The registry's id of the value schema (registry formats)."""

    def summary(self) -> str:
        """Human-readable report; the last line is the headline figure."""
        mb_per_s = self.batch_bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0
        bad = ", ".join(f"{sort} {n:,}" for sort, n in self.bad.items())
        spread = " ".join(f"{p}:{n:,}" for p, n in sorted(self.per_partition.items()))
        schema = ""
        if self.schema_id is not None:
            schema = f", schema id {self.schema_id} (subject {self.topic}-value)"
        return "\n".join(
            (
                f"topic {self.topic}: {self.partitions} partitions",
                f"  format:        {self.format}{schema}",
                f"  good events:   {self.good:,}",
                f"  bad records:   {sum(self.bad.values()):,} ({bad})",
                f"  per partition: {spread}",
                f"  written:       {self.batch_bytes / 1e6:,.1f} MB, {mb_per_s:,.1f} MB/s",
                f"produced {self.events} events to {self.topic} in {self.elapsed_s:.2f}s: "
                f"{self.events_per_s:,.0f} events/s",
            )
        )


class _Writer:
    """One open batch per partition, shipped when full: aiokafka's batch API, without the
    per-message future and coroutine that cap ``send()`` near 48k messages/s.

    Counting happens per shipped batch, not per record, to keep the record loop short.
    """

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, partitions: int, progress: TextIO | None
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._builders = [producer.create_batch() for _ in range(partitions)]
        self._acks: deque[asyncio.Future[Any]] = deque()
        self._progress = progress
        self._started = time.monotonic()
        self._shown = 0.0
        self.per_partition = [0] * partitions
        self.shipped = 0
        self.batch_bytes = 0

    async def write(self, parts: list[_Columns]) -> None:
        """Append records to their partitions' batches, shipping the ones that fill up."""
        builders = self._builders
        for partitions, keys, values in parts:
            for p, key, value in zip(partitions, keys, values, strict=True):
                if builders[p].append(timestamp=None, key=key, value=value) is None:
                    await self._ship(p)
                    # A batch's first record is always taken, however large.
                    builders[p].append(timestamp=None, key=key, value=value)

    async def ship_all(self) -> None:
        """Send every non-empty batch now (end of run, or a rate-mode tick)."""
        for p, builder in enumerate(self._builders):
            if builder.record_count():
                await self._ship(p)

    async def wait_acks(self) -> None:
        """Wait until the broker acknowledged everything shipped; raise its first error."""
        await asyncio.gather(*self._acks)
        self._acks.clear()

    def end_progress(self) -> None:
        """Show the final count and end the line, so that what follows starts afresh."""
        if self._progress is not None:
            self._show(force=True)
            self._progress.write("\n")
            self._progress.flush()

    async def _ship(self, p: int) -> None:
        builder = self._builders[p]
        builder.close()  # a closed batch skips linger_ms
        self._builders[p] = self._producer.create_batch()
        self._acks.append(await self._producer.send_batch(builder, self._topic, partition=p))
        self.per_partition[p] += builder.record_count()
        self.shipped += builder.record_count()
        self.batch_bytes += builder.size()
        while self._acks and self._acks[0].done():
            self._acks.popleft().result()
        self._show()

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._progress is None or (not force and now - self._shown < _PROGRESS_EVERY_S):
            return
        self._shown = now
        rate = self.shipped / max(now - self._started, 1e-9)
        self._progress.write(f"\rproduced {self.shipped:,} events, {rate:,.0f} events/s ")
        self._progress.flush()


def _register(registry_url: str, topic: str, format: str) -> int:
    """Register the standard event's schema under ``<topic>-value``: its id (the same id
    again when the subject has it already)."""
    from veltrix_ray.registry import RegistryClient  # only registry formats need it

    client = RegistryClient(registry_url)
    return client.register(f"{topic}-value", schema_text(format), REGISTRY_TYPES[format])


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
    format: str = "json",
    registry_url: str | None = None,
    payload_bytes: int = 0,
    compression: str = "none",
    batch_bytes: int = _BATCH_BYTES,
) -> ProduceReport:
    """Write ``events`` records as fast as possible, or ``rate`` records/s for ``duration`` s.

    The records are generate(total, seed=seed, bad_fraction=bad_fraction,
    oversize_bytes=oversize_bytes, format=format, schema_id=...) in order, each to Kafka's
    default partition of its key. The topic is created with ``partitions`` partitions if
    missing; an existing topic keeps its own count (and the records go to its partitions).
    A registry format first registers the standard event's schema under ``<topic>-value``
    at the schema registry ``registry_url`` (its Confluent API), and frames the id it gets.
    Records go out in batches of up to ``batch_bytes`` (before compression), compressed with
    ``compression`` (one of COMPRESSIONS).
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got "
                         f"{compression!r}")
    if batch_bytes < 1:
        raise ValueError(f"batch_bytes must be >= 1, got {batch_bytes}")
    if events is not None:
        if rate is not None or duration is not None:
            raise ValueError("give either events, or rate and duration, not both")
        if events < 1:
            raise ValueError(f"events must be >= 1, got {events}")
        total = events
    elif rate is None or duration is None or rate <= 0 or duration <= 0:
        raise ValueError(f"give events, or rate and duration > 0 (got {rate}, {duration})")
    else:
        total = max(1, round(rate * duration))
    _Spec(total, seed, bad_fraction, oversize_bytes=oversize_bytes, format=format,
          payload_bytes=payload_bytes)  # fail early
    schema_id = None
    if format != "json":
        if not registry_url:
            raise ValueError(f"format {format} needs a schema registry: give registry_url")
        schema_id = await asyncio.to_thread(_register, registry_url, topic, format)
    partitions = await ensure_topic(bootstrap, topic, partitions, timeout_s=request_timeout_s)
    spec = _Spec(
        total, seed, bad_fraction, _USERS, oversize_bytes, 0, partitions, format,
        1 if schema_id is None else schema_id, payload_bytes,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,  # retried batches must neither duplicate nor reorder
        linger_ms=5,
        max_batch_size=batch_bytes,
        max_request_size=max(batch_bytes, oversize_bytes, payload_bytes) + 64 * 1024,
        compression_type=None if compression == "none" else compression,
        request_timeout_ms=max(1, int(request_timeout_s * 1000)),
    )
    await producer.start()
    try:
        writer = _Writer(producer, topic, partitions, sys.stderr if progress else None)
        feed = _Feed(spec)
        started = time.monotonic()
        written = 0
        while written < total:
            due = total
            if rate is not None:
                due = min(total, math.ceil(rate * (time.monotonic() - started)))
            if due == written:
                await asyncio.sleep(_RATE_TICK_S)
                continue
            n = min(due - written, spec.chunk)
            await writer.write(feed.take(n))
            written += n
            if rate is not None:
                await writer.ship_all()
        await writer.ship_all()
        await writer.wait_acks()
        elapsed = time.monotonic() - started
        writer.end_progress()
    finally:
        await producer.stop()
    bad = bad_counts(total, bad_fraction, format)
    return ProduceReport(
        format=format,
        schema_id=schema_id,
        topic=topic,
        partitions=partitions,
        events=total,
        good=total - sum(bad.values()),
        bad=bad,
        elapsed_s=elapsed,
        events_per_s=total / elapsed if elapsed > 0 else 0.0,
        per_partition=dict(enumerate(writer.per_partition)),
        batch_bytes=writer.batch_bytes,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``veltrix-ray produce``."""
    parser.add_argument("--topic", required=True, help="topic to write (created if missing)")
    parser.add_argument("--events", type=int, help="write N events as fast as possible")
    parser.add_argument("--rate", type=float, help="events per second (with --duration)")
    parser.add_argument("--duration", type=float, help="seconds to write at --rate")
    parser.add_argument(
        "--partitions", type=int, default=8, help="partitions of a new topic (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same records (default 0)")
    parser.add_argument(
        "--bad-fraction",
        type=float,
        default=0.0,
        help=f"share of bad records in [0, 1], spread over {', '.join(BAD_SORTS)} (json) "
        f"or {', '.join(REGISTRY_BAD_SORTS)} (avro, protobuf) (default 0)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="json, or avro / protobuf in the Confluent wire format with the schema "
        "registered under <topic>-value (default json)",
    )
    parser.add_argument(
        "--oversize-bytes",
        type=int,
        default=200_000,
        help="oversized bad records are larger than this (default 200000)",
    )
    parser.add_argument(
        "--payload-bytes",
        type=int,
        default=0,
        help="pad each good event's payload with a compressible note of this many bytes "
        "(json only; default 0: no padding)",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="none",
        help="compression of the record batches (default none)",
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=_BATCH_BYTES,
        help=f"record batch size before compression (default {_BATCH_BYTES})",
    )
    parser.add_argument("--bootstrap", help=f"Kafka bootstrap servers (default: ${ENV_BOOTSTRAP})")
    parser.add_argument(
        "--registry-url",
        help=f"schema registry (Confluent API) of avro and protobuf (default: ${ENV_REGISTRY})",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="Kafka request timeout, seconds (default 30)"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress line (it is shown on stderr when that is a terminal)",
    )


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags, naming the flag, or None."""
    if args.events is not None:
        if args.rate is not None or args.duration is not None:
            return "give either --events, or --rate with --duration, not both"
        if args.events < 1:
            return f"--events must be >= 1, got {args.events}"
    elif args.rate is None or args.duration is None:
        return "give --events N, or --rate R with --duration S"
    elif args.rate <= 0 or args.duration <= 0:
        return f"--rate and --duration must be > 0, got {args.rate} and {args.duration}"
    if not 0.0 <= args.bad_fraction <= 1.0:
        return f"--bad-fraction must be between 0 and 1, got {args.bad_fraction}"
    if args.partitions < 1:
        return f"--partitions must be >= 1, got {args.partitions}"
    if args.oversize_bytes < 1:
        return f"--oversize-bytes must be >= 1, got {args.oversize_bytes}"
    if args.timeout <= 0:
        return f"--timeout must be > 0, got {args.timeout}"
    if args.payload_bytes < 0 or (args.payload_bytes and args.format != "json"):
        return "--payload-bytes must be >= 0, and applies to --format json only"
    if args.batch_bytes < 1:
        return f"--batch-bytes must be >= 1, got {args.batch_bytes}"
    return None


def run_cli(args: argparse.Namespace) -> int:
    """``veltrix-ray produce``: 0 when done, 2 for a usage error, 1 when Kafka or the schema
    registry failed."""
    error = _usage_error(args)
    if error is not None:
        print(f"veltrix-ray produce: error: {error}", file=sys.stderr)
        return 2
    bootstrap = args.bootstrap or os.environ.get(ENV_BOOTSTRAP)
    if not bootstrap:
        print(
            f"veltrix-ray produce: error: no Kafka to write to: ${ENV_BOOTSTRAP} is not set. "
            'Run `veltrix-ray local up` and `eval "$(veltrix-ray local env)"`, '
            "or pass --bootstrap HOST:PORT.",
            file=sys.stderr,
        )
        return 2
    registry_url = None
    if args.format != "json":
        registry_url = args.registry_url or os.environ.get(ENV_REGISTRY)
        if not registry_url:
            print(
                f"veltrix-ray produce: error: --format {args.format} needs a schema registry: "
                f"${ENV_REGISTRY} is not set. Run `veltrix-ray local up` and "
                '`eval "$(veltrix-ray local env)"`, or pass --registry-url URL.',
                file=sys.stderr,
            )
            return 2
    kafka_log = logging.getLogger("aiokafka")
    if not kafka_log.handlers:
        # Keep aiokafka's own connection errors (logged, then raised) off the terminal when
        # nobody configured logging: the error below says it once and says what to do.
        kafka_log.addHandler(logging.NullHandler())
    try:
        report = asyncio.run(
            produce(
                bootstrap,
                args.topic,
                events=args.events,
                rate=args.rate,
                duration=args.duration,
                partitions=args.partitions,
                seed=args.seed,
                bad_fraction=args.bad_fraction,
                progress=not args.no_progress and sys.stderr.isatty(),
                oversize_bytes=args.oversize_bytes,
                request_timeout_s=args.timeout,
                format=args.format,
                registry_url=registry_url,
                payload_bytes=args.payload_bytes,
                compression=args.compression,
                batch_bytes=args.batch_bytes,
            )
        )
    except VeltrixError as exc:  # the registry's errors name its URL and what failed
        print(f"veltrix-ray produce: error: {exc}", file=sys.stderr)
        return 1
    except KafkaConnectionError:
        print(
            f"veltrix-ray produce: error: cannot connect to Kafka at {bootstrap}: no broker "
            'answered. Start one with `veltrix-ray local up` and `eval "$(veltrix-ray local env)"`'
            ", or pass --bootstrap HOST:PORT of a running broker.",
            file=sys.stderr,
        )
        return 1
    except (KafkaError, TimeoutError, asyncio.TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        print(f"veltrix-ray produce: error: Kafka at {bootstrap} failed: {detail}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
