"""PostgreSQL: DDL from the Arrow schema, COPY, append/upsert, fenced offsets, dead letters."""

from veltrix_ray.sink.postgres import Advance, Claim, PostgresSink, Totals, make_sink, written

__all__ = ["Advance", "Claim", "PostgresSink", "Totals", "make_sink", "written"]
