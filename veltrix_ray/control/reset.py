"""`veltrix-ray reset-offsets`: move a stopped pipeline's stored offsets. Rows of
`veltrix_offsets` are never deleted (their counters stay); each changed row's owner epoch goes
up, so an owner that somehow still runs is fenced; partitions without a row get one."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.control.plane import CONTROL, ControlPlane, stale_after
from veltrix_ray.errors import ConfigError, VeltrixError
from veltrix_ray.sink.offsets import Offsets

NAMED = ("earliest", "latest")
_PAIR = re.compile(r"-?\d+\s*:\s*-?\d+")


class PipelineRunning(VeltrixError):
    """The verb needs a stopped pipeline."""


@dataclass(frozen=True)
class Target:
    """Where to: earliest | latest | the first offset at a time | explicit offsets."""

    where: str | None = None  # earliest | latest | an ISO-8601 timestamp (for Kafka)
    offsets: Mapping[int, int] | None = None  # partition -> offset


def parse_target(text: str) -> Target:
    """`--to`: earliest, latest, an ISO-8601 timestamp with a zone, or partition:offset,..."""
    text = text.strip()
    if text in NAMED:
        return Target(where=text)
    items = [i.strip() for i in text.split(",") if i.strip()]
    if items and all(_PAIR.fullmatch(i) for i in items):
        offsets: dict[int, int] = {}
        for item in items:
            p, _, o = item.partition(":")
            partition, offset = int(p), int(o)
            if partition < 0 or offset < 0:
                raise ConfigError(f"--to {text!r}: {item!r} has a negative number")
            if partition in offsets:
                raise ConfigError(f"--to {text!r}: partition {partition} appears twice")
            offsets[partition] = offset
        return Target(offsets=offsets)
    try:
        ts = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--to {text!r} is not earliest, latest, an ISO-8601 timestamp "
                          "(e.g. 2026-11-26T00:00:00+00:00) or partition:offset,... (e.g. "
                          "0:1200,3:0)") from None
    if ts.tzinfo is None:
        raise ConfigError(f"--to {text!r} has no time zone; add one, e.g. +00:00")
    return Target(where=ts.isoformat())


@dataclass(frozen=True)
class Change:
    partition: int
    old: int | None  # None: no stored offset (or no row)
    new: int
    old_epoch: int | None  # None: no row yet

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def new_epoch(self) -> int:
        if not self.changed:
            return self.old_epoch or 0
        return 1 if self.old_epoch is None else self.old_epoch + 1

    def line(self) -> str:
        old = "none" if self.old is None else f"{self.old:,}"
        if not self.changed:
            return f"partition {self.partition:>4}: {old} (unchanged)"
        epoch = ("new row, epoch 1" if self.old_epoch is None
                 else f"epoch {self.old_epoch} -> {self.new_epoch}")
        return f"partition {self.partition:>4}: {old} -> {self.new:,}  ({epoch})"


def plan(target: Target, partitions: int, resolved: Mapping[int, int],
         stored: Mapping[int, tuple[int | None, int]], beginning: Mapping[int, int],
         end: Mapping[int, int]) -> list[Change]:
    """The changes, by partition. `resolved`: the Kafka offsets of a named target or time;
    `stored`: partition -> (next_offset, owner_epoch) of the existing rows. Explicit offsets
    must name partitions of the topic and lie within what the topic holds."""
    if target.offsets is not None:
        wanted = dict(target.offsets)
        problems = []
        for p, o in sorted(wanted.items()):
            if p >= partitions:
                problems.append(f"partition {p} does not exist (the topic has {partitions})")
            elif not beginning.get(p, 0) <= o <= end.get(p, o):
                problems.append(f"partition {p}: offset {o} is outside the topic's "
                                f"{beginning.get(p, 0)}..{end.get(p)}")
        if problems:
            raise ConfigError("--to: " + "; ".join(problems))
    else:
        wanted = {p: resolved[p] for p in range(partitions)}
    return [Change(p, stored[p][0] if p in stored else None, o,
                   stored[p][1] if p in stored else None)
            for p, o in sorted(wanted.items())]


def _refuse_if_running(cur: psycopg.Cursor, settings: VeltrixConfig) -> None:
    """Lock the control row (a coordinator starting now waits for this transaction) and
    refuse when its heartbeat is fresh."""
    s = settings
    cur.execute("SELECT to_regclass(%s)", (f'"{s.postgres.db_schema}"."{CONTROL}"',))
    row = cur.fetchone()
    if row is None or row[0] is None:
        return
    cur.execute(sql.SQL(
        "SELECT extract(epoch FROM now() - heartbeat_at)::float8, interval_s, owner FROM {} "
        "WHERE pipeline = %s AND topic = %s FOR UPDATE").format(
        sql.Identifier(s.postgres.db_schema, CONTROL)), (s.pipeline.name, s.kafka.topic))
    found = cur.fetchone()
    if found is None:
        return
    age, interval, owner = found
    if age is not None and age < stale_after(interval):
        raise PipelineRunning(
            f"pipeline {s.pipeline.name!r} (topic {s.kafka.topic!r}) is running ({owner}, "
            f"heartbeat {age:.1f}s ago); offsets can only be reset while it is stopped: run "
            "`veltrix-ray stop` with the same overrides first.")


def apply(settings: VeltrixConfig, target: Target, partitions: int,
          resolved: Mapping[int, int], beginning: Mapping[int, int], end: Mapping[int, int],
          *, dry_run: bool = False) -> list[Change]:
    """Plan against the stored rows and apply, in one transaction that first makes sure the
    pipeline is not running."""
    s = settings
    offsets = Offsets(s.postgres.db_schema, s.pipeline.name, s.kafka.topic)
    plane = ControlPlane(settings, max_elapsed_s=30.0,
                         application_name="veltrix-ray reset-offsets")
    if not dry_run:
        plane.setup()  # creates the schema if missing

    def run(cur: psycopg.Cursor) -> list[Change]:
        _refuse_if_running(cur, settings)
        cur.execute("SELECT to_regclass(%s)", (f'"{offsets.db_schema}"."veltrix_offsets"',))
        exists = cur.fetchone()
        if exists is None or exists[0] is None:
            if dry_run:
                return plan(target, partitions, resolved, {}, beginning, end)
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('veltrix-ray setup'))")
            offsets.create(cur)
        cur.execute(sql.SQL("SELECT partition, next_offset, owner_epoch FROM {} WHERE "
                            "pipeline = %s AND topic = %s ORDER BY partition FOR UPDATE"
                            ).format(offsets.ident), (offsets.pipeline, offsets.topic))
        stored = {p: (n, e) for p, n, e in cur.fetchall()}
        changes = plan(target, partitions, resolved, stored, beginning, end)
        todo = [c for c in changes if c.changed]
        if dry_run or not todo:
            return changes
        cur.execute(sql.SQL(
            "INSERT INTO {t} AS o (pipeline, topic, partition, next_offset, owner_epoch) "
            "SELECT %s, %s, v.p, v.o, 1 FROM unnest(%s::int[], %s::bigint[]) AS v(p, o) "
            "ON CONFLICT (pipeline, topic, partition) DO UPDATE SET "
            "next_offset = EXCLUDED.next_offset, owner_epoch = o.owner_epoch + 1, "
            "updated_at = now()").format(t=offsets.ident),
            (offsets.pipeline, offsets.topic, [c.partition for c in todo],
             [c.new for c in todo]))
        return changes

    return plane.transact("resetting offsets", run)
