"""Records -> Arrow: schema from config, vectorised decode, isolation of bad records."""

from veltrix_ray.batch.decode import BadRecord, Decoded, Decoder, Fetched
from veltrix_ray.batch.schema import METADATA, Column, arrow_schema, columns_from_config

__all__ = ["METADATA", "BadRecord", "Column", "Decoded", "Decoder", "Fetched", "arrow_schema",
           "columns_from_config"]
