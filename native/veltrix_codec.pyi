"""Avro and Protobuf in the Confluent wire format, and JSON, decoded into Arrow-layout column
buffers."""

from collections.abc import Sequence

Buffers = tuple[bytes | None, bytes | None, bytes]
"""(validity bitmap or None when no nulls, int32 offsets or None, data) of one column."""

class AvroDecoder:
    def __init__(self, columns: Sequence[tuple[str, str, bool]]) -> None:
        """columns: (name, kind, nullable); kinds int64 float64 string bool timestamp date
        json bytes uuid decimal."""
    def add_schema(self, schema_id: int, writer_schema: str) -> None:
        """Compiles an Avro writer schema (JSON text); ValueError naming the field when one
        cannot go into its column."""
    def has(self, schema_id: int) -> bool: ...
    def decode(
        self, values: Sequence[bytes | None]
    ) -> tuple[list[int], list[tuple[int, str]], list[Buffers]]:
        """-> (positions decoded, [(position, error)], buffers per column of the decoded rows).
        Runs without the GIL; a decoder is used by one thread at a time."""

FieldPlan = tuple[int, str, int, bool, bool, int, int, int]
"""(number, name, FieldDescriptor type, repeated, has presence, oneof index or -1, message
index or -1, enum index or -1) of a field."""
MessagePlan = tuple[str, bool, list[FieldPlan]]
"""(full name, map entry, fields in declaration order) of a message type."""
EnumPlan = tuple[str, list[tuple[int, str]], bool]
"""(full name, (number, name) in declaration order, closed) of an enum type."""
TargetPlan = tuple[list[int], int, list[tuple[str, int, str]], str]
"""(message-index path, message index, (op, field index or -1, "field Msg.name") per column,
error or ""): ops missing scalar wrapper timestamp date decimal json; with an error, every
record of that path gets it."""

class ProtobufDecoder:
    def __init__(self, columns: Sequence[tuple[str, str, bool]]) -> None:
        """columns: (name, kind, nullable), as AvroDecoder's."""
    def add_schema(
        self,
        schema_id: int,
        messages: list[MessagePlan],
        enums: list[EnumPlan],
        targets: list[TargetPlan],
    ) -> None:
        """The plan of a compiled schema (veltrix_ray.batch.protobuf makes it); ValueError
        when it is inconsistent."""
    def has(self, schema_id: int) -> bool: ...
    def decode(
        self, values: Sequence[bytes | None]
    ) -> tuple[list[int], list[tuple[int, str]], list[Buffers]]:
        """As AvroDecoder.decode, for Protobuf values (magic byte, schema id, message-index
        list, payload)."""

def schema_ids(values: Sequence[bytes | None]) -> list[int]:
    """Schema id per value: -1 for None or under 5 bytes, -2 for a magic byte other than 0."""

class JsonDecoder:
    def __init__(self, columns: Sequence[tuple[str, str, bool]], max_record_bytes: int) -> None:
        """columns: (name, kind, nullable); kinds int64 float64 string bool timestamp date
        json uuid (ValueError for any other: the Python path decodes those)."""
    def decode(
        self, values: Sequence[bytes | None]
    ) -> tuple[list[int], list[int], list[int], list[Buffers]]:
        """-> (positions decoded, positions deferred to the Python path, positions of None,
        buffers per column of the decoded rows). Runs without the GIL; a decoder is used by
        one thread at a time."""
