"""The synthetic producer against the real development Kafka: what it writes is exactly
what generate() says, on Kafka's default partitions, with the bad records it reports; in
Avro and Protobuf the same events as in JSON. (tests/integration/test_produce_formats.py
imports the format helpers here.)"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import tempfile
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from veltrix_ray.produce import (
    BAD_SORTS,
    ENV_BOOTSTRAP,
    ENV_REGISTRY,
    KINDS,
    REGISTRY_BAD_SORTS,
    add_arguments,
    bad_counts,
    generate,
    partition_for,
    produce,
    run_cli,
    schema_text,
)
from veltrix_ray.source.admin import ensure_topic, partition_count

FIELDS = {"event_id", "ts", "user_id", "kind", "amount", "country", "payload"}


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh topic name, deleted afterwards so the development broker does not fill up."""
    name = f"test-produce-{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(_delete_topic(kafka_bootstrap, name))


async def _delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def _read_all(
    bootstrap: str, topic: str, partitions: int
) -> dict[int, list[tuple[bytes, bytes]]]:
    """Every record of ``topic`` as (key, value) per partition, in offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 60
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, "timed out reading the topic back"
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                records[tp.partition] += [(m.key, m.value) for m in batch]
        return records
    finally:
        await consumer.stop()


def _classify(value: bytes, oversize_bytes: int) -> str:
    """Tell a record's sort from its bytes alone, as a consumer would have to."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "non_utf8"
    try:
        event = json.loads(text)
    except ValueError:
        return "malformed_json"
    if len(value) > oversize_bytes:
        return "oversized"
    if not FIELDS <= event.keys():
        return "missing_field"
    if not (
        isinstance(event["user_id"], int)
        and isinstance(event["amount"], float)
        and event["kind"] in KINDS
        and isinstance(event["payload"], dict)
    ):
        return "wrong_type"
    return "good"


def _parse_ts(ts: str) -> datetime:
    """fromisoformat reads "Z" only from Python 3.11 on."""
    return datetime.fromisoformat(ts[:-1] + "+00:00" if ts.endswith("Z") else ts)


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
Parse = Callable[[bytes], dict[str, Any]]
"""A framed record of a registry format -> the event in normal form (see json_event)."""


def _micros(ts: datetime) -> int:
    return (ts - EPOCH) // (ts.resolution)


def json_event(value: bytes) -> dict[str, Any]:
    """A JSON event in the normal form the format parsers give: ts as µs since the epoch."""
    event = json.loads(value)
    return {**event, "ts": _micros(_parse_ts(event["ts"]))}


def avro_parser(text: str, schema_id: int) -> Parse:
    """Reads a framed Avro record of ``schema_id`` with the writer schema ``text``; raises
    on any other framing, on a datum cut short, and on bytes after it."""
    schema = fastavro.parse_schema(json.loads(text))

    def parse(value: bytes) -> dict[str, Any]:
        assert value[:5] == b"\x00" + schema_id.to_bytes(4, "big"), value[:5]
        datum = io.BytesIO(value[5:])
        event = fastavro.schemaless_reader(datum, schema, None)
        assert isinstance(event, dict)
        assert datum.tell() == len(value) - 5, "trailing bytes"
        return {**event, "event_id": str(event["event_id"]), "ts": _micros(event["ts"])}

    return parse


def protobuf_parser(text: str, schema_id: int) -> Parse:
    """Reads a framed Protobuf record of ``schema_id`` (message index [0]) as message Event
    of the .proto ``text``, compiled here with protoc; raises on anything else."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "event.proto").write_text(text)
        out = Path(tmp, "event.pb")
        include = resources.files("grpc_tools") / "_proto"
        argv = ["protoc", f"-I{tmp}", f"-I{include}", "--include_imports"]
        assert protoc.main([*argv, f"--descriptor_set_out={out}", "event.proto"]) == 0
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    event = pool.FindMessageTypeByName("veltrix.events.Event")
    event_class = message_factory.GetMessageClass(event)

    def parse(value: bytes) -> dict[str, Any]:
        assert value[:6] == b"\x00" + schema_id.to_bytes(4, "big") + b"\x00", value[:6]
        m = event_class.FromString(value[6:])
        payload = {"page": m.payload.page, "ab": m.payload.ab, "items": list(m.payload.items)}
        return {
            "event_id": m.event_id,
            "ts": m.ts.seconds * 1_000_000 + m.ts.nanos // 1000,
            "user_id": m.user_id,
            "kind": m.kind,
            "amount": m.amount,
            "country": m.country,
            "payload": payload,
        }

    return parse


PARSERS = {"avro": avro_parser, "protobuf": protobuf_parser}


def bad_way(value: bytes, good: bytes, schema_id: int, parse: Parse) -> str:
    """How a consumer finds a record of a registry format bad, or "good"; ``good`` is the
    record of its index in a run without bad ones, which tells a cut from trailing bytes
    (a Protobuf parser fails the same way on both)."""
    if value[0] != 0:
        return "wrong_magic"
    if int.from_bytes(value[1:5], "big") != schema_id:
        return "unknown_id"
    try:
        parse(value)
    except Exception:  # noqa: BLE001 - whatever the parser raises, the value is bad
        if len(value) < len(good) and good.startswith(value):
            return "truncated"
        if len(value) > len(good) and value.startswith(good):
            return "trailing"
        return "unreadable"
    return "good"


def test_every_event_lands_once_on_its_key_partition(kafka_bootstrap: str, topic: str) -> None:
    events, seed = 40_000, 7  # more than one generation chunk
    report = asyncio.run(produce(kafka_bootstrap, topic, events=events, partitions=8, seed=seed))
    assert (report.events, report.good, report.partitions) == (events, events, 8)
    assert sum(report.bad.values()) == 0 and set(report.bad) == set(BAD_SORTS)
    assert report.events_per_s > 0

    assert asyncio.run(partition_count(kafka_bootstrap, topic)) == 8
    read = asyncio.run(_read_all(kafka_bootstrap, topic, 8))
    assert {p: len(records) for p, records in read.items()} == report.per_partition
    assert all(read.values()), "every partition gets events"
    assert sum(len(records) for records in read.values()) == events

    partition_of_key: dict[bytes, set[int]] = defaultdict(set)
    for p, records in read.items():
        for key, _ in records:
            partition_of_key[key].add(p)
    assert all(parts == {partition_for(key, 8)} for key, parts in partition_of_key.items())

    expected = list(generate(events, seed=seed))
    ids_read = [json.loads(value)["event_id"] for records in read.values() for _, value in records]
    assert len(set(ids_read)) == events
    assert set(ids_read) == {r.event_id for r in expected}
    for p, records in read.items():  # same records, in generation order, per partition
        assert records == [(r.key, r.value) for r in expected if partition_for(r.key, 8) == p]

    zones: Counter[str] = Counter()
    for records in read.values():
        for key, value in records:
            event = json.loads(value)
            assert key == str(event["user_id"]).encode()
            assert _parse_ts(event["ts"]).tzinfo is not None
            zone = re.search(r"(Z|[+-]\d\d:\d\d)$", event["ts"])
            assert zone is not None, event["ts"]
            zones[zone.group(1)] += 1
    assert {"Z", "+00:00", "+02:00"} <= set(zones), zones


def test_bad_fraction_writes_exactly_the_reported_bad_records(
    kafka_bootstrap: str, topic: str
) -> None:
    events, oversize = 2000, 50_000
    report = asyncio.run(
        produce(
            kafka_bootstrap,
            topic,
            events=events,
            partitions=4,
            bad_fraction=0.1,
            oversize_bytes=oversize,
        )
    )
    expected = Counter(r.sort for r in generate(events, bad_fraction=0.1, oversize_bytes=oversize))
    assert report.bad == dict.fromkeys(BAD_SORTS, 40) == {s: expected[s] for s in BAD_SORTS}
    assert report.good == expected["good"] == 1800

    read = asyncio.run(_read_all(kafka_bootstrap, topic, 4))
    found = Counter(_classify(v, oversize) for records in read.values() for _, v in records)
    assert found == expected
    sizes = [len(v) for records in read.values() for _, v in records]
    assert sum(size > oversize for size in sizes) == 40


@pytest.mark.unit
def test_same_seed_same_records() -> None:
    first = list(generate(3000, seed=42, bad_fraction=0.05))
    assert first == list(generate(3000, seed=42, bad_fraction=0.05))
    assert [r.value for r in generate(100, seed=43)] != [r.value for r in first[:100]]
    # Any slice of the stream equals the same slice of a longer run.
    assert list(generate(700, seed=42, start=1500)) == list(generate(2200, seed=42))[1500:]
    # Bad records replace good ones in place; the good ones do not change.
    clean = list(generate(3000, seed=42))
    assert all(b == c for b, c in zip(first, clean, strict=True) if b.sort == "good")

    counts = Counter(r.sort for r in first)
    assert (
        {s: counts[s] for s in BAD_SORTS} == bad_counts(3000, 0.05) == dict.fromkeys(BAD_SORTS, 30)
    )
    good = [r for r in first if r.sort == "good"]
    assert all(r.event_id is not None and uuid.UUID(r.event_id).version == 4 for r in good)
    assert all(r.event_id is None for r in first if r.sort != "good")
    for r in good:
        event = json.loads(r.value)
        assert set(event) == FIELDS and event["event_id"] == r.event_id
        assert r.key == str(event["user_id"]).encode()
        assert _parse_ts(event["ts"]).tzinfo is not None


@pytest.mark.unit
def test_bad_records_are_bad_in_the_way_they_claim() -> None:
    oversize = 10_000
    for record in generate(1000, seed=3, bad_fraction=0.5, oversize_bytes=oversize):
        assert _classify(record.value, oversize) == record.sort


@pytest.mark.unit
@pytest.mark.parametrize("format", ["avro", "protobuf"])
def test_registry_formats_carry_the_json_events(format: str) -> None:
    parse = PARSERS[format](schema_text(format), 77)
    json_records = list(generate(3000, seed=11, bad_fraction=0.01))
    records = list(generate(3000, seed=11, bad_fraction=0.01, format=format, schema_id=77))
    assert [r.key for r in records] == [r.key for r in json_records]
    good = [(r, j) for r, j in zip(records, json_records, strict=True) if r.sort == "good"]
    assert len(good) == 3000 - 30
    kinds = set()
    for record, json_record in good:
        assert record.event_id == json_record.event_id
        event = parse(record.value)
        assert event == json_event(json_record.value)
        kinds.add(event["kind"])
    assert kinds == set(KINDS)
    if format == "avro":  # the hand-written encoder writes what fastavro writes
        schema = fastavro.parse_schema(json.loads(schema_text("avro")))
        for record, _ in good[:300]:
            datum = io.BytesIO()
            fastavro.schemaless_writer(datum, schema, fastavro.schemaless_reader(
                io.BytesIO(record.value[5:]), schema, None))
            assert record.value[5:] == datum.getvalue()


@pytest.mark.unit
@pytest.mark.parametrize("format", ["avro", "protobuf"])
def test_registry_format_bad_records_are_bad_in_the_way_they_claim(format: str) -> None:
    parse = PARSERS[format](schema_text(format), 5)
    records = list(generate(1000, seed=3, bad_fraction=0.5, format=format, schema_id=5))
    clean = generate(1000, seed=3, format=format, schema_id=5)
    found = [bad_way(r.value, c.value, 5, parse) for r, c in zip(records, clean, strict=True)]
    assert found == [r.sort for r in records]
    counts = Counter(found)
    assert {s: counts[s] for s in REGISTRY_BAD_SORTS} == bad_counts(1000, 0.5, format)
    assert bad_counts(1000, 0.5, format) == dict.fromkeys(REGISTRY_BAD_SORTS, 125)
    assert not set(BAD_SORTS) & set(counts), "JSON's bad sorts are not used"


def test_rate_mode_paces_the_events(kafka_bootstrap: str, topic: str) -> None:
    report = asyncio.run(produce(kafka_bootstrap, topic, rate=2000, duration=1.0, partitions=2))
    assert report.events == 2000 and sum(report.per_partition.values()) == 2000
    assert 0.9 <= report.elapsed_s < 5, report.elapsed_s
    read = asyncio.run(_read_all(kafka_bootstrap, topic, 2))
    assert sum(len(records) for records in read.values()) == 2000


def test_ensure_topic_keeps_an_existing_partition_count(kafka_bootstrap: str, topic: str) -> None:
    assert asyncio.run(partition_count(kafka_bootstrap, topic)) is None
    assert asyncio.run(partition_count(kafka_bootstrap, topic)) is None, "a lookup creates none"
    assert asyncio.run(ensure_topic(kafka_bootstrap, topic, 3)) == 3
    assert asyncio.run(ensure_topic(kafka_bootstrap, topic, 8)) == 3
    assert asyncio.run(partition_count(kafka_bootstrap, topic)) == 3


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="veltrix-ray produce")
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


def test_cli_produces_and_reports(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--topic", topic, "--events", "1000", "--bad-fraction", "0.05", "--no-progress")
    assert _cli(*argv, "--bootstrap", kafka_bootstrap) == 0
    out = capsys.readouterr().out
    assert "malformed_json 10" in out and "oversized 10" in out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(rf"produced 1000 events to {topic} in \d+\.\d\ds: [\d,]+ events/s", last)


@pytest.mark.unit
def test_payload_bytes_pads_the_same_events_with_a_compressible_note() -> None:
    plain = list(generate(50, seed=4))
    padded = list(generate(50, seed=4, payload_bytes=100_000))
    assert [r.event_id for r in padded] == [r.event_id for r in plain]
    for small, big in zip(plain, padded, strict=True):
        event, padded_event = json.loads(small.value), json.loads(big.value)
        note = padded_event["payload"].pop("note")
        assert len(note) == 100_000 and padded_event == event
    assert len(zlib.compress(padded[0].value)) < len(padded[0].value) // 50
    with pytest.raises(ValueError, match="json only"):
        list(generate(1, payload_bytes=10, format="avro"))


def test_large_payloads_go_out_in_compressed_batches(kafka_bootstrap: str, topic: str) -> None:
    events = 60
    report = asyncio.run(produce(kafka_bootstrap, topic, events=events, partitions=2, seed=5,
                                 payload_bytes=200_000, compression="zstd",
                                 batch_bytes=2**20))
    assert report.good == events
    read = asyncio.run(_read_all(kafka_bootstrap, topic, 2))
    want = {r.key + r.value for r in generate(events, seed=5, payload_bytes=200_000)}
    assert {k + v for records in read.values() for k, v in records} == want


@pytest.mark.unit
def test_cli_rejects_a_payload_for_a_registry_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("--topic", "t", "--events", "10", "--format", "avro", "--payload-bytes", "9",
                "--bootstrap", "x:1") == 2
    assert "--payload-bytes" in capsys.readouterr().err


@pytest.mark.unit
def test_cli_rejects_a_bad_fraction_outside_0_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = _cli("--topic", "t", "--events", "10", "--bad-fraction", "2", "--bootstrap", "x:1")
    assert code != 0
    captured = capsys.readouterr()
    assert "--bad-fraction" in captured.err + captured.out


@pytest.mark.unit
def test_cli_without_bootstrap_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_BOOTSTRAP, raising=False)
    assert _cli("--topic", "t", "--events", "10") == 2
    err = capsys.readouterr().err
    assert "veltrix-ray local up" in err and 'eval "$(veltrix-ray local env)"' in err


@pytest.mark.unit
def test_cli_names_an_unreachable_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = _cli("--topic", "t", "--events", "10", "--bootstrap", "127.0.0.1:1", "--timeout", "3")
    assert code == 1
    assert time.monotonic() - started < 15
    captured = capsys.readouterr()
    assert "127.0.0.1:1" in captured.err and "Traceback" not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1, captured.err


@pytest.mark.unit
def test_cli_registry_format_without_registry_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_REGISTRY, raising=False)
    assert _cli("--topic", "t", "--events", "10", "--format", "avro", "--bootstrap", "x:1") == 2
    err = capsys.readouterr().err
    assert ENV_REGISTRY in err and "--registry-url" in err and "veltrix-ray local env" in err


@pytest.mark.unit
def test_cli_names_an_unreachable_registry(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:1/apis/ccompat/v7"
    argv = ("--topic", "t", "--events", "10", "--format", "protobuf", "--registry-url", url)
    assert _cli(*argv, "--bootstrap", "127.0.0.1:1") == 1
    captured = capsys.readouterr()
    assert "127.0.0.1:1/apis/ccompat/v7" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1, captured.err
