"""veltrix_codec, the Rust decoders (native/), or None: the Python paths then decode.

`VELTRIX_NO_CODEC=1` forces the Python paths, which stay the fallback and the oracle the
differential tests compare the codec with."""

from __future__ import annotations

import os
from typing import Any

NO_CODEC_ENV = "VELTRIX_NO_CODEC"


def codec() -> Any:
    if os.environ.get(NO_CODEC_ENV, "") not in ("", "0"):
        return None
    try:
        import veltrix_codec
    except ImportError:
        return None
    return veltrix_codec
