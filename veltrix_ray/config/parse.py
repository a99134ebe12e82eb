"""Config values with a syntax of their own."""

from __future__ import annotations

import datetime as dt

from veltrix_ray.errors import ConfigError


def parse_start(start: str) -> str | int:
    """earliest | latest | an ISO-8601 timestamp (-> epoch milliseconds)."""
    if start in ("earliest", "latest"):
        return start
    try:
        ts = dt.datetime.fromisoformat(start)
    except ValueError as exc:
        raise ConfigError(f"kafka.start={start!r} is not earliest, latest or an ISO-8601 "
                          "timestamp such as 2026-11-26T00:00:00+00:00.") from exc
    if ts.tzinfo is None:
        raise ConfigError(f"kafka.start={start!r} has no time zone; add one, e.g. +00:00.")
    return int(ts.timestamp() * 1000)
