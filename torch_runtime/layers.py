"""Torch implementations of the Caffe layer types the suite uses, matched to Caffe.

Each layer is an ``nn.Module`` built from its ``LayerParameter``. ``setup(bottom_shapes)``
creates the parameter blobs with exactly Caffe's blob shapes (so caffemodels move both
ways unchanged), ``forward(*bottoms)`` returns a list of tops. Layers whose blobs Caffe
keeps in a legacy shape (Convolution3D bias (1,1,1,1,out)) store that shape and view it.

Convolutions, poolings and InnerProduct take their rules, geometry, output sizes and blob
shapes from models.layerspec. Arithmetic references: engine/layers/v2v_conv3d_layers.cpp
(3D layers), BVLC Caffe (pooling_layer.cpp, softmax_loss_layer.cpp, loss_layer.cpp
GetNormalizer, euclidean_loss_layer.cpp, accuracy_layer.cpp, reshape/crop/concat).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layerspec import AVE, MAX, SPECS, LayerSpecError, pooled_size

FLT_MIN = float(np.finfo(np.float32).tiny)

REGISTRY: dict[str, type] = {}


def register(*types):
    def deco(cls):
        for t in types:
            REGISTRY[t] = cls
        return cls
    return deco


# One error type for every layer rule: LayerError(lp, msg) names the layer and its type.
LayerError = LayerSpecError


class CaffeLayer(nn.Module):
    """Base: name, type, LayerParameter, parameter blobs in Caffe order and shape."""
    is_loss = False          # default loss_weight 1 on its first top (Caffe's LossLayer)
    is_data = False          # a source layer (no bottoms; fed from a Dataset or the caller)

    def __init__(self, lp, phase: str):
        super().__init__()
        self.lname = lp.name
        self.ltype = lp.type
        self.lp = lp
        self.phase = phase
        self.blobs = nn.ParameterList()

    def err(self, msg):
        return LayerError(self.lp, msg)

    def add_blob(self, shape):
        p = nn.Parameter(torch.zeros(*shape, dtype=torch.float32))
        self.blobs.append(p)
        return p

    def setup(self, bottom_shapes):
        pass

    def top_shapes(self, bottom_shapes):
        """Top shapes from bottom shapes; default: run forward on meta tensors."""
        metas = [torch.empty(s, device="meta") for s in bottom_shapes]
        with torch.no_grad():
            tops = self.forward_meta(*metas)
        return [tuple(t.shape) for t in tops]

    def forward_meta(self, *bottoms):
        blobs = [nn.Parameter(b.detach().to("meta"), requires_grad=False) for b in self.blobs]
        saved = list(self.blobs)
        try:
            for i, b in enumerate(blobs):
                self.blobs[i] = b
            return self.forward(*bottoms)
        finally:
            for i, b in enumerate(saved):
                self.blobs[i] = b


# --------------------------------------------------------------------------- convolution
@register("Convolution3D", "Deconvolution3D", "Convolution", "Deconvolution")
class Conv(CaffeLayer):
    """Convolution3D / Deconvolution3D (C3D-v1.1) and mainline N-D Convolution /
    Deconvolution (1 to 3 spatial axes). Rules, geometry and blob shapes come from the
    layer's spec; a bias Caffe keeps as (1,1,1,1,out) is viewed flat."""

    def setup(self, bottom_shapes):
        spec, x = SPECS[self.ltype], tuple(bottom_shapes[0])
        r = spec.resolve(self.lp, x)
        self.geom = r.geometry
        if len(x) != len(self.geom.kernel) + 2:
            raise self.err("the torch runtime supports channel axis 1 only")
        if len(self.geom.kernel) not in (1, 2, 3):
            raise self.err(f"{len(self.geom.kernel)} spatial axes are not supported")
        self.deconv, self.group = spec.deconv, spec.param(self.lp).group
        for shape in r.param_shapes:
            self.add_blob(shape)
        self.bias_term = len(r.param_shapes) > 1

    def forward(self, x):
        w = self.blobs[0]
        b = self.blobs[1].reshape(-1) if self.bias_term else None
        g, n = self.geom, len(self.geom.kernel)
        if self.deconv:
            fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
            return [fn(x, w, b, g.stride, g.pad, 0, self.group, g.dilation)]
        fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        return [fn(x, w, b, g.stride, g.pad, g.dilation, self.group)]


@register("InnerProduct")
class InnerProduct(CaffeLayer):
    def setup(self, bottom_shapes):
        spec = SPECS["InnerProduct"]
        x = tuple(bottom_shapes[0])
        r = spec.resolve(self.lp, x)
        self.axis = spec.axis(self.lp, x)
        self.transpose = spec.param(self.lp).transpose
        for shape in r.param_shapes:
            self.add_blob(shape)
        self.bias_term = len(r.param_shapes) > 1

    def forward(self, x):
        x2 = x.flatten(self.axis)
        w = self.blobs[0].t() if self.transpose else self.blobs[0]
        return [F.linear(x2, w, self.blobs[1] if self.bias_term else None)]


# --------------------------------------------------------------------------- pooling
def caffe_pool(x, pool, kernel, stride, pad, out_sizes):
    """Caffe pooling over the trailing len(kernel) axes, with Caffe's output sizes.

    MAX: over the window clipped to the input (padding never wins; first maximum).
    AVE: sum over the window clipped to the input, divided by the window clipped to
    in + pad (Caffe's rule). Uses torch's pooling when its geometry is the same (torch's
    ceil_mode sizes follow models.layerspec.pooled_size with the clip).
    """
    n = len(kernel)
    ins = x.shape[-n:]
    # torch's pooling needs pad <= kernel / 2 and (avg_pool3d) an input no smaller than the kernel
    native = all(p <= k // 2 and i >= k and pooled_size(i, k, s, p) == o
                 for i, k, s, p, o in zip(ins, kernel, stride, pad, out_sizes))
    if pool == "MAX":
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
        if native:
            return fn(x, kernel, stride, pad, ceil_mode=True)
        # Explicit padding with -inf to exactly cover the last window.
        padspec = []
        for i, k, s, p, o in zip(reversed(ins), reversed(kernel), reversed(stride), reversed(pad),
                                 reversed(out_sizes)):
            right = max(0, (o - 1) * s + k - i - p)
            padspec += [p, right]
        xp = F.pad(x, padspec, value=float("-inf"))
        return fn(xp, kernel, stride, 0, ceil_mode=False)
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    if native:
        return fn(x, kernel, stride, pad, ceil_mode=True, count_include_pad=True)
    padspec = []
    divs = []
    for ax, (i, k, s, p, o) in enumerate(zip(ins, kernel, stride, pad, out_sizes)):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, i + p)
        divs.append(torch.as_tensor(end - start, dtype=x.dtype, device=x.device))
    for i, k, s, p, o in zip(reversed(ins), reversed(kernel), reversed(stride), reversed(pad),
                             reversed(out_sizes)):
        padspec += [p, max(0, (o - 1) * s + k - i - p)]
    xp = F.pad(x, padspec, value=0.0)
    y = fn(xp, kernel, stride, 0, ceil_mode=False) * float(np.prod(kernel))
    div = divs[0]
    for d in divs[1:]:
        div = div[..., None] * d
    return y / div


@register("Pooling3D", "Pooling")
class Pool(CaffeLayer):
    """Pooling3D (C3D-v1.1) and 2D Pooling, MAX and AVE: window and output sizes from the
    layer's spec, for each new input size (Caffe's Reshape)."""

    def setup(self, bottom_shapes):
        self._reshape(tuple(bottom_shapes[0]))
        pool = SPECS[self.ltype].param(self.lp).pool
        if pool not in (MAX, AVE):
            raise self.err("the torch runtime supports MAX and AVE pooling only")
        self.pool = "MAX" if pool == MAX else "AVE"

    def _reshape(self, shape):
        r = SPECS[self.ltype].resolve(self.lp, shape)
        self.kernel, self.stride, self.pad = r.geometry.kernel, r.geometry.stride, r.geometry.pad
        self.in_sizes, self.out_sizes = shape[2:], r.top[2:]

    def forward(self, x):
        if tuple(x.shape[2:]) != self.in_sizes:
            self._reshape(tuple(x.shape))
        return [caffe_pool(x, self.pool, self.kernel, self.stride, self.pad, self.out_sizes)]


# --------------------------------------------------------------------------- elementwise
@register("ReLU")
class ReLU(CaffeLayer):
    def forward(self, x):
        s = self.lp.relu_param.negative_slope
        return [F.leaky_relu(x, s) if s else F.relu(x)]


@register("Sigmoid")
class Sigmoid(CaffeLayer):
    def forward(self, x):
        return [torch.sigmoid(x)]


@register("TanH")
class TanH(CaffeLayer):
    def forward(self, x):
        return [torch.tanh(x)]


@register("Power")
class Power(CaffeLayer):
    def forward(self, x):
        p = self.lp.power_param
        y = x * p.scale + p.shift if (p.scale != 1 or p.shift != 0) else x
        return [y if p.power == 1 else y ** p.power]


@register("Dropout")
class Dropout(CaffeLayer):
    def forward(self, x):
        r = self.lp.dropout_param.dropout_ratio
        if self.phase == "TRAIN" and self.training and r > 0:
            return [F.dropout(x, r, True)]   # inverted dropout, scale 1/(1-r) as Caffe
        return [x]


@register("Eltwise")
class Eltwise(CaffeLayer):
    def forward(self, *xs):
        p = self.lp.eltwise_param
        if p.operation == 0:
            return [torch.stack(xs).prod(0)]
        if p.operation == 2:
            return [torch.stack(xs).amax(0)]
        coeff = list(p.coeff) or [1.0] * len(xs)
        y = xs[0] * coeff[0]
        for c, x in zip(coeff[1:], xs[1:]):
            y = y + c * x
        return [y]


@register("Split")
class Split(CaffeLayer):
    def forward(self, x):
        return [x] * len(self.lp.top)


@register("Silence")
class Silence(CaffeLayer):
    def forward(self, *xs):
        return []


@register("Concat")
class Concat(CaffeLayer):
    def forward(self, *xs):
        p = self.lp.concat_param
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        return [torch.cat(xs, axis)]


@register("Flatten")
class Flatten(CaffeLayer):
    def forward(self, x):
        p = self.lp.flatten_param
        return [x.flatten(p.axis, p.end_axis)]


@register("Reshape")
class Reshape(CaffeLayer):
    def forward(self, x):
        p = self.lp.reshape_param
        dims = list(p.shape.dim)
        nd = x.dim()
        start = p.axis if p.axis >= 0 else nd + p.axis + 1
        end = nd if p.num_axes == -1 else start + p.num_axes
        old = list(x.shape)
        new = []
        for i, d in enumerate(dims):
            if d == 0:
                new.append(old[start + i])
            else:
                new.append(int(d))
        shape = old[:start] + new + old[end:]
        if shape.count(-1) > 1:
            raise self.err("at most one -1 in reshape_param")
        return [x.reshape(shape)]


@register("Crop")
class Crop(CaffeLayer):
    def forward(self, x, ref):
        p = self.lp.crop_param
        axis = p.axis % x.dim()
        offs = list(p.offset)
        sl = [slice(None)] * x.dim()
        for i in range(axis, x.dim()):
            o = offs[0] if len(offs) == 1 else (offs[i - axis] if offs else 0)
            if o + ref.shape[i] > x.shape[i]:
                raise self.err(f"crop of {tuple(x.shape)} to {tuple(ref.shape)} at offset {o} "
                               f"is out of range on axis {i}")
            sl[i] = slice(o, o + ref.shape[i])
        return [x[tuple(sl)]]


@register("Softmax")
class Softmax(CaffeLayer):
    def forward(self, x):
        return [torch.softmax(x, self.lp.softmax_param.axis)]


# --------------------------------------------------------------------------- losses
def _normalization(lp):
    lp_ = lp.loss_param
    if not lp_.HasField("normalization") and lp_.HasField("normalize"):
        return "VALID" if lp_.normalize else "BATCH_SIZE"
    return {0: "FULL", 1: "VALID", 2: "BATCH_SIZE", 3: "NONE"}[lp_.normalization]


def _normalizer(mode, outer, inner, valid):
    if mode == "FULL":
        n = outer * inner
    elif mode == "VALID":
        n = valid
    elif mode == "BATCH_SIZE":
        n = outer
    else:
        n = 1
    if torch.is_tensor(n):
        return n.to(torch.float32).clamp(min=1.0)
    return max(1.0, float(n))


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(CaffeLayer):
    is_loss = True
    _checks = 0

    def forward(self, x, label):
        axis = self.lp.softmax_param.axis % x.dim()
        k = x.shape[axis]
        outer = int(np.prod(x.shape[:axis]))
        inner = int(np.prod(x.shape[axis + 1:]))
        if label.numel() != outer * inner:
            raise self.err(f"label count {label.numel()} != outer*inner {outer * inner} "
                           f"for input {tuple(x.shape)} at axis {axis}")
        logp = torch.log_softmax(x.float(), axis)
        lab = label.reshape(outer, inner).to(torch.int64)  # Caffe: static_cast<int>
        has_ignore = self.lp.loss_param.HasField("ignore_label")
        ign = self.lp.loss_param.ignore_label
        valid = lab != ign if has_ignore else torch.ones_like(lab, dtype=torch.bool)
        safe = torch.where(valid, lab, torch.zeros_like(lab))
        # label check: always on CPU; on GPUs only for the first batches (it syncs the device)
        if x.device.type != "meta" and not torch.compiler.is_compiling() and (
                x.device.type == "cpu" or self._checks < 3):
            self._checks += 1
            bad = valid & ((safe < 0) | (safe >= k))
            if bool(bad.any()):
                raise self.err(f"label values outside [0, {k}) that are not ignore_label")
        lp3 = logp.reshape(outer, k, inner)
        picked = lp3.gather(1, safe.unsqueeze(1)).squeeze(1)
        # Caffe: loss -log(max(p, FLT_MIN)) but gradient p - 1 even where p < FLT_MIN
        picked = picked + (picked.detach().clamp(min=math.log(FLT_MIN)) - picked.detach())
        loss = -(picked * valid).sum()
        mode = _normalization(self.lp)
        norm = _normalizer(mode, outer, inner, valid.sum() if has_ignore else outer * inner)
        out = [(loss / norm).reshape(())]
        if len(self.lp.top) > 1:
            out.append(torch.exp(logp))
        return out


@register("EuclideanLoss")
class EuclideanLoss(CaffeLayer):
    is_loss = True

    def forward(self, a, b):
        d = a - b.reshape(a.shape)
        return [(d * d).sum() / a.shape[0] / 2.0]


@register("Accuracy")
class Accuracy(CaffeLayer):
    def forward(self, x, label):
        p = self.lp.accuracy_param
        axis = p.axis % x.dim()
        k = x.shape[axis]
        outer = int(np.prod(x.shape[:axis]))
        inner = int(np.prod(x.shape[axis + 1:]))
        x3 = x.detach().reshape(outer, k, inner)
        lab = label.detach().reshape(outer, inner).to(torch.int64)
        valid = (lab != p.ignore_label if p.HasField("ignore_label")
                 else torch.ones_like(lab, dtype=torch.bool))
        top = x3.topk(p.top_k, dim=1).indices
        hit = (top == lab.unsqueeze(1)).any(1) & valid
        return [(hit.sum().float() / valid.sum().clamp(min=1).float()).reshape(())]


# --------------------------------------------------------------------------- inputs
@register("Input")
class Input(CaffeLayer):
    is_data = True

    def shapes(self):
        p = self.lp.input_param
        sh = list(p.shape)
        if len(sh) == 1 and len(self.lp.top) > 1:
            sh = sh * len(self.lp.top)
        return [tuple(int(d) for d in s.dim) for s in sh]

    def forward(self):  # pragma: no cover - fed by the caller
        raise RuntimeError("Input layers are fed by the caller")
