"""Caffe Python layers used by the generated V2V nets.

Every layer here runs unchanged on the authors' Caffe (C3D-v1.1 built WITH_PYTHON_LAYER):
it needs only ``caffe.Layer``, NumPy and models.layerspec (stdlib only). Parameters come as
a JSON object in ``python_param { param_str: '...' }``; an empty param_str means all
defaults. Unknown keys are an error, so a typo fails at net setup instead of being ignored.
The param_str schemas and top shapes are the layers' specs (models.layerspec.PYTHON_SPECS),
shared with the torch runtime.

Layers
------
``HuberLoss``   bottoms: prediction, target (same count); top: loss (scalar).
    The paper's flow loss (Tran et al. 2016, eq. 1), summed over every voxel and divided
    by the batch size N, the way Caffe's EuclideanLoss sums (so the paper's lr 1e-8
    applies): loss = (1/N) Σ H(p - t).
    params:
      variant  "paper" (default): H(x) = ½x² if |x| ≤ 1 else |x|   (as printed; not
                                   continuous at |x| = 1)
               "standard":         H(x) = ½x² if |x| ≤ 1 else |x| − ½ (the usual Huber)
      Both have the same gradient: x if |x| ≤ 1 else sign(x).

``ClippedEuclideanLoss``   bottoms: prediction, target; top: loss (scalar).
    The authors' release VOXEL_CUSTOM_LOSS: d = clip(p − t, −1, 1);
    reported loss = Σ d² / count (mean over all values, as the release prints it);
    gradient wrt p = d / N (batch size N, as the release's backward) — the release's
    loss value and gradient use different normalisers; we keep both as released.
    params: none.

``TrilinearUpsample``   bottoms: x (N,C,L,H,W) [, reference (.., .., L', H', W')];
    top: y (N,C,L',H',W'). Fixed (no parameters) trilinear interpolation, exact from
    iteration 0, forward and backward (backward is the transpose of the interpolation;
    nothing flows into the reference bottom).
    params (give exactly one way of setting the output size, or a second bottom):
      factor         int or [fL, fH, fW]: output = input × factor
      size           [L', H', W']: output size
      (second bottom) output size = that blob's last three axes (e.g. the input clip)
      align_corners  false (default): half-pixel centres, src = (dst + ½)·in/out − ½,
                     clamped at the borders (PyTorch align_corners=False, scipy
                     ndimage.zoom(order=1, grid_mode=True, mode="nearest"));
                     true: src = dst·(in − 1)/(out − 1).

Each class has ``infer_top_shapes(param_str, bottom_shapes)`` for models.shapes.
"""
from __future__ import annotations

import importlib

import numpy as np

from models.layerspec import PYTHON_SPECS, trilinear_size


def _layer_base():
    # pycaffe's Layer. We import caffe ourselves rather than through models.engine: the
    # engine gateway calls set_mode_cpu(), which must not happen inside a GPU `caffe train`
    # on the authors' Caffe. Without pycaffe (shape inference only) a plain object will do.
    try:
        return importlib.import_module("caffe").Layer
    except ImportError:  # pragma: no cover - machines without the engine
        return object


_Layer = _layer_base()


class _SpecLayer(_Layer):
    """param_str parsing and top shapes from the layer's spec (PYTHON_SPECS[class name])."""

    @classmethod
    def spec(cls):
        return PYTHON_SPECS[cls.__name__]

    @classmethod
    def infer_top_shapes(cls, param_str, bottom_shapes):
        return cls.spec().top_shapes(param_str, bottom_shapes)


class _PairLoss(_SpecLayer):
    """Two bottoms of equal count, a scalar loss top."""

    def setup(self, bottom, top):
        self.p = self.spec().parse(self.param_str)
        if len(top) != 1:
            raise ValueError(f"{type(self).__name__} has one top (the loss)")

    def reshape(self, bottom, top):
        # the spec's rule: two bottoms of equal count (pycaffe's blob vector is not iterable)
        self.spec().shapes(self.p, [bottom[i].data.shape for i in range(len(bottom))])
        top[0].reshape()


class HuberLoss(_PairLoss):
    __doc__ = __doc__.split("``HuberLoss``")[1].split("``ClippedEuclideanLoss``")[0]

    @staticmethod
    def value(x: np.ndarray, variant: str = "paper") -> np.ndarray:
        a = np.abs(x)
        big = a - 0.5 if variant == "standard" else a
        return np.where(a <= 1, 0.5 * x * x, big)

    def forward(self, bottom, top):
        d = (bottom[0].data - bottom[1].data.reshape(bottom[0].data.shape)).astype(np.float64)
        self.d = d
        top[0].data[...] = self.value(d, self.p["variant"]).sum() / bottom[0].data.shape[0]

    def backward(self, top, propagate_down, bottom):
        g = np.clip(self.d, -1.0, 1.0) * (top[0].diff.item() / bottom[0].data.shape[0])
        if propagate_down[0]:
            bottom[0].diff[...] = g
        if propagate_down[1]:
            bottom[1].diff[...] = -g.reshape(bottom[1].diff.shape)


class ClippedEuclideanLoss(_PairLoss):
    __doc__ = __doc__.split("``ClippedEuclideanLoss``")[1].split("``TrilinearUpsample``")[0]

    def forward(self, bottom, top):
        d = bottom[0].data - bottom[1].data.reshape(bottom[0].data.shape)
        self.d = np.clip(d, -1.0, 1.0).astype(np.float64)
        top[0].data[...] = (self.d ** 2).sum() / bottom[0].count

    def backward(self, top, propagate_down, bottom):
        g = self.d * (top[0].diff.item() / bottom[0].data.shape[0])
        if propagate_down[0]:
            bottom[0].diff[...] = g
        if propagate_down[1]:
            bottom[1].diff[...] = -g.reshape(bottom[1].diff.shape)


# --------------------------------------------------------------------------- upsampling
def interp_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D linear interpolation weights."""
    m = np.zeros((n_out, n_in), np.float64)
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = (dst + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    np.add.at(m, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(m, (np.arange(n_out), i1), w1)
    return m


def trilinear(x: np.ndarray, mats) -> np.ndarray:
    """Apply per-axis matrices to the last three axes of x (N,C,L,H,W)."""
    ml, mh, mw = mats
    y = np.einsum("ncdhw,Dd->ncDhw", x, ml, optimize=True)
    y = np.einsum("ncdhw,Hh->ncdHw", y, mh, optimize=True)
    return np.einsum("ncdhw,Ww->ncdhW", y, mw, optimize=True)


class TrilinearUpsample(_SpecLayer):
    __doc__ = __doc__.split("``TrilinearUpsample``")[1].split("Each class has")[0]

    def setup(self, bottom, top):
        self.p = self.spec().parse(self.param_str)
        if len(top) != 1:
            raise ValueError("TrilinearUpsample has 1 top")
        self._key = None

    def reshape(self, bottom, top):
        shapes = [bottom[i].data.shape for i in range(len(bottom))]
        out = trilinear_size(self.p, shapes)
        key = (shapes[0][2:], out)
        if key != self._key:
            ac = bool(self.p["align_corners"])
            self.mats = [interp_matrix(i, o, ac) for i, o in zip(shapes[0][2:], out)]
            self._key = key
        top[0].reshape(*(tuple(shapes[0][:2]) + out))

    def forward(self, bottom, top):
        top[0].data[...] = trilinear(bottom[0].data, self.mats)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = trilinear(top[0].diff, [m.T for m in self.mats])
