"""Shape, parameter and FLOP inference for Caffe nets, in pure Python.

Mirrors the engine's own arithmetic (engine/layers/*.cpp and Caffe's layers), so that a
net can be checked before Caffe sees it: a bad size gives a ``ShapeError`` naming the
layer, instead of a glog abort. Used by the validator and by ``tools.net_summary``.

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

Shape = tuple


class ShapeError(ValueError):
    """A layer cannot be set up with the shapes it gets."""

    def __init__(self, layer: str, ltype: str, msg: str):
        super().__init__(f"layer '{layer}' ({ltype}): {msg}")
        self.layer = layer


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


def fmt(shape) -> str:
    return "×".join("?" if d is None else str(d) for d in shape) if shape is not None else "?"


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


# --------------------------------------------------------------------------- helpers
def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def deconv_out(n, k, s, p):
    return (n - 1) * s - 2 * p + k


def pool_out(n, k, s, p):
    out = -(-(n + 2 * p - k) // s) + 1  # ceil
    if (out - 1) * s >= n + p:
        out -= 1
    return out


def _rep(values, n, default, what):
    v = list(values)
    if not v:
        return [default] * n
    if len(v) == 1:
        return v * n
    if len(v) != n:
        raise ValueError(f"{what} has {len(v)} values for {n} spatial axes")
    return v


def _need_rank(ltype, name, b, rank):
    if len(b) != rank:
        raise ShapeError(name, ltype, f"needs a {rank}D input, got {fmt(b)} ({len(b)}D)")


# --------------------------------------------------------------------------- 3D layers
def _conv3d(layer, b, deconv):
    t, n = layer.type, layer.name
    if not layer.HasField("convolution3d_param"):
        raise ShapeError(n, t, "has no convolution3d_param")
    p = layer.convolution3d_param
    _need_rank(t, n, b, 5)
    if p.kernel_size <= 0 or p.kernel_depth <= 0:
        raise ShapeError(n, t, "kernel_size and kernel_depth must be set and > 0")
    if p.num_output <= 0:
        raise ShapeError(n, t, "num_output must be > 0")
    if p.stride <= 0 or p.temporal_stride <= 0:
        raise ShapeError(n, t, "stride and temporal_stride must be > 0")
    if p.filter_group != 1:
        raise ShapeError(n, t, "filter_group other than 1 is not supported")
    g = p.group
    N, C, L, H, W = b
    if C % g or p.num_output % g:
        raise ShapeError(n, t, f"channels {C} and num_output {p.num_output} must divide by group {g}")
    kd, k = p.kernel_depth, p.kernel_size
    if deconv:
        out = (deconv_out(L, kd, p.temporal_stride, p.temporal_pad),
               deconv_out(H, k, p.stride, p.pad), deconv_out(W, k, p.stride, p.pad))
        wshape = (C, p.num_output // g, kd, k, k)
    else:
        out = (conv_out(L, kd, p.temporal_stride, p.temporal_pad),
               conv_out(H, k, p.stride, p.pad), conv_out(W, k, p.stride, p.pad))
        wshape = (p.num_output, C // g, kd, k, k)
    if min(out) <= 0:
        raise ShapeError(n, t, f"input {fmt(b)} is too small for kernel {kd}×{k}×{k} "
                               f"(output would be {fmt(out)})")
    top = (N, p.num_output) + out
    params = [wshape] + ([(1, 1, 1, 1, p.num_output)] if p.bias_term else [])
    kvol = kd * k * k
    flops = 2 * (math.prod(top) * (C // g) * kvol if not deconv else
                 math.prod(b) * (p.num_output // g) * kvol)
    return [top], params, flops


def _pool3d(layer, b):
    t, n = layer.type, layer.name
    if not layer.HasField("pooling3d_param"):
        raise ShapeError(n, t, "has no pooling3d_param")
    p = layer.pooling3d_param
    _need_rank(t, n, b, 5)
    if p.pool not in (0, 1):
        raise ShapeError(n, t, "only MAX and AVE pooling are supported")
    if p.kernel_size <= 0 or p.kernel_depth <= 0:
        raise ShapeError(n, t, "kernel_size and kernel_depth must be set and > 0")
    if p.stride <= 0 or p.temporal_stride <= 0:
        raise ShapeError(n, t, "stride and temporal_stride must be > 0")
    if p.pad >= p.kernel_size or p.temporal_pad >= p.kernel_depth:
        raise ShapeError(n, t, "pad must be smaller than the kernel")
    N, C, L, H, W = b
    if L + 2 * p.temporal_pad < p.kernel_depth or min(H, W) + 2 * p.pad < p.kernel_size:
        raise ShapeError(n, t, f"input {fmt(b)} is smaller than kernel "
                               f"{p.kernel_depth}×{p.kernel_size}×{p.kernel_size}")
    out = (pool_out(L, p.kernel_depth, p.temporal_stride, p.temporal_pad),
           pool_out(H, p.kernel_size, p.stride, p.pad), pool_out(W, p.kernel_size, p.stride, p.pad))
    top = (N, C) + out
    return [top], [], math.prod(top) * p.kernel_depth * p.kernel_size ** 2


# --------------------------------------------------------------------------- mainline
def _conv_nd(layer, b, deconv):
    t, n = layer.type, layer.name
    p = layer.convolution_param
    ax = p.axis if p.HasField("axis") else 1
    ax = ax % len(b)
    sp = len(b) - ax - 1
    if sp < 1:
        raise ShapeError(n, t, f"input {fmt(b)} has no spatial axes")
    try:
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            ks = [p.kernel_h, p.kernel_w]
        else:
            ks = _rep(p.kernel_size, sp, 0, "kernel_size")
        st = [p.stride_h, p.stride_w] if p.HasField("stride_h") else _rep(p.stride, sp, 1, "stride")
        pd = [p.pad_h, p.pad_w] if p.HasField("pad_h") else _rep(p.pad, sp, 0, "pad")
        dl = _rep(p.dilation, sp, 1, "dilation")
    except ValueError as e:
        raise ShapeError(n, t, str(e)) from None
    if len(ks) != sp or min(ks) <= 0:
        raise ShapeError(n, t, "kernel size must be given (> 0) for every spatial axis")
    C = b[ax]
    g = p.group
    if C % g or p.num_output % g:
        raise ShapeError(n, t, f"channels {C} / num_output {p.num_output} not divisible by group {g}")
    ek = [d * (k - 1) + 1 for k, d in zip(ks, dl)]
    if deconv:
        out = tuple(deconv_out(x, k, s, q) for x, k, s, q in zip(b[ax + 1:], ek, st, pd))
        wshape = (C, p.num_output // g, *ks)
    else:
        out = tuple(conv_out(x, k, s, q) for x, k, s, q in zip(b[ax + 1:], ek, st, pd))
        wshape = (p.num_output, C // g, *ks)
    if min(out) <= 0:
        raise ShapeError(n, t, f"input {fmt(b)} is too small for kernel {fmt(ks)}")
    top = tuple(b[:ax]) + (p.num_output,) + out
    params = [wshape] + ([(p.num_output,)] if p.bias_term else [])
    kv = math.prod(ks)
    flops = 2 * (math.prod(top) * (C // g) * kv if not deconv else
                 math.prod(b) * (p.num_output // g) * kv)
    return [top], params, flops


def _pool2d(layer, b):
    t, n = layer.type, layer.name
    p = layer.pooling_param
    _need_rank(t, n, b, 4)
    N, C, H, W = b
    if p.global_pooling:
        return [(N, C, 1, 1)], [], math.prod(b)
    kh = p.kernel_h if p.HasField("kernel_h") else p.kernel_size
    kw = p.kernel_w if p.HasField("kernel_w") else p.kernel_size
    sh = p.stride_h if p.HasField("stride_h") else p.stride
    sw = p.stride_w if p.HasField("stride_w") else p.stride
    ph = p.pad_h if p.HasField("pad_h") else p.pad
    pw = p.pad_w if p.HasField("pad_w") else p.pad
    if kh <= 0 or kw <= 0:
        raise ShapeError(n, t, "kernel_size must be > 0")

    def one(x, k, s, q):
        o = -(-(x + 2 * q - k) // s) + 1
        if q and (o - 1) * s >= x + q:
            o -= 1
        return o
    top = (N, C, one(H, kh, sh, ph), one(W, kw, sw, pw))
    return [top], [], math.prod(top) * kh * kw


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
            raise ShapeError(layer.name, layer.type,
                             f"bottom {layer.bottom[i]} is {fmt(s)} but {layer.bottom[0]} is "
                             f"{fmt(ref)}: all axes but {ax} must match{hint}")
    top = list(ref)
    top[ax] = sum(s[ax] for s in bs)
    return [tuple(top)], [], 0


def _reshape(layer, b):
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
        raise ShapeError(layer.name, layer.type, f"cannot reshape {fmt(b)} to {dims}")
    return [tuple(b[:ax]) + tuple(out) + tuple(b[end:])], [], 0


def _crop(layer, bs):
    a, ref = bs
    ax = layer.crop_param.axis % len(a)
    top = tuple(a[:ax]) + tuple(ref[ax:])
    offs = list(layer.crop_param.offset)
    for i in range(ax, len(a)):
        o = offs[0] if len(offs) == 1 else (offs[i - ax] if offs else 0)
        if ref[i] + o > a[i]:
            raise ShapeError(layer.name, layer.type, f"crop {fmt(ref)} at offset {o} exceeds {fmt(a)}")
    return [top], [], 0


def _inner_product(layer, b):
    p = layer.inner_product_param
    ax = (p.axis if p.HasField("axis") else 1) % len(b)
    k = math.prod(b[ax:])
    top = tuple(b[:ax]) + (p.num_output,)
    params = [(p.num_output, k)] + ([(p.num_output,)] if p.bias_term else [])
    return [top], params, 2 * math.prod(top) * k


def _python(layer, bs):
    p = layer.python_param
    try:
        mod = importlib.import_module(p.module)
    except ImportError as e:
        raise ShapeError(layer.name, "Python", f"module '{p.module}' cannot be imported: {e}") from None
    cls = getattr(mod, p.layer, None)
    if cls is None:
        raise ShapeError(layer.name, "Python", f"module '{p.module}' has no class '{p.layer}'")
    fn = getattr(cls, "infer_top_shapes", None)
    if fn is None or any(s is None for s in bs):
        return [None] * len(layer.top), [], 0
    try:
        shapes = fn(p.param_str, [tuple(s) for s in bs])
    except (ValueError, KeyError, TypeError) as e:
        raise ShapeError(layer.name, "Python", str(e)) from None
    return [tuple(s) if s is not None else None for s in shapes], [], 0


ELEMENTWISE = {"ReLU", "Dropout", "Sigmoid", "TanH", "Power", "AbsVal", "BNLL", "ELU",
               "Exp", "Log", "PReLU", "Softmax", "LRN", "MVN", "BatchNorm", "Threshold"}
LOSSES = {"SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
          "MultinomialLogisticLoss", "InfogainLoss", "ContrastiveLoss"}


def _softmax_loss_check(layer, bs):
    pred, lab = bs[0], bs[1]
    ax = (layer.softmax_param.axis if layer.HasField("softmax_param") else 1) % len(pred)
    outer = math.prod(pred[:ax])
    inner = math.prod(pred[ax + 1:])
    if outer * inner != math.prod(lab):
        raise ShapeError(layer.name, layer.type,
                         f"label {fmt(lab)} has {math.prod(lab)} values but prediction "
                         f"{fmt(pred)} needs {outer * inner} (N×L×H×W)")


def param_shapes_without_input(layer) -> list:
    """Parameter shapes known from the layer alone (None for the input-channel axis):
    used when the bottom shape is unknown (e.g. a Python data layer without
    infer_top_shapes)."""
    t = layer.type
    if t in ("Convolution3D", "Deconvolution3D") and layer.HasField("convolution3d_param"):
        p = layer.convolution3d_param
        k = (p.kernel_depth, p.kernel_size, p.kernel_size)
        w = (None, p.num_output // max(p.group, 1), *k) if t == "Deconvolution3D" else \
            (p.num_output, None, *k)
        return [w] + ([(1, 1, 1, 1, p.num_output)] if p.bias_term else [])
    if t in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        return [None] + ([(p.num_output,)] if p.bias_term else [])
    if t == "InnerProduct":
        p = layer.inner_product_param
        return [(p.num_output, None)] + ([(p.num_output,)] if p.bias_term else [])
    return []


def infer_layer(layer, bs):
    """Top shapes, parameter shapes and FLOPs of one layer given its bottom shapes."""
    t = layer.type
    if t == "Input":
        p = layer.input_param
        shapes = [tuple(s.dim) for s in p.shape]
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
        return shapes, [], 0
    if t == "DummyData":
        p = layer.dummy_data_param
        shapes = [tuple(s.dim) for s in p.shape]
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
        return shapes, [], 0
    if t == "Python":
        return _python(layer, bs)
    if any(s is None for s in bs):
        return [None] * len(layer.top), param_shapes_without_input(layer), 0
    if t == "Convolution3D":
        return _conv3d(layer, bs[0], deconv=False)
    if t == "Deconvolution3D":
        return _conv3d(layer, bs[0], deconv=True)
    if t == "Pooling3D":
        return _pool3d(layer, bs[0])
    if t == "Convolution":
        return _conv_nd(layer, bs[0], deconv=False)
    if t == "Deconvolution":
        return _conv_nd(layer, bs[0], deconv=True)
    if t == "Pooling":
        return _pool2d(layer, bs[0])
    if t == "Concat":
        return _concat(layer, bs)
    if t == "Reshape":
        return _reshape(layer, bs[0])
    if t == "Crop":
        return _crop(layer, bs)
    if t == "InnerProduct":
        return _inner_product(layer, bs[0])
    if t == "Split":
        return [bs[0]] * len(layer.top), [], 0
    if t == "Flatten":
        b = bs[0]
        return [(b[0], math.prod(b[1:]))], [], 0
    if t == "Eltwise":
        if any(s != bs[0] for s in bs):
            raise ShapeError(layer.name, t, "all bottoms must have the same shape: "
                             + ", ".join(fmt(s) for s in bs))
        return [bs[0]], [], math.prod(bs[0]) * (len(bs) - 1)
    if t == "Scale":
        return [bs[0]], ([(bs[0][1],)] if len(bs) == 1 else []), math.prod(bs[0])
    if t in ELEMENTWISE:
        return [bs[0]] * max(1, len(layer.top)), [], math.prod(bs[0])
    if t in LOSSES:
        if t == "SoftmaxWithLoss" and len(bs) >= 2:
            _softmax_loss_check(layer, bs)
        if t == "EuclideanLoss" and max(len(bs[0]), len(bs[1])) > 4:
            raise ShapeError(layer.name, t, f"bottoms {fmt(bs[0])}, {fmt(bs[1])}: Caffe's EuclideanLoss "
                             "aborts on blobs of more than 4 axes (legacy num()); Flatten both first")
        if t == "EuclideanLoss" and bs[0] != bs[1] and math.prod(bs[0]) != math.prod(bs[1]):
            raise ShapeError(layer.name, t, f"bottoms {fmt(bs[0])} and {fmt(bs[1])} differ")
        return [()] + [bs[0]] * (len(layer.top) - 1), [], 3 * math.prod(bs[0])
    if t == "Accuracy":
        return [()] * len(layer.top), [], 0
    if t == "Silence":
        return [], [], 0
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
                raise ShapeError(layer.name, layer.type, f"bottom '{bname}' is not produced by "
                                 f"any earlier layer in phase {phase}")
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
