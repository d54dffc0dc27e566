"""Middlebury colour-wheel pictures of optical flow (Baker et al., "A database and
evaluation methodology for optical flow", 2007/2011): hue = direction, saturation =
magnitude. Our own wheel (55 colours: RY 15, YG 6, GC 4, CB 11, BM 13, MR 6, as in the
Middlebury code). We normalise by the maximum magnitude ourselves: flow-vis's ``clip_flow``
option clips negative components wrongly (docs/fidelity.md, "Flow teacher and flow pictures").
"""
from __future__ import annotations

import numpy as np


def color_wheel() -> np.ndarray:
    """(55, 3) float RGB in [0, 255]."""
    RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6
    cols = []
    for n, (a, b) in zip((RY, YG, GC, CB, BM, MR),
                         (((255, 0, 0), (255, 255, 0)), ((255, 255, 0), (0, 255, 0)),
                          ((0, 255, 0), (0, 255, 255)), ((0, 255, 255), (0, 0, 255)),
                          ((0, 0, 255), (255, 0, 255)), ((255, 0, 255), (255, 0, 0)))):
        t = np.arange(n)[:, None] / n
        cols.append(np.array(a)[None] * (1 - t) + np.array(b)[None] * t)
    return np.concatenate(cols).astype(np.float64)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """(H, W, 2) flow → (H, W, 3) uint8 RGB. ``max_flow``: the magnitude drawn fully
    saturated (default: the largest finite magnitude in ``flow``); larger magnitudes are
    clipped to it and drawn darker, as in Middlebury's code. Unknown (NaN) pixels are black."""
    flow = np.asarray(flow, np.float64)
    u, v = flow[..., 0].copy(), flow[..., 1].copy()
    bad = ~np.isfinite(u) | ~np.isfinite(v) | (np.abs(u) > 1e9) | (np.abs(v) > 1e9)
    u[bad], v[bad] = 0, 0
    mag = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(mag.max()) if mag.size else 0.0
    max_flow = max(float(max_flow), 1e-9)
    u, v, r = u / max_flow, v / max_flow, mag / max_flow
    wheel = color_wheel()
    ncols = len(wheel)
    a = np.arctan2(-v, -u) / np.pi                      # in [-1, 1]
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    col = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255.0
    small = (r <= 1)[..., None]
    rr = r[..., None]
    col = np.where(small, 1 - rr * (1 - col), col * 0.75)
    out = np.floor(255 * col).astype(np.uint8)
    out[bad] = 0
    return out


def wheel_legend(size: int = 101) -> np.ndarray:
    """A picture of the wheel itself (flow pointing from the centre), for legends."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    f = np.stack([(xx - c) / c, (yy - c) / c], -1)
    img = flow_to_color(f, 1.0)
    img[np.hypot(f[..., 0], f[..., 1]) > 1] = 255
    return img
