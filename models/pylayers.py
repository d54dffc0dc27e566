"""Caffe Python layers used by the generated V2V nets.

Every layer here runs unchanged on the authors' Caffe (C3D-v1.1 built WITH_PYTHON_LAYER):
it needs only ``caffe.Layer`` and NumPy. Parameters come as a JSON object in
``python_param { param_str: '...' }``; an empty param_str means all defaults. Unknown keys
are an error, so a typo fails at net setup instead of being ignored.

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
import json

import numpy as np


def _layer_base():
    # pycaffe's Layer. We import caffe ourselves rather than through models.engine: the
    # engine gateway calls set_mode_cpu(), which must not happen inside a GPU `caffe train`
    # on the authors' Caffe. Without pycaffe (shape inference only) a plain object will do.
    try:
        return importlib.import_module("caffe").Layer
    except ImportError:  # pragma: no cover - machines without the engine
        return object


_Layer = _layer_base()


def _params(param_str: str, allowed: dict, layer: str) -> dict:
    raw = json.loads(param_str) if param_str and param_str.strip() else {}
    if not isinstance(raw, dict):
        raise ValueError(f"{layer}: param_str must be a JSON object, got {param_str!r}")
    unknown = set(raw) - set(allowed)
    if unknown:
        raise ValueError(f"{layer}: unknown param(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = dict(allowed)
    out.update(raw)
    return out


def _count(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


class _PairLoss(_Layer):
    """Two bottoms of equal count, a scalar loss top."""
    NAME = "loss"
    ALLOWED: dict = {}

    @classmethod
    def infer_top_shapes(cls, param_str, bottom_shapes):
        cls._check(_params(param_str, cls.ALLOWED, cls.__name__))
        if len(bottom_shapes) != 2:
            raise ValueError(f"{cls.__name__} needs 2 bottoms (prediction, target), "
                             f"got {len(bottom_shapes)}")
        a, b = bottom_shapes
        if _count(a) != _count(b):
            raise ValueError(f"{cls.__name__}: prediction {a} and target {b} differ in size")
        return [()]

    def setup(self, bottom, top):
        self.p = _params(self.param_str, self.ALLOWED, type(self).__name__)
        if len(bottom) != 2:
            raise ValueError(f"{type(self).__name__} needs 2 bottoms (prediction, target)")
        if len(top) != 1:
            raise ValueError(f"{type(self).__name__} has one top (the loss)")
        self._check(self.p)

    @classmethod
    def _check(cls, p):
        pass

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise ValueError(f"{type(self).__name__}: prediction {bottom[0].data.shape} and "
                             f"target {bottom[1].data.shape} differ in size")
        top[0].reshape()


class HuberLoss(_PairLoss):
    __doc__ = __doc__.split("``HuberLoss``")[1].split("``ClippedEuclideanLoss``")[0]
    ALLOWED = {"variant": "paper"}

    @classmethod
    def _check(cls, p):
        if p["variant"] not in ("paper", "standard"):
            raise ValueError(f"HuberLoss: variant must be 'paper' or 'standard', "
                             f"got {p['variant']!r}")

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
    ALLOWED = {}

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


class TrilinearUpsample(_Layer):
    __doc__ = __doc__.split("``TrilinearUpsample``")[1].split("Each class has")[0]
    ALLOWED = {"factor": None, "size": None, "align_corners": False}

    @classmethod
    def _out_size(cls, p, bottom_shapes):
        x = bottom_shapes[0]
        if len(x) != 5:
            raise ValueError(f"TrilinearUpsample needs a 5D input (N,C,L,H,W), got {tuple(x)}")
        ways = (p["factor"] is not None) + (p["size"] is not None) + (len(bottom_shapes) > 1)
        if ways != 1:
            raise ValueError("TrilinearUpsample: give exactly one of factor, size or a second "
                             "(reference) bottom")
        if p["factor"] is not None:
            f = p["factor"]
            f = [f] * 3 if isinstance(f, int) else list(f)
            if len(f) != 3 or any((not isinstance(v, int)) or v < 1 for v in f):
                raise ValueError(f"TrilinearUpsample: factor must be an int >= 1 or 3 of them, got {p['factor']}")
            return tuple(int(a * b) for a, b in zip(x[2:], f))
        if p["size"] is not None:
            s = list(p["size"])
            if len(s) != 3 or any(v < 1 for v in s):
                raise ValueError(f"TrilinearUpsample: size must be [L, H, W], got {p['size']}")
            return tuple(int(v) for v in s)
        ref = bottom_shapes[1]
        if len(ref) < 3:
            raise ValueError(f"TrilinearUpsample: reference bottom {tuple(ref)} has fewer than 3 axes")
        return tuple(int(v) for v in ref[-3:])

    @classmethod
    def infer_top_shapes(cls, param_str, bottom_shapes):
        p = _params(param_str, cls.ALLOWED, cls.__name__)
        out = cls._out_size(p, [tuple(s) for s in bottom_shapes])
        return [tuple(bottom_shapes[0][:2]) + out]

    def setup(self, bottom, top):
        self.p = _params(self.param_str, self.ALLOWED, "TrilinearUpsample")
        if len(top) != 1 or len(bottom) not in (1, 2):
            raise ValueError("TrilinearUpsample takes 1 or 2 bottoms and has 1 top")
        self._key = None

    def reshape(self, bottom, top):
        shapes = [bottom[i].data.shape for i in range(len(bottom))]
        out = self._out_size(self.p, shapes)
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
