"""Avro in the Confluent wire format decoded into Arrow-layout column buffers."""

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

def schema_ids(values: Sequence[bytes | None]) -> list[int]:
    """Schema id per value: -1 for None or under 5 bytes, -2 for a magic byte other than 0."""
