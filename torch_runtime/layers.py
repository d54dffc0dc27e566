"""Torch implementations of the Caffe layer types the suite uses, matched to Caffe.

Each layer is an ``nn.Module`` built from its ``LayerParameter``. ``setup(bottom_shapes)``
creates the parameter blobs with exactly Caffe's blob shapes (so caffemodels move both
ways unchanged), ``forward(*bottoms)`` returns a list of tops. Layers whose blobs Caffe
keeps in a legacy shape (Convolution3D bias (1,1,1,1,out)) store that shape and view it.

Arithmetic references: engine/layers/v2v_conv3d_layers.cpp (3D layers), BVLC Caffe
(pooling_layer.cpp with this fork's ceil_mode, softmax_loss_layer.cpp, loss_layer.cpp
GetNormalizer, euclidean_loss_layer.cpp, accuracy_layer.cpp, reshape/crop/concat).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FLT_MIN = float(np.finfo(np.float32).tiny)

REGISTRY: dict[str, type] = {}


def register(*types):
    def deco(cls):
        for t in types:
            REGISTRY[t] = cls
        return cls
    return deco


class LayerError(ValueError):
    def __init__(self, lp, msg):
        super().__init__(f"layer '{lp.name}' ({lp.type}): {msg}")


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
def _rep(field, n, default=None, name="value"):
    vals = list(field)
    if not vals:
        if default is None:
            raise ValueError(f"{name} is required")
        return [default] * n
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} values for {n} spatial axes")
    return vals


@register("Convolution3D", "Deconvolution3D")
class Conv3D(CaffeLayer):
    """C3D-v1.1 Convolution3D / Deconvolution3D (scalar spatial params, temporal ones)."""

    def setup(self, bottom_shapes):
        lp = self.lp
        if not lp.HasField("convolution3d_param"):
            raise self.err("needs convolution3d_param")
        p = lp.convolution3d_param
        self.deconv = lp.type == "Deconvolution3D"
        x = bottom_shapes[0]
        if len(x) != 5:
            raise self.err(f"needs a 5D (N,C,L,H,W) input, got {tuple(x)}")
        if not (p.kernel_size > 0 and p.kernel_depth > 0 and p.num_output > 0):
            raise self.err("kernel_size, kernel_depth and num_output must be > 0")
        if p.filter_group != 1:
            raise self.err("filter_group != 1 is not supported")
        self.group = p.group
        c, o = x[1], p.num_output
        if c % self.group or o % self.group:
            raise self.err("channels and num_output must be divisible by group")
        self.kernel = (p.kernel_depth, p.kernel_size, p.kernel_size)
        self.stride = (p.temporal_stride, p.stride, p.stride)
        self.pad = (p.temporal_pad, p.pad, p.pad)
        self.num_output = o
        self.add_blob((c, o // self.group) + self.kernel if self.deconv
                      else (o, c // self.group) + self.kernel)
        self.bias_term = p.bias_term
        if self.bias_term:
            self.add_blob((1, 1, 1, 1, o))

    def forward(self, x):
        w = self.blobs[0]
        b = self.blobs[1].reshape(-1) if self.bias_term else None
        if self.deconv:
            return [F.conv_transpose3d(x, w, b, self.stride, self.pad, groups=self.group)]
        return [F.conv3d(x, w, b, self.stride, self.pad, groups=self.group)]


@register("Convolution", "Deconvolution")
class ConvND(CaffeLayer):
    """Mainline Caffe N-D Convolution / Deconvolution (2D or 3D)."""

    def setup(self, bottom_shapes):
        lp = self.lp
        p = lp.convolution_param
        self.deconv = lp.type == "Deconvolution"
        x = bottom_shapes[0]
        if p.axis not in (1, -len(x) + 1):
            raise self.err("only axis 1 is supported")
        n = len(x) - 2
        if n not in (1, 2, 3):
            raise self.err(f"{n} spatial axes are not supported")
        try:
            if p.HasField("kernel_h") or p.HasField("kernel_w"):
                k = [p.kernel_h, p.kernel_w]
            else:
                k = _rep(p.kernel_size, n, name="kernel_size")
            s = [p.stride_h, p.stride_w] if p.HasField("stride_h") else _rep(p.stride, n, 1, "stride")
            pd = [p.pad_h, p.pad_w] if p.HasField("pad_h") else _rep(p.pad, n, 0, "pad")
            d = _rep(p.dilation, n, 1, "dilation")
        except ValueError as e:
            raise self.err(str(e)) from None
        self.n = n
        self.kernel, self.stride, self.pad, self.dil = tuple(k), tuple(s), tuple(pd), tuple(d)
        self.group = p.group
        c, o = x[1], p.num_output
        if c % self.group or o % self.group:
            raise self.err("channels and num_output must be divisible by group")
        self.add_blob((c, o // self.group) + self.kernel if self.deconv
                      else (o, c // self.group) + self.kernel)
        self.bias_term = p.bias_term
        if self.bias_term:
            self.add_blob((o,))

    def forward(self, x):
        w = self.blobs[0]
        b = self.blobs[1] if self.bias_term else None
        if self.deconv:
            fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.n - 1]
            return [fn(x, w, b, self.stride, self.pad, 0, self.group, self.dil)]
        fn = (F.conv1d, F.conv2d, F.conv3d)[self.n - 1]
        return [fn(x, w, b, self.stride, self.pad, self.dil, self.group)]


@register("InnerProduct")
class InnerProduct(CaffeLayer):
    def setup(self, bottom_shapes):
        p = self.lp.inner_product_param
        x = bottom_shapes[0]
        self.axis = p.axis % len(x)
        k = int(np.prod(x[self.axis:]))
        self.transpose = p.transpose
        self.add_blob((k, p.num_output) if p.transpose else (p.num_output, k))
        self.bias_term = p.bias_term
        if p.bias_term:
            self.add_blob((p.num_output,))

    def forward(self, x):
        x2 = x.flatten(self.axis)
        w = self.blobs[0].t() if self.transpose else self.blobs[0]
        return [F.linear(x2, w, self.blobs[1] if self.bias_term else None)]


# --------------------------------------------------------------------------- pooling
def caffe_pooled_size(n, k, s, p, ceil_mode=True, always_clip=True):
    out = (math.ceil if ceil_mode else math.floor)((n + 2 * p - k) / s) + 1
    if (always_clip or p > 0) and (out - 1) * s >= n + p:
        out -= 1
    return out


def torch_pooled_size(n, k, s, p, ceil_mode=True):
    out = (math.ceil if ceil_mode else math.floor)((n + 2 * p - k) / s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def caffe_pool(x, pool, kernel, stride, pad, out_sizes):
    """Caffe pooling over the trailing len(kernel) axes, with Caffe's output sizes.

    MAX: over the window clipped to the input (padding never wins; first maximum).
    AVE: sum over the window clipped to the input, divided by the window clipped to
    in + pad (Caffe's rule). Uses torch's pooling when its geometry is the same.
    """
    n = len(kernel)
    ins = x.shape[-n:]
    native = all(p <= k // 2 for p, k in zip(pad, kernel)) and all(
        torch_pooled_size(i, k, s, p) == o for i, k, s, p, o in zip(ins, kernel, stride, pad, out_sizes))
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


@register("Pooling3D")
class Pool3D(CaffeLayer):
    def setup(self, bottom_shapes):
        if not self.lp.HasField("pooling3d_param"):
            raise self.err("needs pooling3d_param")
        p = self.lp.pooling3d_param
        if p.pool not in (0, 1):
            raise self.err("Pooling3D supports MAX and AVE only")
        if not (p.kernel_size > 0 and p.kernel_depth > 0):
            raise self.err("kernel_size and kernel_depth must be > 0")
        self.pool = "MAX" if p.pool == 0 else "AVE"
        self.kernel = (p.kernel_depth, p.kernel_size, p.kernel_size)
        self.stride = (p.temporal_stride, p.stride, p.stride)
        self.pad = (p.temporal_pad, p.pad, p.pad)
        if any(pd >= k for pd, k in zip(self.pad, self.kernel)):
            raise self.err("pad must be smaller than the kernel")
        if len(bottom_shapes[0]) != 5:
            raise self.err(f"needs a 5D (N,C,L,H,W) input, got {tuple(bottom_shapes[0])}")

    def forward(self, x):
        ins = x.shape[2:]
        for i, k, p in zip(ins, self.kernel, self.pad):
            if i + 2 * p < k:
                raise self.err(f"input {tuple(x.shape)} is smaller than its kernel")
        outs = [caffe_pooled_size(i, k, s, p, True, True)
                for i, k, s, p in zip(ins, self.kernel, self.stride, self.pad)]
        return [caffe_pool(x, self.pool, self.kernel, self.stride, self.pad, outs)]


@register("Pooling")
class Pool2D(CaffeLayer):
    def setup(self, bottom_shapes):
        p = self.lp.pooling_param
        if p.pool not in (0, 1):
            raise self.err("only MAX and AVE pooling are supported")
        self.pool = "MAX" if p.pool == 0 else "AVE"
        if len(bottom_shapes[0]) != 4:
            raise self.err("Pooling is 2D in Caffe (4 axes); use Pooling3D for 5D blobs")
        self.global_pooling = p.global_pooling
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            k = (p.kernel_h, p.kernel_w)
        elif p.global_pooling:
            k = (0, 0)
        else:
            k = (p.kernel_size, p.kernel_size)
        self.kernel = k
        self.stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride)
        self.pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
        self.ceil_mode = p.ceil_mode if hasattr(p, "ceil_mode") else True

    def forward(self, x):
        kernel = tuple(x.shape[2:]) if self.global_pooling else self.kernel
        always = False
        outs = [caffe_pooled_size(i, k, s, p, self.ceil_mode, always)
                for i, k, s, p in zip(x.shape[2:], kernel, self.stride, self.pad)]
        return [caffe_pool(x, self.pool, kernel, self.stride, self.pad, outs)]


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
        valid = lab != p.ignore_label if p.HasField("ignore_label") else torch.ones_like(lab, dtype=torch.bool)
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
