"""Shape, parameter and FLOP inference for Caffe nets, in pure Python.

Mirrors the engine's own arithmetic so that a net can be checked before Caffe sees it: a
bad size gives a ``ShapeError`` naming the layer, instead of a glog abort. Used by the
validator and by ``tools.net_summary``. The layer types with parameters (convolutions,
poolings, InnerProduct) take their rules from ``models.layerspec``; the others are
shape functions in the ``INFER`` table here.

    infer_net(net_param, phase="TEST", input_shapes=None) -> list[LayerInfo]

Shapes are tuples. A top whose shape cannot be known statically (an unknown Python
layer, a data layer reading a missing file) is ``None`` and so is everything below it.
Python layers take part when their class has a classmethod
``infer_top_shapes(param_str, bottom_shapes) -> list[tuple]``.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field

from models.layerspec import SPECS, LayerSpecError, fmt

Shape = tuple


# One error type for every layer rule (models.layerspec); the old name stays for callers.
ShapeError = LayerSpecError


@dataclass
class LayerInfo:
    name: str
    type: str
    bottoms: list
    tops: list
    top_shapes: list
    param_shapes: list = field(default_factory=list)
    flops: int = 0

    @property
    def params(self) -> int | None:
        """Parameter count; None when a shape is not fully known."""
        if any(s is None or None in s for s in self.param_shapes):
            return None
        return sum(math.prod(s) for s in self.param_shapes)


def phase_name(p) -> str:
    return p if isinstance(p, str) else ("TRAIN" if p == 0 else "TEST")


def layer_in_phase(layer, phase: str) -> bool:
    """Caffe's include/exclude rules, on phase only (stage/level rules count as met)."""
    want = 0 if phase == "TRAIN" else 1
    if layer.include:
        return any((not r.HasField("phase")) or r.phase == want for r in layer.include)
    if layer.exclude:
        return not any(r.HasField("phase") and r.phase == want for r in layer.exclude)
    if layer.HasField("phase"):
        return layer.phase == want
    return True


# --------------------------------------------------------------------------- other types
def _source(field):
    """Input / DummyData: one shape per top, or one shape for all."""
    def infer(layer, bs):
        shapes = [tuple(s.dim) for s in getattr(layer, field).shape]
        return (shapes * len(layer.top) if len(shapes) == 1 else shapes), [], 0
    return infer


def _python(layer, bs):
    p = layer.python_param
    try:
        mod = importlib.import_module(p.module)
    except ImportError as e:
        raise ShapeError(layer, f"module '{p.module}' cannot be imported: {e}") from None
    cls = getattr(mod, p.layer, None)
    if cls is None:
        raise ShapeError(layer, f"module '{p.module}' has no class '{p.layer}'")
    fn = getattr(cls, "infer_top_shapes", None)
    if fn is None or any(s is None for s in bs):
        return [None] * len(layer.top), [], 0
    try:
        shapes = fn(p.param_str, [tuple(s) for s in bs])
    except (ValueError, KeyError, TypeError) as e:
        raise ShapeError(layer, str(e)) from None
    return [tuple(s) if s is not None else None for s in shapes], [], 0


def _spec(layer, bs):
    r = SPECS[layer.type].resolve(layer, bs[0])
    return [r.top], r.param_shapes, r.flops


def _concat(layer, bs):
    ax = layer.concat_param.axis if layer.concat_param.HasField("axis") else 1
    if layer.concat_param.HasField("concat_dim"):
        ax = layer.concat_param.concat_dim
    ref = bs[0]
    ax %= len(ref)
    for i, s in enumerate(bs[1:], 1):
        if len(s) != len(ref) or any(a != c for j, (a, c) in enumerate(zip(s, ref)) if j != ax):
            hint = ""
            if len(ref) == 5:
                hint = (" (a V2V net needs clip length divisible by 8 and height/width "
                        "divisible by 16)")
            raise ShapeError(layer, f"bottom {layer.bottom[i]} is {fmt(s)} but {layer.bottom[0]} is "
                                    f"{fmt(ref)}: all axes but {ax} must match{hint}")
    top = list(ref)
    top[ax] = sum(s[ax] for s in bs)
    return [tuple(top)], [], 0


def _reshape(layer, bs):
    b = bs[0]
    p = layer.reshape_param
    dims = list(p.shape.dim)
    ax = p.axis % (len(b) + 1) if p.axis < 0 else p.axis
    na = p.num_axes
    end = len(b) if na == -1 else ax + na
    mid = b[ax:end]
    out = []
    for i, d in enumerate(dims):
        out.append(mid[i] if d == 0 else d)
    if -1 in out:
        known = math.prod(x for x in out if x != -1)
        out[out.index(-1)] = math.prod(mid) // known if known else 0
    if math.prod(out) != math.prod(mid):
        raise ShapeError(layer, f"cannot reshape {fmt(b)} to {dims}")
    return [tuple(b[:ax]) + tuple(out) + tuple(b[end:])], [], 0


def _crop(layer, bs):
    a, ref = bs
    ax = layer.crop_param.axis % len(a)
    top = tuple(a[:ax]) + tuple(ref[ax:])
    offs = list(layer.crop_param.offset)
    for i in range(ax, len(a)):
        o = offs[0] if len(offs) == 1 else (offs[i - ax] if offs else 0)
        if ref[i] + o > a[i]:
            raise ShapeError(layer, f"crop {fmt(ref)} at offset {o} exceeds {fmt(a)}")
    return [top], [], 0


def _split(layer, bs):
    return [bs[0]] * len(layer.top), [], 0


def _flatten(layer, bs):
    b = bs[0]
    return [(b[0], math.prod(b[1:]))], [], 0


def _eltwise(layer, bs):
    if any(s != bs[0] for s in bs):
        raise ShapeError(layer, "all bottoms must have the same shape: " + ", ".join(fmt(s) for s in bs))
    return [bs[0]], [], math.prod(bs[0]) * (len(bs) - 1)


def _scale(layer, bs):
    return [bs[0]], ([(bs[0][1],)] if len(bs) == 1 else []), math.prod(bs[0])


def _elementwise(layer, bs):
    return [bs[0]] * max(1, len(layer.top)), [], math.prod(bs[0])


def _loss(layer, bs):
    return [()] + [bs[0]] * (len(layer.top) - 1), [], 3 * math.prod(bs[0])


def _softmax_loss(layer, bs):
    if len(bs) >= 2:
        pred, lab = bs[0], bs[1]
        ax = (layer.softmax_param.axis if layer.HasField("softmax_param") else 1) % len(pred)
        outer = math.prod(pred[:ax])
        inner = math.prod(pred[ax + 1:])
        if outer * inner != math.prod(lab):
            raise ShapeError(layer, f"label {fmt(lab)} has {math.prod(lab)} values but prediction "
                                    f"{fmt(pred)} needs {outer * inner} (N×L×H×W)")
    return _loss(layer, bs)


def _euclidean_loss(layer, bs):
    a, b = bs[0], bs[1]
    if max(len(a), len(b)) > 4:
        raise ShapeError(layer, f"bottoms {fmt(a)}, {fmt(b)}: Caffe's EuclideanLoss aborts on blobs "
                                "of more than 4 axes (legacy num()); Flatten both first")
    if a != b and math.prod(a) != math.prod(b):
        raise ShapeError(layer, f"bottoms {fmt(a)} and {fmt(b)} differ")
    return _loss(layer, bs)


def _scalars(layer, bs):
    return [()] * len(layer.top), [], 0


ELEMENTWISE = {"ReLU", "Dropout", "Sigmoid", "TanH", "Power", "AbsVal", "BNLL", "ELU",
               "Exp", "Log", "PReLU", "Softmax", "LRN", "MVN", "BatchNorm", "Threshold"}
LOSSES = {"SigmoidCrossEntropyLoss", "HingeLoss", "MultinomialLogisticLoss", "InfogainLoss",
          "ContrastiveLoss"}

# Layers that make their tops without (known) bottoms.
SOURCES = {"Input": _source("input_param"), "DummyData": _source("dummy_data_param"), "Python": _python}
# {type: infer(layer, bottom shapes) -> (top shapes, parameter shapes, FLOPs)}; every bottom known.
INFER = {**{t: _spec for t in SPECS}, **{t: _elementwise for t in ELEMENTWISE},
         **{t: _loss for t in LOSSES},
         "SoftmaxWithLoss": _softmax_loss, "EuclideanLoss": _euclidean_loss, "Concat": _concat,
         "Reshape": _reshape, "Crop": _crop, "Split": _split, "Flatten": _flatten, "Eltwise": _eltwise,
         "Scale": _scale, "Accuracy": _scalars, "Silence": _scalars}


def infer_layer(layer, bs):
    """Top shapes, parameter shapes and FLOPs of one layer given its bottom shapes; a type
    that is not known here gives unknown (None) tops."""
    t = layer.type
    if t in SOURCES:
        return SOURCES[t](layer, bs)
    if any(s is None for s in bs):
        params = SPECS[t].resolve(layer, None).param_shapes if t in SPECS else []
        return [None] * len(layer.top), params, 0
    if t in INFER:
        return INFER[t](layer, bs)
    return [None] * len(layer.top), [], 0


def infer_net(net_param, phase: str = "TEST", input_shapes: dict | None = None) -> list[LayerInfo]:
    """Walk the layers of ``net_param`` active in ``phase`` and infer every blob shape.

    ``input_shapes`` overrides the shapes of named blobs produced by Input/data layers
    (e.g. {"data": (1, 3, 8, 32, 32)}). Raises ShapeError for a layer that cannot be set
    up, or for a bottom that no earlier layer produces.
    """
    phase = phase_name(phase)
    blobs: dict[str, Shape | None] = {}
    for i, name in enumerate(net_param.input):  # legacy input fields
        if i < len(net_param.input_shape):
            blobs[name] = tuple(net_param.input_shape[i].dim)
        elif len(net_param.input_dim) >= 4 * (i + 1):
            blobs[name] = tuple(net_param.input_dim[4 * i: 4 * i + 4])
        else:
            blobs[name] = None
    for k, v in (input_shapes or {}).items():
        if k in blobs:
            blobs[k] = tuple(v)
    infos = []
    for layer in net_param.layer:
        if not layer_in_phase(layer, phase):
            continue
        for bname in layer.bottom:
            if bname not in blobs:
                raise ShapeError(layer, f"bottom '{bname}' is not produced by any earlier layer "
                                        f"in phase {phase}")
        bs = [blobs[x] for x in layer.bottom]
        tops, params, flops = infer_layer(layer, bs)
        tops = list(tops)
        if input_shapes:
            tops = [tuple(input_shapes[tn]) if tn in input_shapes else s
                    for tn, s in zip(layer.top, tops)]
        for tn, s in zip(layer.top, tops):
            blobs[tn] = s
        infos.append(LayerInfo(layer.name, layer.type, list(layer.bottom), list(layer.top),
                               tops, params, flops))
    return infos
