"""Avro through a real schema registry: bad framing dead-lettered, schema evolution into
PostgreSQL, a schema the table cannot take stops its partition, a registry outage waits."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import fastavro
import psycopg
import pytest
import ray
from aiokafka import AIOKafkaProducer

from veltrix_ray import Pipeline, load_config
from veltrix_ray.local.procs import free_port
from veltrix_ray.local.registry import LocalRegistry
from veltrix_ray.produce import generate, partition_for, produce
from veltrix_ray.registry.client import IncompatibleSchema, RegistryClient

from .helpers import Background, offsets, overrides

pytestmark = pytest.mark.usefixtures("ray_local")

V1 = {"type": "record", "name": "Order", "namespace": "test.evo", "fields": [
    {"name": "order_id", "type": "string"},
    {"name": "qty", "type": "long"},
    {"name": "code", "type": "string"},
]}
# v2: a nullable field with a default (BACKWARD compatible)
V2 = {**V1, "fields": [*V1["fields"], {"name": "note", "type": ["null", "string"],
                                        "default": None}]}
# v3: a required field without a default (not BACKWARD compatible)
V3 = {**V2, "fields": [*V2["fields"], {"name": "priority", "type": "int"}]}
# code changes type: string -> long (no promotion)
V_CODE_LONG = {**V1, "fields": [V1["fields"][0], V1["fields"][1],
                                {"name": "code", "type": "long"}]}


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def send(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> list[int]:
    """Append `values` to one partition, in order; their offsets."""
    async def go() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic, v, partition=partition) for v in values]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()
    return asyncio.run(go())


def rows(dsn: str, table: str, columns: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT {columns} FROM "{table}" ORDER BY order_id').fetchall()


def column_names(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position", (table,)).fetchall()]


def order(i: int, **extra: Any) -> dict[str, Any]:
    return {"order_id": f"o{i:05d}", "qty": i, "code": f"c{i}", **extra}


def avro_run(topic: str, dsn: str, table: str, *extra: str) -> list[str]:
    return overrides(topic, dsn, "pipeline=events_avro", f"pipeline.name={table}",
                     f"pipeline.table={table}", *extra)


def test_evolution_adds_a_column_once_and_old_rows_hold_null(
        kafka_bootstrap: str, new_topic: Any, pg_dsn: str, registry: RegistryClient) -> None:
    topic = new_topic(1)
    subject = f"{topic}-value"
    v1 = registry.register(subject, json.dumps(V1))
    registry.set_compatibility(subject, "BACKWARD")  # Apicurio: per subject, once it exists
    send(kafka_bootstrap, topic, [framed(v1, V1, order(i)) for i in range(3)])
    over = avro_run(topic, pg_dsn, "orders", "until=forever")
    with Background(over) as run:
        run.wait("v1 rows", lambda: _count(pg_dsn, "orders") == 3)
        assert column_names(pg_dsn, "orders") == ["order_id", "qty", "code"]
        v2 = registry.register(subject, json.dumps(V2))
        assert v2 != v1
        # v1 and v2 interleaved in one partition
        mixed = [framed(v2, V2, order(i, note=f"n{i}")) if i % 2 else framed(v1, V1, order(i))
                 for i in range(3, 13)]
        send(kafka_bootstrap, topic, mixed)
        run.wait("v1 + v2 rows", lambda: _count(pg_dsn, "orders") == 13)
    assert column_names(pg_dsn, "orders") == ["order_id", "qty", "code", "note"]
    got = rows(pg_dsn, "orders", "order_id, qty, code, note")
    assert got == [(f"o{i:05d}", i, f"c{i}", f"n{i}" if i >= 3 and i % 2 else None)
                   for i in range(13)]
    assert offsets(pg_dsn, topic) == {0: 13}
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM veltrix_dead_letters").fetchone() == (0,)
    # a required field without a default is refused by the registry under BACKWARD
    with pytest.raises(IncompatibleSchema):
        registry.register(subject, json.dumps(V3))


def test_a_type_change_the_table_cannot_take_stops_the_partition(
        kafka_bootstrap: str, new_topic: Any, pg_dsn: str, registry: RegistryClient) -> None:
    topic = new_topic(1)
    subject = f"{topic}-value"
    v1 = registry.register(subject, json.dumps(V1))
    registry.set_compatibility(subject, "NONE")
    send(kafka_bootstrap, topic, [framed(v1, V1, order(i)) for i in range(3)])
    assert Pipeline(load_config(avro_run(topic, pg_dsn, "orders"))).run().rows == 3
    bad = registry.register(subject, json.dumps(V_CODE_LONG))
    version = registry.latest(subject).version
    at = send(kafka_bootstrap, topic, [framed(v1, V1, order(3)),
                                       framed(bad, V_CODE_LONG, order(4, code=44)),
                                       framed(v1, V1, order(5))])
    # the table's columns, as the first run made them (the latest version would not fit it)
    columns = "[{name:order_id,type:string},{name:qty,type:int64},{name:code,type:string}]"
    summary = Pipeline(load_config(avro_run(topic, pg_dsn, "orders",
                                            f"pipeline.columns={columns}"))).run(
        raise_on_error=False)
    assert summary.stopped == [0]
    why = summary.partitions[0]["error"]
    for part in (topic, "code", f"schema id {bad}", f"version {version}"):
        assert part in why, why
    # nothing of the batch holding the new schema committed: the offset stops before it
    committed = offsets(pg_dsn, topic)[0]
    assert committed is not None and 3 <= committed <= at[1]
    assert [r[0] for r in rows(pg_dsn, "orders", "order_id")] == [
        f"o{i:05d}" for i in range(committed)]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM veltrix_dead_letters").fetchone() == (0,)


def test_bad_framing_is_dead_lettered_with_its_reason(
        kafka_bootstrap: str, new_topic: Any, pg_dsn: str, registry: RegistryClient) -> None:
    topic = new_topic(1)
    v1 = registry.register(f"{topic}-value", json.dumps(V1))
    good = framed(v1, V1, order(0))
    values = [good,
              b"\x01" + good[1:],  # magic 1: ids in headers
              b"\x07" + good[1:],  # not the Confluent wire format
              b"\x00" + (2**31 - 7).to_bytes(4, "big") + good[5:],  # unknown id
              good[:-2],  # truncated
              good + b"\x00\x01",  # trailing bytes
              b"\x00\x00",  # too short for the header
              framed(v1, V1, order(1))]
    send(kafka_bootstrap, topic, values)
    summary = Pipeline(load_config(avro_run(topic, pg_dsn, "orders"))).run()
    assert summary.ok, summary.errors
    assert [r[0] for r in rows(pg_dsn, "orders", "order_id")] == ["o00000", "o00001"]
    with psycopg.connect(pg_dsn) as conn:
        dead: dict[int, str] = dict(conn.execute('SELECT "offset", error FROM veltrix_dead_letters '
                                 "ORDER BY 1").fetchall())
    assert sorted(dead) == [1, 2, 3, 4, 5, 6]
    assert "magic byte 0x01" in dead[1] and "headers" in dead[1]
    assert "wrong magic byte 0x07" in dead[2]
    assert f"unknown schema id {2**31 - 7}" in dead[3]
    assert "truncated" in dead[4]
    assert "trailing" in dead[5]
    assert "too short" in dead[6]
    assert offsets(pg_dsn, topic) == {0: 8}


def test_registry_away_known_ids_decode_a_new_id_waits_then_resumes(
        kafka_bootstrap: str, new_topic: Any, pg_dsn: str, service_dir: Path) -> None:
    reg = LocalRegistry(service_dir / "registry", free_port())
    reg.start()
    try:
        client = RegistryClient(reg.url)
        topic = new_topic(1)
        subject = f"{topic}-value"
        v1 = client.register(subject, json.dumps(V1))
        send(kafka_bootstrap, topic, [framed(v1, V1, order(i)) for i in range(3)])
        over = avro_run(topic, pg_dsn, "orders", "until=forever",
                        f"schema_registry.url={reg.url}")
        with Background(over) as run:
            run.wait("rows", lambda: _count(pg_dsn, "orders") == 3)
            v2 = client.register(subject, json.dumps(V2))  # not seen by the worker yet
            reg.stop()
            # a known id keeps decoding while the registry is away
            send(kafka_bootstrap, topic, [framed(v1, V1, order(i)) for i in (3, 4)])
            run.wait("rows of a known id", lambda: _count(pg_dsn, "orders") == 5)
            # a new id waits: nothing is dead-lettered, nothing passes it
            send(kafka_bootstrap, topic, [framed(v2, V2, order(5, note="n5")),
                                          framed(v1, V1, order(6))])
            time.sleep(4)
            assert _count(pg_dsn, "orders") == 5 and _dead(pg_dsn) == 0
            assert run.thread.is_alive() and run.error is None
            reg.start()  # the stack's registry keeps its schemas in a file
            run.wait("rows after the registry came back", lambda: _count(pg_dsn, "orders") == 7)
        assert run.join().ok
        assert _dead(pg_dsn) == 0
        assert [r[0] for r in rows(pg_dsn, "orders", "order_id")] == [
            f"o{i:05d}" for i in range(7)]
        assert offsets(pg_dsn, topic) == {0: 7}
    finally:
        reg.stop()


def test_worker_killed_mid_run_on_an_avro_topic_exactly_once(
        kafka_bootstrap: str, new_topic: Any, pg_dsn: str, registry: RegistryClient) -> None:
    topic = new_topic(4)
    v1 = registry.register(f"{topic}-value", json.dumps(V1))
    n = 40_000
    for p in range(4):
        send(kafka_bootstrap, topic, [framed(v1, V1, order(i)) for i in range(p, n, 4)], p)
    over = avro_run(topic, pg_dsn, "orders", "until=forever", "topology.workers=2",
                    "batch.max_records=500")
    with Background(over) as run:
        run.wait("some rows", lambda: _count(pg_dsn, "orders") > 2_000)
        pid = run.a_worker_pid()
        os.kill(pid, signal.SIGKILL)
        # the backlog may be all in by now: the stop at the end must not come before the restart
        run.wait("the killed worker's restart", lambda: any(
            w["restarts"] for w in ray.get(run.coordinator().progress.remote())["workers"]))
        run.wait("every row", lambda: _count(pg_dsn, "orders") == n, timeout=180)
    summary = run.join()
    assert sum(w["restarts"] for w in summary.workers) >= 1
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT order_id) FROM orders"
                            ).fetchone() == (n, n)
    assert offsets(pg_dsn, topic) == dict.fromkeys(range(4), n // 4)
    assert _dead(pg_dsn) == 0


def _dead(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM veltrix_dead_letters").fetchone()[0])  # type: ignore[index]


def _count(dsn: str, table: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return 0



# what each bad sort of `produce` must be dead-lettered with, per format
BAD_REASONS = {
    "avro": {"wrong_magic": "magic byte 0x01", "unknown_id": "unknown schema id",
             "truncated": "truncated", "trailing": "trailing"},
    "protobuf": {"wrong_magic": "magic byte 0x01", "unknown_id": "unknown schema id",
                 "truncated": "does not parse", "trailing": "does not parse"},
}


@pytest.mark.parametrize("fmt", ["avro", "protobuf"])
def test_produced_events_with_bad_records_land_exactly(
        fmt: str, kafka_bootstrap: str, new_topic: Any, pg_dsn: str, services: Any) -> None:
    """100k standard events with 0.2 % bad, through `produce --format` and the shipped
    pipeline: rows are exactly the good events, value for value; each bad one is a dead letter
    with its reason; offsets at the high watermark."""
    topic = new_topic(4)
    events, seed = 100_000, 5
    report = asyncio.run(produce(kafka_bootstrap, topic, events=events, partitions=4, seed=seed,
                                 bad_fraction=0.002, format=fmt,
                                 registry_url=services.registry_url))
    sid = RegistryClient(services.registry_url).latest(f"{topic}-value").schema.id
    good: dict[str, dict[str, Any]] = {}
    bad: dict[tuple[int, int], str] = {}
    hw = dict.fromkeys(range(4), 0)
    as_json = generate(events, seed=seed)
    for rec, js in zip(generate(events, seed=seed, bad_fraction=0.002, format=fmt,
                                schema_id=sid), as_json, strict=True):
        p = partition_for(rec.key, 4)
        if rec.event_id is None:
            bad[(p, hw[p])] = rec.sort
        else:
            good[rec.event_id] = json.loads(js.value)
        hw[p] += 1
    if fmt == "protobuf":  # the second message type of the schema, Confluent index [1]
        tagged = list(generate(50, seed=99, format=fmt, schema_id=sid))
        values = [r.value[:5] + b"\x02\x02" + r.value[6:] + b"\x42\x03abc" for r in tagged]
        offsets_1 = send(kafka_bootstrap, topic, values, partition=1)
        assert offsets_1[0] == hw[1]
        hw[1] += len(values)
        good |= {r.event_id: json.loads(j.value) for r, j in zip(
            tagged, generate(50, seed=99), strict=True) if r.event_id}
    assert len(bad) == 200 and report is not None
    summary = Pipeline(load_config(overrides(topic, pg_dsn, f"pipeline=events_{fmt}"))).run()
    assert summary.ok, summary.errors
    table = f"events_{fmt}"
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute(f"SELECT event_id::text, ts, user_id, kind, amount, country, payload "
                           f"FROM {table}").fetchall()
        dead = {(p, o): e for p, o, e in conn.execute(
            'SELECT partition, "offset", error FROM veltrix_dead_letters').fetchall()}
    assert len(got) == len(good) and {r[0] for r in got} == set(good)
    for event_id, ts, user_id, kind, amount, country, payload in got:
        e = good[event_id]
        assert (ts, user_id, kind, amount, country, payload) == (
            dt.datetime.fromisoformat(e["ts"]), e["user_id"], e["kind"], e["amount"],
            e["country"], e["payload"]), event_id
    assert set(dead) == set(bad)
    for where, sort in bad.items():
        assert BAD_REASONS[fmt][sort] in dead[where], (sort, dead[where])
    assert offsets(pg_dsn, topic) == hw


KEY = {"type": "record", "name": "UserKey", "namespace": "test.keys",
       "fields": [{"name": "user_id", "type": "long"}]}
STATE = {"type": "record", "name": "UserState", "namespace": "test.keys", "fields": [
    {"name": "last_kind", "type": "string"},
    {"name": "total_cents", "type": "long"},
]}


def test_avro_keys_are_the_upsert_key(kafka_bootstrap: str, new_topic: Any, pg_dsn: str,
                                      registry: RegistryClient) -> None:
    topic = new_topic(2)
    kid = registry.register(f"{topic}-key", json.dumps(KEY))
    vid = registry.register(f"{topic}-value", json.dumps(STATE))
    latest: dict[int, tuple[str, int]] = {}
    records: dict[int, list[tuple[bytes, bytes]]] = {0: [], 1: []}
    for i in range(400):
        user = 7 + i % 13
        kind, cents = ("view", "click", "buy")[i % 3], i * 10
        state = {"last_kind": kind, "total_cents": cents}
        latest[user] = (kind, cents)
        records[user % 2].append((framed(kid, KEY, {"user_id": user}),
                                  framed(vid, STATE, state)))
    records[0].append((b"\x00\x00", framed(vid, STATE, {"last_kind": "x", "total_cents": 1})))

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            for p, recs in records.items():
                for k, v in recs:
                    await producer.send(topic, v, key=k, partition=p)
            await producer.flush()
        finally:
            await producer.stop()
    asyncio.run(go())
    summary = Pipeline(load_config(overrides(
        topic, pg_dsn, "pipeline=events_avro", "pipeline.name=user_state",
        "pipeline.table=user_state", "pipeline.mode=upsert", "pipeline.key=[user_id]",
        "pipeline.key_format=avro"))).run()
    assert summary.ok, summary.errors
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute("SELECT user_id, last_kind, total_cents FROM user_state "
                           "ORDER BY user_id").fetchall()
        dead = conn.execute('SELECT partition, "offset", error FROM veltrix_dead_letters'
                            ).fetchall()
    assert got == [(u, *latest[u]) for u in sorted(latest)]
    assert [(p, o) for p, o, _ in dead] == [(0, len(records[0]) - 1)]
    assert dead[0][2].startswith("key: ") and "too short" in dead[0][2]
    assert offsets(pg_dsn, topic) == {p: len(r) for p, r in records.items()}


ALL_TYPES = {"type": "record", "name": "AllTypes", "namespace": "test.types", "fields": [
    {"name": "id", "type": "int"},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10,
                               "scale": 2}},
    {"name": "raw", "type": "bytes"},
    {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "ratio", "type": "float"},
    {"name": "ok", "type": "boolean"},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]}},
    {"name": "tags", "type": {"type": "map", "values": "long"}},
    {"name": "items", "type": {"type": "array", "items": "string"}},
    {"name": "maybe", "type": ["null", "double"], "default": None},
]}


def test_every_avro_type_lands_in_its_postgres_type(
        kafka_bootstrap: str, new_topic: Any, pg_dsn: str, registry: RegistryClient) -> None:
    import decimal
    topic = new_topic(1)
    sid = registry.register(f"{topic}-value", json.dumps(ALL_TYPES))
    at = dt.datetime(2026, 11, 27, 10, 30, 0, 123000, tzinfo=dt.timezone.utc)
    uid = "0b6c4f7e-4f1e-4a8e-9c55-2f1d3b9a7e10"
    records = [
        {"id": 1, "price": decimal.Decimal("12345678.90"), "raw": b"\x00\xffab",
         "digest": b"\x01\x02\x03\x04", "day": dt.date(2026, 2, 28), "at": at, "uid": uid,
         "ratio": 0.5, "ok": True, "color": "BLUE", "tags": {"a": 1, "b": -2},
         "items": ["x", "ü"], "maybe": 1.25},
        {"id": 2, "price": decimal.Decimal("-0.01"), "raw": b"", "digest": b"\x00\x00\x00\x00",
         "day": dt.date(1970, 1, 1), "at": at, "uid": uid, "ratio": -1.0, "ok": False,
         "color": "RED", "tags": {}, "items": [], "maybe": None},
    ]
    send(kafka_bootstrap, topic, [framed(sid, ALL_TYPES, r) for r in records])
    summary = Pipeline(load_config(avro_run(topic, pg_dsn, "all_types"))).run()
    assert summary.ok and summary.rows == 2, summary.errors
    with psycopg.connect(pg_dsn) as conn:
        types: dict[str, str] = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'all_types'").fetchall())
        got = conn.execute("SELECT id, price, raw, digest, day, at, uid::text, ratio, ok, color, "
                           "tags, items, maybe FROM all_types ORDER BY id").fetchall()
    assert types == {"id": "bigint", "price": "numeric", "raw": "bytea", "digest": "bytea",
                     "day": "date", "at": "timestamp with time zone", "uid": "uuid",
                     "ratio": "double precision", "ok": "boolean", "color": "text",
                     "tags": "jsonb", "items": "jsonb", "maybe": "double precision"}
    assert got == [
        (1, decimal.Decimal("12345678.90"), b"\x00\xffab", b"\x01\x02\x03\x04",
         dt.date(2026, 2, 28), at, uid, 0.5, True, "BLUE", {"a": 1, "b": -2}, ["x", "ü"], 1.25),
        (2, decimal.Decimal("-0.01"), b"", b"\x00\x00\x00\x00", dt.date(1970, 1, 1), at, uid,
         -1.0, False, "RED", {}, [], None),
    ]
