"""Records -> Arrow: one decoder contract (`contract`), a module per format (`json`, `avro`,
`protobuf`, the registry formats' routing in `registry`, keys in `keys`), the native codecs
(`native`) with the Python paths as fallback and oracle."""

from veltrix_ray.batch.contract import Decoded, RecordDecoder
from veltrix_ray.batch.json import Decoder
from veltrix_ray.batch.schema import METADATA, Column, arrow_schema, columns_from_config

__all__ = ["METADATA", "Column", "Decoded", "Decoder", "RecordDecoder", "arrow_schema",
           "columns_from_config"]
