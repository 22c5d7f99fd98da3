"""Structural checks of model files that come without a sha256: a truncated file must never be placed.

A `.safetensors` file is 8 bytes of little-endian header length N, N bytes of JSON header (tensor name ->
dtype, shape, data_offsets relative to the end of the header; plus an optional `__metadata__`), then the
tensor data: the file is exactly 8 + N + the largest data_offsets end long.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER = 100 * 1024 * 1024  # the format's own limit: a larger "length" is not a safetensors header


def needs_structure_check(name: str) -> bool:
    """Whether a file of this name has a structure we check when no sha256 is known."""
    return name.lower().endswith(".safetensors")


def safetensors_problem(path: Path) -> str | None:
    """None when `path` is a whole safetensors file, else what is wrong with it, in words."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = fh.read(8)
            if len(head) < 8:
                return f"not a safetensors file: only {size} bytes, shorter than its 8-byte header length"
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                return f"not a safetensors file: its header length ({n} bytes) is beyond the format's limit"
            if 8 + n > size:
                return f"truncated safetensors file: its header alone needs {8 + n} bytes, the file has {size}"
            raw = fh.read(n)
    except OSError as e:
        return f"cannot read it to check its structure: {e.strerror or e}"
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"not a safetensors file: its header is not JSON ({e})"
    if not isinstance(header, dict):
        return "not a safetensors file: its header is not a JSON object"
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"not a safetensors file: tensor {name!r} has no valid data_offsets"
        end = max(end, offsets[1])
    expected = 8 + n + end
    if size < expected:
        return f"truncated safetensors file: its header describes {expected} bytes, the file has {size}"
    if size > expected:
        return f"damaged safetensors file: its header describes {expected} bytes, the file has {size}"
    return None
