"""PostgreSQL: DDL from the Arrow schema, COPY, append/upsert, fenced offsets, dead letters."""

from veltrix_ray.sink.postgres import PostgresSink, make_sink, written

__all__ = ["PostgresSink", "make_sink", "written"]
