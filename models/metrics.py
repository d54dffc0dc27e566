"""The paper's metrics, as plain NumPy (docs/fidelity.md, "Metrics and test protocols").

- segmentation: pixel accuracy over scored voxels (void / ignored labels excluded), plus
  per-class accuracy and mean IoU, all from one confusion matrix;
- flow: end-point error, mean over pixels of sqrt((u-u*)² + (v-v*)²), in pixels;
- colour: ADE, mean over voxels of the Euclidean distance between predicted and true
  (r, g, b) in [0, 1].
"""
from __future__ import annotations

import numpy as np


class Confusion:
    """Accumulates a K×K confusion matrix (rows = truth, cols = prediction)."""

    def __init__(self, k: int, ignore: int = 255):
        self.k, self.ignore = k, ignore
        self.m = np.zeros((k, k), dtype=np.int64)

    def add(self, truth, pred) -> None:
        t = np.asarray(truth).reshape(-1).astype(np.int64)
        p = np.asarray(pred).reshape(-1).astype(np.int64)
        keep = (t != self.ignore) & (t >= 0) & (t < self.k)
        self.m += np.bincount(self.k * t[keep] + p[keep], minlength=self.k ** 2).reshape(self.k, self.k)

    @property
    def scored(self) -> int:
        return int(self.m.sum())

    def pixel_accuracy(self) -> float:
        return float(np.trace(self.m) / max(self.m.sum(), 1))

    def per_class_accuracy(self) -> np.ndarray:
        rows = self.m.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, np.diag(self.m) / rows, np.nan)

    def iou(self) -> np.ndarray:
        inter = np.diag(self.m)
        union = self.m.sum(0) + self.m.sum(1) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, np.nan)

    def mean_iou(self) -> float:
        return float(np.nanmean(self.iou())) if np.isfinite(self.iou()).any() else float("nan")


def distances(pred, truth, axis: int = 0) -> np.ndarray:
    """Per-voxel Euclidean distance between two arrays along ``axis`` (the u,v or r,g,b
    axis), in float64."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ")
    return np.sqrt(((p - t) ** 2).sum(axis=axis))


def epe(flow, truth, valid=None, axis: int = 0) -> float:
    """Mean end-point error; (u, v) on ``axis`` (0 for (2, ...) arrays, -1 for (H, W, 2)).
    ``valid``: optional boolean mask over the remaining axes."""
    err = distances(flow, truth, axis)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        return float(err[v].mean()) if v.any() else float("nan")
    return float(err.mean())


def epe_sum(flow, truth, axis: int = 0) -> tuple[float, int]:
    """(sum of end-point errors, number of pixels), for accumulating over clips."""
    err = distances(flow, truth, axis)
    return float(err.sum()), int(err.size)


def ade(rgb, truth, axis: int = 0) -> float:
    """Mean Euclidean distance between colours, (r, g, b) on ``axis``."""
    s, n = ade_sum(rgb, truth, axis)
    return s / max(n, 1)


def ade_sum(rgb, truth, axis: int = 0) -> tuple[float, int]:
    d = distances(rgb, truth, axis)
    return float(d.sum()), int(d.size)
