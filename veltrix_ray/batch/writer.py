"""A writer schema as the registry formats see it: one registered schema, and its top-level
fields as columns would hold them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Field:
    """A top-level field of a writer schema, as a column would hold it."""

    name: str
    kind: str
    nullable: bool  # null is one of its values (an Avro union with null, a proto3 optional)
    has_default: bool  # a reader without the field still reads old records


@dataclass(frozen=True)
class Writer:
    """One registered schema, as the decoder gets it."""

    id: int
    schema_type: str  # AVRO | PROTOBUF
    text: str
    references: dict[str, str] = field(default_factory=dict)  # import name -> text
    subject: str = ""
    version: int | None = None

    def where(self) -> str:
        version = f" version {self.version}" if self.version is not None else ""
        subject = f" of {self.subject}" if self.subject else ""
        return f"schema id {self.id}{subject}{version}"
