"""Caffe ``Python`` layers in torch.

Known layers of ``models.pylayers`` run natively in torch (GPU, autocast) with the same
arithmetic as their NumPy code (HuberLoss, ClippedEuclideanLoss — including its loss value
and gradient normalised differently, as released — and TrilinearUpsample). Any other
Python layer runs its own NumPy ``setup/reshape/forward/backward`` on CPU through
``NumpyPythonLayer`` (an autograd.Function), so its semantics are exactly its code.

Python layers without bottoms are data layers: the net takes their tops from the caller;
``torch_runtime.data`` streams them from the same layer class as Caffe would.
"""
from __future__ import annotations

import importlib

import numpy as np
import torch
import torch.nn.functional as F

from models.layerspec import PYTHON_SPECS, trilinear_size

from .layers import CaffeLayer, register


# --------------------------------------------------------------------------- shims
class ShimBlob:
    """Enough of pycaffe's Blob for a Python layer's NumPy code."""

    def __init__(self, arr=None):
        self.data = np.zeros((), np.float32) if arr is None else np.ascontiguousarray(arr, np.float32)
        self.diff = np.zeros_like(self.data)

    def reshape(self, *shape):
        shape = tuple(int(s) for s in shape)
        if self.data.shape != shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    @property
    def shape(self):
        return self.data.shape

    @property
    def count(self):
        return int(self.data.size)

    @property
    def num(self):
        return self.data.shape[0]

    @property
    def channels(self):
        return self.data.shape[1]

    @property
    def height(self):
        return self.data.shape[2]

    @property
    def width(self):
        return self.data.shape[3]


def python_layer_class(lp):
    p = lp.python_param
    try:
        mod = importlib.import_module(p.module)
    except ImportError as e:
        raise ValueError(f"layer '{lp.name}' (Python): cannot import module {p.module!r} ({e})") from e
    try:
        return getattr(mod, p.layer)
    except AttributeError:
        raise ValueError(f"layer '{lp.name}' (Python): module {p.module} has no {p.layer}") from None


def instantiate_python_layer(lp, phase: str):
    """An instance of the layer's class outside Caffe: param_str and phase as attributes.

    pycaffe's Layer cannot be built from Python, so a subclass overrides __init__ and
    shadows the C++ properties (param_str, phase) with plain class attributes.
    """
    cls = python_layer_class(lp)
    ph = 0 if phase == "TRAIN" else 1
    shim = type(cls.__name__, (cls,), {"__init__": lambda self: None,
                                        "param_str": lp.python_param.param_str,
                                        "phase": ph,
                                        "__module__": cls.__module__})
    try:
        obj = shim()
    except TypeError:
        obj = object.__new__(shim)
    return obj


class _NumpyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, layer, *xs):
        obj = layer.obj
        bottoms = [ShimBlob(x.detach().float().cpu().numpy()) for x in xs]   # bf16 -> f32
        tops = [ShimBlob() for _ in layer.lp.top]
        obj.reshape(bottoms, tops)
        obj.forward(bottoms, tops)
        ctx.layer, ctx.bottoms, ctx.tops = layer, bottoms, tops
        ctx.devices = [x.device for x in xs]
        ctx.dtypes = [x.dtype for x in xs]
        return tuple(torch.from_numpy(t.data.copy()).to(xs[0].device) for t in tops)

    @staticmethod
    def backward(ctx, *grads):
        for t, g in zip(ctx.tops, grads):
            t.diff = (np.zeros_like(t.data) if g is None
                      else g.detach().cpu().numpy().astype(np.float32).reshape(t.data.shape))
        for b in ctx.bottoms:
            b.diff = np.zeros_like(b.data)
        prop = list(ctx.needs_input_grad[1:])
        ctx.layer.obj.backward(ctx.tops, prop, ctx.bottoms)
        return (None,) + tuple(torch.from_numpy(b.diff.copy()).to(d, dt) if p else None
                               for b, p, d, dt in zip(ctx.bottoms, prop, ctx.devices, ctx.dtypes))


class NumpyPythonLayer(CaffeLayer):
    """Any Caffe Python layer, running its own NumPy code (CPU)."""

    def setup(self, bottom_shapes):
        self.cls = python_layer_class(self.lp)
        self.obj = instantiate_python_layer(self.lp, self.phase)
        self._set_up = False

    def top_shapes(self, bottom_shapes):
        f = getattr(self.cls, "infer_top_shapes", None)
        if f is not None:
            return [tuple(s) for s in f(self.lp.python_param.param_str, [tuple(s) for s in bottom_shapes])]
        xs = [torch.zeros(s) for s in bottom_shapes]
        return [tuple(t.shape) for t in self.forward(*xs)]

    def forward(self, *xs):
        if not self._set_up:
            bottoms = [ShimBlob(x.detach().float().cpu().numpy()) for x in xs]
            tops = [ShimBlob() for _ in self.lp.top]
            self.obj.setup(bottoms, tops)
            self._set_up = True
        return list(_NumpyFn.apply(self, *xs))


# --------------------------------------------------------------------------- native ones
class _NativePython(CaffeLayer):
    """A models.pylayers layer in torch: param_str and top shapes from its spec
    (models.layerspec.PYTHON_SPECS), so both engines accept and reject the same params."""
    is_loss = False   # Python layers get a loss weight only from the prototxt, as in Caffe

    def setup(self, bottom_shapes):
        spec = PYTHON_SPECS[self.lp.python_param.layer]
        try:
            self.p = spec.parse(self.lp.python_param.param_str)
            spec.shapes(self.p, [tuple(s) for s in bottom_shapes])
        except ValueError as e:
            raise self.err(str(e)) from None


class HuberLoss(_NativePython):
    """models.pylayers.HuberLoss: Σ H(p − t) / N; gradient clip(p − t, −1, 1) / N."""

    def forward(self, p, t):
        d = p - t.reshape(p.shape)
        a = d.abs()
        big = a - 0.5 if self.p["variant"] == "standard" else a
        v = torch.where(a <= 1, 0.5 * d * d, big)
        # value from H, gradient clip(d) (also at |d| > 1 where 'paper' H has slope sign(d))
        return [(v.sum() / p.shape[0]).reshape(())]


class ClippedEuclideanLoss(_NativePython):
    """models.pylayers.ClippedEuclideanLoss: value Σ clip(d)² / count, gradient clip(d) / N."""

    def forward(self, p, t):
        d = p - t.reshape(p.shape)
        c = d.clamp(-1.0, 1.0)
        value = (c.detach() ** 2).sum() / p.numel()
        surrogate = (c.detach() * d).sum() / p.shape[0]
        return [(value + surrogate - surrogate.detach()).reshape(())]


class TrilinearUpsample(_NativePython):
    """models.pylayers.TrilinearUpsample: fixed trilinear interpolation (no gradient to ref)."""

    def forward(self, x, ref=None):
        out = list(trilinear_size(self.p, [x.shape] + ([] if ref is None else [ref.shape])))
        align = bool(self.p["align_corners"])
        if list(x.shape[2:]) == out and not align:
            return [x + 0]
        return [F.interpolate(x, size=out, mode="trilinear", align_corners=align)]


NATIVE = {("models.pylayers", "HuberLoss"): HuberLoss,
          ("models.pylayers", "ClippedEuclideanLoss"): ClippedEuclideanLoss,
          ("models.pylayers", "TrilinearUpsample"): TrilinearUpsample}


class PythonData(CaffeLayer):
    """A Python layer with no bottoms: a data layer; its tops are fed by the caller."""
    is_data = True

    def shapes(self):
        try:
            cls = python_layer_class(self.lp)
        except ValueError:
            return None
        f = getattr(cls, "infer_top_shapes", None)
        self.shape_error = None
        try:
            if f is not None:
                return [tuple(s) for s in f(self.lp.python_param.param_str, [])]
            # as Caffe does: set the layer up and reshape it (opens its database)
            obj = instantiate_python_layer(self.lp, self.phase)
            tops = [ShimBlob() for _ in self.lp.top]
            obj.setup([], tops)
            obj.reshape([], tops)
            return [tuple(t.data.shape) for t in tops]
        except Exception as e:  # noqa: BLE001 - e.g. a database that is not there yet
            self.shape_error = f"{type(e).__name__}: {e}"
            return None


@register("Python")
def make_python_layer(lp, phase: str, native: bool = True):
    if len(lp.bottom) == 0:
        return PythonData(lp, phase)
    key = (lp.python_param.module, lp.python_param.layer)
    if native and key in NATIVE:
        return NATIVE[key](lp, phase)
    return NumpyPythonLayer(lp, phase)
