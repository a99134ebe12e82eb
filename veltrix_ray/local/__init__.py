"""The embedded local stack: single-node Apache Kafka (KRaft) and PostgreSQL on 127.0.0.1."""

from veltrix_ray.local.stack import LocalStack, StackStatus

__all__ = ["LocalStack", "StackStatus"]
