"""`veltrix-ray check`: the config against the real Kafka, PostgreSQL and Ray, reusing the
source's and the sink's own introspection."""

from veltrix_ray.check.checks import run_checks

__all__ = ["run_checks"]
