"""One spec per layer type: parameter rules, geometry, shapes, parameter blobs and FLOPs.

Every Python reader of a layer's rules asks here: shape inference and the validator
(models.shapes, models.validate), the torch runtime (torch_runtime.layers) and our Python
layers' param_str (models.pylayers, torch_runtime.pylayers_torch). The reference is the
engine's C++: engine/layers/v2v_conv3d_layers.cpp for the 3D layers, this fork's
base_conv_layer.cpp, conv/deconv_layer.cpp and pooling_layer.cpp for the mainline ones.
Adding a layer type means one spec here plus its implementations.

    spec = SPECS[lp.type]          # lp: a caffe_pb2.LayerParameter
    spec.check(lp)                 # rules that need no shape (LayerSpecError)
    r = spec.resolve(lp, bottom)   # r.geometry, r.top, r.param_shapes, r.flops

Shapes are tuples; parameter blob shapes are C3D-v1.1's (Convolution3D weight
(out, in/g, kd, k, k), Deconvolution3D (in, out/g, kd, k, k), bias (1, 1, 1, 1, out);
mainline bias (out,)). FLOPs count a multiply-add as 2.

Stdlib only: models.pylayers imports it inside the authors' Caffe.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

MAX, AVE = 0, 1   # PoolMethod values of PoolingParameter and Pooling3DParameter


class LayerSpecError(ValueError):
    """A layer's parameters or bottom shapes break the rules of its type."""

    def __init__(self, lp, msg: str):
        super().__init__(f"layer '{lp.name}' ({lp.type}): {msg}")
        self.layer, self.ltype, self.msg = lp.name, lp.type, msg


def fmt(shape) -> str:
    """1×3×8×32×32; unknown axes and shapes print as ?."""
    return "×".join("?" if d is None else str(d) for d in shape) if shape is not None else "?"


# --------------------------------------------------------------------------- output sizes
def conv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Convolution: floor((n + 2p - extent) / s) + 1, extent = d(k - 1) + 1."""
    return (n + 2 * p - (d * (k - 1) + 1)) // s + 1


def deconv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Deconvolution: (n - 1)s - 2p + extent."""
    return (n - 1) * s - 2 * p + d * (k - 1) + 1


def pooled_size(n: int, k: int, s: int, p: int, ceil_mode: bool = True, clip: bool = True) -> int:
    """Caffe's pooled size: ceil((n + 2p - k) / s) + 1 (floor when ceil_mode is off), then
    one less when the last window would start at or past n + p (``clip``).

    Pooling3D always clips; this fork's 2D Pooling clips only when the layer has padding
    (pad_h or pad_w), so without padding a stride larger than the kernel can leave an empty
    last window there, as in Caffe. PyTorch's ceil_mode rule is the clipping one.
    """
    span = n + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if clip and (out - 1) * s >= n + p:
        out -= 1
    return out


@dataclass(frozen=True)
class Geometry:
    """A layer's window, one value per spatial axis in blob order (L, H, W or H, W)."""
    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple

    @property
    def volume(self) -> int:
        return math.prod(self.kernel)


@dataclass(frozen=True)
class Resolved:
    """A layer set up for one bottom shape: what Caffe's LayerSetUp + Reshape decide."""
    geometry: Geometry | None
    top: tuple | None
    param_shapes: list
    flops: int


# --------------------------------------------------------------------------- base
class LayerSpec:
    """The rules of one layer type. Subclasses set the class fields and the hooks."""
    type = ""
    field = ""            # the LayerParameter field holding the parameters
    required = False      # Caffe aborts when the field is missing
    rank: int | None = None
    rank_hint = ""

    def param(self, lp):
        if self.required and not lp.HasField(self.field):
            raise LayerSpecError(lp, f"needs {self.field}")
        return getattr(lp, self.field)

    def check(self, lp) -> None:
        """The rules that need no bottom shape (the validator's structure pass)."""
        self.param(lp)

    def need_rank(self, lp, b) -> None:
        if self.rank is not None and len(b) != self.rank:
            raise LayerSpecError(lp, f"needs a {self.rank}D input, got {fmt(b)} ({len(b)}D)"
                                     + self.rank_hint)

    def resolve(self, lp, bottom) -> Resolved:
        """Check ``lp`` against the bottom shape; geometry, top, parameter shapes, FLOPs.
        A bottom of None (unknown shape) gives the parameter shapes only, unknown axes None."""
        self.check(lp)
        if bottom is None:
            return Resolved(None, None, self.param_shapes(lp, None), 0)
        b = tuple(bottom)
        self.need_rank(lp, b)
        g, top = self.top(lp, b)
        return Resolved(g, top, self.param_shapes(lp, b), self.flops(lp, b, top, g))

    def top(self, lp, b) -> tuple[Geometry | None, tuple]:
        raise NotImplementedError

    def param_shapes(self, lp, b) -> list:
        """Parameter blob shapes; ``b`` None (bottom unknown) leaves unknown axes None."""
        return []

    def flops(self, lp, b, top, g) -> int:
        return 0


# --------------------------------------------------------------------------- convolution
class _ConvSpec(LayerSpec):
    """Convolution and deconvolution: one weight, an optional bias, groups."""
    deconv = False

    def check(self, lp) -> None:
        p = self.param(lp)
        if p.num_output <= 0:
            raise LayerSpecError(lp, f"{self.field}.num_output must be > 0")
        if p.group <= 0:
            raise LayerSpecError(lp, f"{self.field}.group must be > 0")
        if p.num_output % p.group:
            raise LayerSpecError(lp, f"num_output {p.num_output} is not divisible by group {p.group}")

    def channel_axis(self, lp, b) -> int:
        return 1

    def geometry(self, lp, b) -> Geometry:
        raise NotImplementedError

    def bias_shape(self, num_output: int) -> tuple:
        raise NotImplementedError

    def top(self, lp, b):
        p = self.param(lp)
        ax = self.channel_axis(lp, b)
        if b[ax] % p.group:
            raise LayerSpecError(lp, f"input {fmt(b)}: its {b[ax]} channels are not divisible by "
                                     f"group {p.group}")
        g = self.geometry(lp, b)
        rule = deconv_out if self.deconv else conv_out
        out = tuple(rule(*a) for a in zip(b[ax + 1:], g.kernel, g.stride, g.pad, g.dilation))
        if min(out) <= 0:
            raise LayerSpecError(lp, f"input {fmt(b)} is too small for kernel {fmt(g.kernel)} "
                                     f"(output would be {fmt(out)})")
        return g, b[:ax] + (p.num_output,) + out

    def param_shapes(self, lp, b) -> list:
        p = self.param(lp)
        o, grp = p.num_output, p.group
        c = None if b is None else b[self.channel_axis(lp, b)]
        w = (c, o // grp) if self.deconv else (o, None if c is None else c // grp)
        return [w + self.geometry(lp, b).kernel] + ([self.bias_shape(o)] if p.bias_term else [])

    def flops(self, lp, b, top, g) -> int:
        grp = self.param(lp).group
        if self.deconv:
            return 2 * math.prod(b) * (top[self.channel_axis(lp, b)] // grp) * g.volume
        return 2 * math.prod(top) * (b[self.channel_axis(lp, b)] // grp) * g.volume


def _c3d_geometry(p) -> Geometry:
    """C3D-v1.1's 3D window: one spatial value for H and W, temporal ones for L."""
    return Geometry((p.kernel_depth, p.kernel_size, p.kernel_size), (p.temporal_stride, p.stride, p.stride),
                    (p.temporal_pad, p.pad, p.pad), (1, 1, 1))


class Convolution3DSpec(_ConvSpec):
    """C3D-v1.1 Convolution3D (engine/layers/v2v_conv3d_layers.cpp)."""
    type = "Convolution3D"
    field = "convolution3d_param"
    required = True
    rank = 5

    def check(self, lp) -> None:
        super().check(lp)
        p = self.param(lp)
        for f in ("kernel_size", "kernel_depth"):
            if getattr(p, f) <= 0:
                raise LayerSpecError(lp, f"convolution3d_param.{f} must be > 0")
        if p.stride <= 0 or p.temporal_stride <= 0:
            raise LayerSpecError(lp, "stride and temporal_stride must be > 0")
        if p.filter_group != 1:
            raise LayerSpecError(lp, "filter_group other than 1 is not supported")

    def geometry(self, lp, b=None) -> Geometry:
        return _c3d_geometry(self.param(lp))

    def bias_shape(self, num_output):
        return (1, 1, 1, 1, num_output)


class Deconvolution3DSpec(Convolution3DSpec):
    type = "Deconvolution3D"
    deconv = True


def _nd_raw(p, field: str, hw: str | None) -> list:
    """The values as written: name_h, name_w when either is set (2D), else the repeated field."""
    if hw and (p.HasField(f"{hw}_h") or p.HasField(f"{hw}_w")):
        return [getattr(p, f"{hw}_h"), getattr(p, f"{hw}_w")]
    return list(getattr(p, field))


class ConvolutionSpec(_ConvSpec):
    """Mainline N-D Convolution (base_conv_layer.cpp, conv_layer.cpp)."""
    type = "Convolution"
    field = "convolution_param"
    AXES = (("kernel_size", "kernel", None), ("stride", "stride", 1), ("pad", "pad", 0),
            ("dilation", None, 1))   # field, its 2D _h/_w prefix, default

    def check(self, lp) -> None:
        super().check(lp)
        p = self.param(lp)
        if not _nd_raw(p, "kernel_size", "kernel"):
            raise LayerSpecError(lp, "convolution_param needs kernel_size (or kernel_h and kernel_w)")
        for field, hw, _ in self.AXES:
            if field != "pad" and min(_nd_raw(p, field, hw), default=1) <= 0:
                raise LayerSpecError(lp, f"{field} must be > 0 on every spatial axis")

    def channel_axis(self, lp, b) -> int:
        ax = self.param(lp).axis
        if not -len(b) <= ax < len(b) or ax % len(b) == len(b) - 1:
            raise LayerSpecError(lp, f"channel axis {ax} leaves input {fmt(b)} no spatial axes")
        return ax % len(b)

    def geometry(self, lp, b) -> Geometry:
        p = self.param(lp)
        n = len(b) - self.channel_axis(lp, b) - 1
        return Geometry(*(self._per_axis(lp, p, field, hw, n, d) for field, hw, d in self.AXES))

    @staticmethod
    def _per_axis(lp, p, field, hw, n, default) -> tuple:
        """Caffe's rule: once for all axes, once per axis, or name_h/name_w with 2 axes."""
        if hw and (p.HasField(f"{hw}_h") or p.HasField(f"{hw}_w")):
            if n != 2:
                raise LayerSpecError(lp, f"{hw}_h/{hw}_w need 2 spatial axes, the input has {n}")
            if len(getattr(p, field)):
                raise LayerSpecError(lp, f"give {field} or {hw}_h/{hw}_w, not both")
        vals = _nd_raw(p, field, hw) or [default]
        if len(vals) not in (1, n):
            raise LayerSpecError(lp, f"{field} has {len(vals)} values for {n} spatial axes")
        return tuple(vals * n if len(vals) == 1 else vals)

    def param_shapes(self, lp, b) -> list:
        if b is None:   # the number of spatial axes is unknown
            p = self.param(lp)
            return [None] + ([self.bias_shape(p.num_output)] if p.bias_term else [])
        return super().param_shapes(lp, b)

    def bias_shape(self, num_output):
        return (num_output,)


class DeconvolutionSpec(ConvolutionSpec):
    """Mainline N-D Deconvolution (deconv_layer.cpp)."""
    type = "Deconvolution"
    deconv = True


class InnerProductSpec(LayerSpec):
    """Mainline InnerProduct: everything from ``axis`` on is one input vector."""
    type = "InnerProduct"
    field = "inner_product_param"

    def check(self, lp) -> None:
        if self.param(lp).num_output <= 0:
            raise LayerSpecError(lp, "inner_product_param.num_output must be > 0")

    def axis(self, lp, b) -> int:
        ax = self.param(lp).axis
        if not -len(b) <= ax < len(b):
            raise LayerSpecError(lp, f"axis {ax} is outside input {fmt(b)}")
        return ax % len(b)

    def top(self, lp, b):
        return None, b[:self.axis(lp, b)] + (self.param(lp).num_output,)

    def param_shapes(self, lp, b) -> list:
        p = self.param(lp)
        k = None if b is None else math.prod(b[self.axis(lp, b):])
        w = (k, p.num_output) if p.transpose else (p.num_output, k)
        return [w] + ([(p.num_output,)] if p.bias_term else [])

    def flops(self, lp, b, top, g) -> int:
        return 2 * math.prod(top) * math.prod(b[self.axis(lp, b):])


# --------------------------------------------------------------------------- pooling
class Pooling3DSpec(LayerSpec):
    """C3D-v1.1 Pooling3D (engine/layers/v2v_conv3d_layers.cpp); temporal_pad is ours."""
    type = "Pooling3D"
    field = "pooling3d_param"
    required = True
    rank = 5

    def check(self, lp) -> None:
        p = self.param(lp)
        if p.pool not in (MAX, AVE):
            raise LayerSpecError(lp, "Pooling3D supports MAX and AVE only")
        if p.kernel_size <= 0 or p.kernel_depth <= 0:
            raise LayerSpecError(lp, "pooling3d_param.kernel_size and kernel_depth must be > 0")
        if p.stride <= 0 or p.temporal_stride <= 0:
            raise LayerSpecError(lp, "stride and temporal_stride must be > 0")
        if p.pad >= p.kernel_size or p.temporal_pad >= p.kernel_depth:
            raise LayerSpecError(lp, "pad must be smaller than the kernel (pad < kernel_size, "
                                     "temporal_pad < kernel_depth)")

    def top(self, lp, b):
        g = _c3d_geometry(self.param(lp))
        if any(n + 2 * q < k for n, k, q in zip(b[2:], g.kernel, g.pad)):
            raise LayerSpecError(lp, f"input {fmt(b)} is smaller than kernel {fmt(g.kernel)}")
        return g, b[:2] + tuple(pooled_size(*a) for a in zip(b[2:], g.kernel, g.stride, g.pad))

    def flops(self, lp, b, top, g) -> int:
        return math.prod(top) * g.volume


class PoolingSpec(LayerSpec):
    """This fork's 2D Pooling (pooling_layer.cpp, with its ceil_mode field)."""
    type = "Pooling"
    field = "pooling_param"
    rank = 4
    rank_hint = " (Pooling is 2D in Caffe; use Pooling3D for N,C,L,H,W blobs)"

    def check(self, lp) -> None:
        if lp.HasField("pooling3d_param"):
            raise LayerSpecError(lp, "type Pooling with pooling3d_param; use type Pooling3D")
        p = self.param(lp)
        self._check_fields(lp, p)
        k, s, pad = self._values(p)
        if p.global_pooling and (any(pad) or s != (1, 1)):
            raise LayerSpecError(lp, "global_pooling needs pad 0 and stride 1")
        if k is not None and min(k) <= 0:
            raise LayerSpecError(lp, "kernel size must be > 0")
        if min(s) <= 0:
            raise LayerSpecError(lp, "stride must be > 0")
        if any(pad) and p.pool not in (MAX, AVE):
            raise LayerSpecError(lp, "padding works with MAX and AVE pooling only")
        if k is not None and any(q >= kk for q, kk in zip(pad, k)):
            raise LayerSpecError(lp, f"pad {fmt(pad)} must be smaller than the kernel {fmt(k)}")

    @staticmethod
    def _check_fields(lp, p) -> None:
        """Caffe's either-or rules for kernel_size / kernel_h, kernel_w (and pad, stride)."""
        has = p.HasField
        if p.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                raise LayerSpecError(lp, "global_pooling takes no kernel_size, kernel_h or kernel_w")
        elif has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            raise LayerSpecError(lp, "give kernel_size, or kernel_h and kernel_w (one of the two)")
        for f in ("pad", "stride"):
            if (has(f"{f}_h") or has(f"{f}_w")) and (has(f) or not (has(f"{f}_h") and has(f"{f}_w"))):
                raise LayerSpecError(lp, f"give {f}, or {f}_h and {f}_w (one of the two)")

    @staticmethod
    def _values(p) -> tuple:
        """(kernel or None with global_pooling, stride, pad) as (H, W) pairs."""
        k = None if p.global_pooling else (
            (p.kernel_size,) * 2 if p.HasField("kernel_size") else (p.kernel_h, p.kernel_w))
        s = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
        pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
        return k, s, pad

    def top(self, lp, b):
        p = self.param(lp)
        k, s, pad = self._values(p)
        g = Geometry(k or b[2:], s, pad, (1, 1))
        clip = any(pad)   # pooling_layer.cpp clips the last window only when padded
        out = tuple(pooled_size(*a, p.ceil_mode, clip) for a in zip(b[2:], g.kernel, s, pad))
        if min(out) <= 0:
            raise LayerSpecError(lp, f"input {fmt(b)} is too small for kernel {fmt(g.kernel)} "
                                     f"(output would be {fmt(out)})")
        return g, b[:2] + out

    def flops(self, lp, b, top, g) -> int:
        return math.prod(top) * g.volume


SPECS: dict[str, LayerSpec] = {s.type: s for s in (
    Convolution3DSpec(), Deconvolution3DSpec(), Pooling3DSpec(), ConvolutionSpec(),
    DeconvolutionSpec(), PoolingSpec(), InnerProductSpec())}


# --------------------------------------------------------------------------- Python layers
@dataclass(frozen=True)
class PythonLayerSpec:
    """param_str schema and top shapes of one of our Python layers (models.pylayers).

    param_str is a JSON object; empty means all defaults; an unknown key is an error (a typo
    fails at set-up instead of being ignored). Errors are ValueErrors naming the layer class.
    """
    name: str
    defaults: dict
    validate: Callable[[dict], None]
    shapes: Callable[[dict, list], list]   # (parsed params, bottom shapes) -> top shapes

    def parse(self, param_str: str) -> dict:
        try:
            raw = json.loads(param_str) if param_str and param_str.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.name}: param_str is not JSON ({e}): {param_str!r}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{self.name}: param_str must be a JSON object, got {param_str!r}")
        unknown = set(raw) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown param(s) {sorted(unknown)}; "
                             f"allowed: {sorted(self.defaults)}")
        p = {**self.defaults, **raw}
        self.validate(p)
        return p

    def top_shapes(self, param_str: str, bottom_shapes) -> list:
        return self.shapes(self.parse(param_str), [tuple(s) for s in bottom_shapes])


def _pair_loss_shapes(name: str):
    def shapes(p, bottom_shapes):
        if len(bottom_shapes) != 2:
            raise ValueError(f"{name} needs 2 bottoms (prediction, target), got {len(bottom_shapes)}")
        a, b = bottom_shapes
        if math.prod(a) != math.prod(b):
            raise ValueError(f"{name}: prediction {a} and target {b} differ in size")
        return [()]
    return shapes


def _check_huber(p) -> None:
    if p["variant"] not in ("paper", "standard"):
        raise ValueError(f"HuberLoss: variant must be 'paper' or 'standard', got {p['variant']!r}")


def _no_params(p) -> None:
    pass


def _int_list(v, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(type(x) is int and x >= 1 for x in v)


def _check_trilinear(p) -> None:
    f, s = p["factor"], p["size"]
    if f is not None and not _int_list([f] * 3 if type(f) is int else f, 3):
        raise ValueError(f"TrilinearUpsample: factor must be an int >= 1 or 3 of them, got {f!r}")
    if s is not None and not _int_list(s, 3):
        raise ValueError(f"TrilinearUpsample: size must be [L, H, W] (ints >= 1), got {s!r}")


def trilinear_size(p: dict, bottom_shapes) -> tuple:
    """TrilinearUpsample's output (L', H', W') from its parsed params and bottom shapes."""
    if len(bottom_shapes) not in (1, 2):
        raise ValueError(f"TrilinearUpsample takes 1 or 2 bottoms, got {len(bottom_shapes)}")
    x = tuple(bottom_shapes[0])
    if len(x) != 5:
        raise ValueError(f"TrilinearUpsample needs a 5D input (N,C,L,H,W), got {x}")
    if (p["factor"] is not None) + (p["size"] is not None) + (len(bottom_shapes) > 1) != 1:
        raise ValueError("TrilinearUpsample: give exactly one of factor, size or a second "
                         "(reference) bottom")
    if p["factor"] is not None:
        f = p["factor"]
        return tuple(a * b for a, b in zip(x[2:], [f] * 3 if type(f) is int else f))
    if p["size"] is not None:
        return tuple(p["size"])
    ref = tuple(bottom_shapes[1])
    if len(ref) < 3:
        raise ValueError(f"TrilinearUpsample: reference bottom {ref} has fewer than 3 axes")
    return ref[-3:]


PYTHON_SPECS: dict[str, PythonLayerSpec] = {s.name: s for s in (
    PythonLayerSpec("HuberLoss", {"variant": "paper"}, _check_huber, _pair_loss_shapes("HuberLoss")),
    PythonLayerSpec("ClippedEuclideanLoss", {}, _no_params, _pair_loss_shapes("ClippedEuclideanLoss")),
    PythonLayerSpec("TrilinearUpsample", {"factor": None, "size": None, "align_corners": False},
                    _check_trilinear, lambda p, bs: [bs[0][:2] + trilinear_size(p, bs)]),
)}
