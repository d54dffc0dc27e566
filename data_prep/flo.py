"""Middlebury / MPI-Sintel ``.flo`` files.

Layout (little-endian): float32 magic 202021.25 (the bytes "PIEH"), int32 width, int32
height, then height·width·2 float32, (u, v) interleaved, row-major. Values above 1e9 mean
"unknown"; ``read_flo`` turns them into NaN when ``unknown_as_nan`` is set and refuses them
otherwise (Sintel's ground truth is known everywhere), and refuses NaN/inf and values beyond
10 frame sizes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAGIC = 202021.25
UNKNOWN = 1e9
PLAUSIBLE = 10  # a flow of more than 10 frame sizes is damage, not motion


class FloError(ValueError):
    """A .flo file that cannot be read; the message names the file."""


def read_flo(path, unknown_as_nan: bool = False) -> np.ndarray:
    """(H, W, 2) float32 flow from a .flo file; clear errors naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FloError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) < 12:
        raise FloError(f"{path}: truncated .flo ({len(raw)} bytes, the header alone is 12)")
    magic = np.frombuffer(raw, "<f4", 1, 0)[0]
    if magic != np.float32(MAGIC):
        raise FloError(f"{path}: not a .flo file (magic {magic!r}, expected {MAGIC})")
    w, h = (int(x) for x in np.frombuffer(raw, "<i4", 2, 4))
    if w <= 0 or h <= 0 or w * h > 1 << 28:
        raise FloError(f"{path}: implausible size {w}x{h} in the header")
    need = 12 + 8 * w * h
    if len(raw) < need:
        raise FloError(f"{path}: truncated .flo: {len(raw)} bytes, {need} needed for {w}x{h}")
    flow = np.frombuffer(raw, "<f4", 2 * w * h, 12).reshape(h, w, 2).astype(np.float32)
    check_values(path, flow, w, h, unknown_as_nan)
    if unknown_as_nan:
        flow[np.abs(flow) > UNKNOWN] = np.nan
    return flow


def check_values(path, flow: np.ndarray, w: int, h: int, unknown_ok: bool) -> None:
    """NaN/inf is no .flo value; unknown flow (|v| > 1e9, Middlebury's and Sintel's convention)
    only where the caller asks for it; anything else beyond PLAUSIBLE image sizes is damage."""
    n_bad = int(np.count_nonzero(~np.isfinite(flow)))
    if n_bad:
        raise FloError(f"{path}: {n_bad} NaN/inf values: not a valid .flo (unknown flow is stored as values "
                       f"above {UNKNOWN:g})")
    mag = np.abs(flow)
    unknown = mag > UNKNOWN
    if unknown.any() and not unknown_ok:
        raise FloError(f"{path}: {int(unknown.sum())} values marked unknown (above {UNKNOWN:g}); "
                       "this dataset's ground truth must be known everywhere")
    limit = PLAUSIBLE * max(w, h)
    big = (mag > limit) & ~unknown
    if big.any():
        raise FloError(f"{path}: {int(big.sum())} values beyond ±{limit:g} px (largest {float(mag[big].max()):g}): "
                       f"not a plausible flow for {w}x{h} frames")


def write_flo(path, flow: np.ndarray) -> Path:
    """Write (H, W, 2) flow; NaN is written as the 'unknown' value 1e10. Atomic (temp+rename)."""
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {flow.shape}")
    path = Path(path)
    h, w = flow.shape[:2]
    out = np.where(np.isnan(flow), np.float32(1e10), flow).astype("<f4")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(np.array([MAGIC], "<f4").tobytes())
        f.write(np.array([w, h], "<i4").tobytes())
        f.write(out.tobytes())
    os.replace(tmp, path)
    return path
