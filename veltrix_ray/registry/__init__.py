"""Schemas from a Confluent-API schema registry (pipeline.format avro | protobuf)."""

from veltrix_ray.registry.client import (
    IncompatibleSchema,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    Schema,
    SchemaNotFound,
    Version,
)

__all__ = ["IncompatibleSchema", "RegistryClient", "RegistryError", "RegistryUnavailable",
           "Schema", "SchemaNotFound", "Version"]
