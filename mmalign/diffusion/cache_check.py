"""Is a cached ``.safetensors`` entry whole? A header check that reads no tensor data.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON giving each tensor's dtype,
shape and ``data_offsets``, then the data. An entry is intact when the header parses, every tensor's byte span
matches its dtype and shape, and the file is exactly ``8 + n + end of the last span`` bytes long: a truncated or
overwritten entry (a full disk, a copy cut short) fails, and the cache re-encodes it instead of crashing the run.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER = 100 * 2**20


def safetensors_intact(path: str | os.PathLike) -> bool:
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                return False
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(header, dict):
        return False
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            expected = _ITEM_BYTES[info["dtype"]] * math.prod(info["shape"])
        except (KeyError, TypeError, ValueError):
            return False
        if stop - start != expected or start < 0:
            return False
        end = max(end, stop)
    return size == 8 + n + end
