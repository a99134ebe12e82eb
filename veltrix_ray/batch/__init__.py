"""Records -> Arrow: schema from config, vectorised decode, isolation of bad records."""

from veltrix_ray.batch.decode import Decoded, Decoder
from veltrix_ray.batch.schema import METADATA, Column, arrow_schema, columns_from_config

__all__ = ["METADATA", "Column", "Decoded", "Decoder", "arrow_schema",
           "columns_from_config"]
