"""Synthetic event producer (``veltrix-ray produce``): the demo's and benchmarks' input.

Events are a pure function of ``(seed, index)``: the same seed always writes the same
records to the same partitions in the same order, so a pipeline run can be checked
against ``generate()`` record by record.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import murmur2

from veltrix_ray.source.admin import ensure_topic

BAD_SORTS = ("malformed_json", "wrong_type", "missing_field", "non_utf8", "oversized")
KINDS = ("view", "click", "cart", "purchase", "refund")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL", "SE", "JP", "BR", "IN")
USER_ID_BASE = 1_000_000
"""user_id = USER_ID_BASE + a number below ``users``; keys are str(user_id) in UTF-8."""
BASE_TS_US = 1_767_225_600_000_000
"""Event time of index 0 (2026-01-01T00:00:00Z); index i is about i milliseconds later.

Fixed rather than "now" so that a seed fully determines the records."""

ENV_BOOTSTRAP = "VELTRIX_KAFKA_BOOTSTRAP"

_BLOCK = 1024
"""Events per RNG stream: event i depends on (seed, i // _BLOCK), so ``start`` is cheap."""
_STEP_US = 1000
_KIND_TABLE = ("view",) * 60 + ("click",) * 20 + ("cart",) * 10 + ("purchase",) * 8 + (
    "refund",
) * 2
_PRICED = frozenset({"cart", "purchase", "refund"})
_OFFSETS = (("Z", 0), ("+00:00", 0), ("+02:00", 7200), ("-05:00", -18000), ("+05:30", 19800))
_PAGES = tuple(f"/p/{n}" for n in range(1, 2001))
_BATCH_BYTES = 512 * 1024
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
    """Field order here is the field order on the wire."""

    event_id: str
    ts: str
    user_id: int
    kind: str
    amount: float
    country: str
    payload: _Payload | _BigPayload


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


def _uuid4(bits: int) -> str:
    """str(uuid.UUID(int=bits, version=4)), without building the UUID object."""
    bits = (bits & ~(0xF000 << 64)) | (4 << 76)
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _bad_value(sort: str, nth: int, event: _Event, good: bytes, oversize_bytes: int) -> bytes:
    """Corrupt a good event into ``sort``; ``nth`` varies the flavour within a sort."""
    encode = _ENCODER.encode
    if sort == "malformed_json":
        return good[: len(good) // 2] if nth % 2 == 0 else good[:-1] + b",}"
    if sort == "wrong_type":
        if nth % 2 == 0:
            return encode(msgspec.structs.replace(event, user_id=f"u{event.user_id}"))
        return encode(msgspec.structs.replace(event, amount="abc"))
    if sort == "missing_field":
        fields = msgspec.structs.asdict(event)
        del fields["ts" if nth % 2 == 0 else "user_id"]
        return encode(fields)
    if sort == "non_utf8":
        return good.replace(b'"country":"', b'"country":"\xff\xfe', 1)
    payload = event.payload
    big = _BigPayload(payload.page, payload.ab, payload.items, "x" * oversize_bytes)
    return encode(msgspec.structs.replace(event, payload=big))


_ENCODER = msgspec.json.Encoder()


def _records(
    events: int, seed: int, bad_fraction: float, users: int, oversize_bytes: int, start: int
) -> Iterator[tuple[bytes, bytes, str, str | None]]:
    """The hot loop behind generate(), yielding plain tuples (no Record objects)."""
    if events < 0 or start < 0:
        raise ValueError("events and start must be >= 0")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1], got {bad_fraction}")
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    n_bad = round(events * bad_fraction)
    encode = _ENCODER.encode
    keys: dict[int, bytes] = {}
    prefix_sec = [-1] * len(_OFFSETS)
    prefix = [""] * len(_OFFSETS)
    kinds, n_kinds = _KIND_TABLE, len(_KIND_TABLE)
    pages, n_pages = _PAGES, len(_PAGES)
    n_countries, n_offsets = len(COUNTRIES), len(_OFFSETS)
    block = start // _BLOCK
    rng = random.Random(f"veltrix:{seed}:{block}")
    skip = start - block * _BLOCK
    rand, bits = rng.random, rng.getrandbits
    bad_seen = 0
    for j in range(-skip, events):
        i = start + j
        if i % _BLOCK == 0 and i // _BLOCK != block:
            block = i // _BLOCK
            rng = random.Random(f"veltrix:{seed}:{block}")
            rand, bits = rng.random, rng.getrandbits
        event_id = _uuid4(bits(128))
        user_id = USER_ID_BASE + int(rand() * users)
        kind = kinds[int(rand() * n_kinds)]
        amount = round(1.0 + rand() * 499.0, 2) if kind in _PRICED else 0.0
        o = int(rand() * n_offsets)
        t_us = BASE_TS_US + i * _STEP_US + int(rand() * _STEP_US)
        suffix, shift = _OFFSETS[o]
        sec = t_us // 1_000_000
        if prefix_sec[o] != sec:
            prefix_sec[o] = sec
            prefix[o] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec + shift))
        ts = f"{prefix[o]}.{t_us % 1_000_000:06d}{suffix}"
        country = COUNTRIES[int(rand() * n_countries)]
        n_items = int(rand() * 4)
        items = [100_000 + int(rand() * 900_000) for _ in range(n_items)]
        payload = _Payload(pages[int(rand() * n_pages)], "A" if rand() < 0.5 else "B", items)
        if j < 0:
            continue
        key = keys.get(user_id)
        if key is None:
            key = keys[user_id] = str(user_id).encode()
        event = _Event(event_id, ts, user_id, kind, amount, country, payload)
        value = encode(event)
        if n_bad and (j + 1) * n_bad // events > j * n_bad // events:
            sort = BAD_SORTS[bad_seen % len(BAD_SORTS)]
            nth = bad_seen // len(BAD_SORTS)
            bad_seen += 1
            yield key, _bad_value(sort, nth, event, value, oversize_bytes), sort, None
        else:
            yield key, value, "good", event_id


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
    round-robin over BAD_SORTS. A bad record replaces the good event of its index, so
    the good records are the same whatever ``bad_fraction`` is.
    """
    for key, value, sort, event_id in _records(
        events, seed, bad_fraction, users, oversize_bytes, start
    ):
        yield Record(key, value, sort, event_id)
