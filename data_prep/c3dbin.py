"""C3D ``.bin`` volume files (C3D-v1.0's VIDEO_SEGMENTATION_DATA / feature blobs).

Layout: five little-endian int32 (n, c, l, h, w), then n·c·l·h·w values in C order —
float32 for features, uint8 for the V2V GATECH segmentation clips, whose last channel holds
the labels (the colour channels come first). Errors name the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class BinError(ValueError):
    pass


def read_c3d_bin(path, dtype=None) -> np.ndarray:
    """(n, c, l, h, w) array. dtype: None = guess from the file size (uint8 or float32)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BinError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) < 20:
        raise BinError(f"{path}: truncated C3D .bin ({len(raw)} bytes, the header is 20)")
    shape = tuple(int(x) for x in np.frombuffer(raw, "<i4", 5))
    if min(shape) <= 0:
        raise BinError(f"{path}: bad header shape {shape}")
    n = int(np.prod(shape))
    body = len(raw) - 20
    if dtype is None:
        dtype = np.uint8 if body == n else np.dtype("<f4") if body == 4 * n else None
        if dtype is None:
            raise BinError(f"{path}: {body} data bytes fit neither uint8 nor float32 {shape}")
    dtype = np.dtype(dtype)
    if body < n * dtype.itemsize:
        raise BinError(f"{path}: truncated: {body} data bytes, {n * dtype.itemsize} needed for {shape} {dtype}")
    if body != n * dtype.itemsize:
        held = {1: "uint8", 4: "float32"}.get(body // n if body % n == 0 else 0)
        raise BinError(f"{path}: {body} data bytes are {held} values for {shape}, expected {dtype}" if held else
                       f"{path}: {body - n * dtype.itemsize} bytes after the {shape} {dtype} data: damaged")
    return np.frombuffer(raw, dtype, n, 20).reshape(shape)


def write_c3d_bin(path, a: np.ndarray) -> Path:
    a = np.asarray(a)
    if a.ndim != 5:
        raise ValueError(f"C3D .bin holds (n, c, l, h, w), got {a.shape}")
    path = Path(path)
    dt = np.uint8 if a.dtype == np.uint8 else np.dtype("<f4")
    path.write_bytes(np.array(a.shape, "<i4").tobytes() + np.ascontiguousarray(a, dt).tobytes())
    return path
