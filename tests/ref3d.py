"""Independent NumPy references for the 3D layers (direct loops over the definition,
no vol2col), used by the engine tests and by anyone checking the engine."""
from __future__ import annotations

import math

import numpy as np


def conv3d(x, w, b, stride=(1, 1, 1), pad=(0, 0, 0), group=1):
    """x (N,C,L,H,W), w (Co, C/g, kd, kh, kw), b (Co,) or None -> (N,Co,Lo,Ho,Wo)."""
    N, C, L, H, W = x.shape
    Co, Cg, kd, kh, kw = w.shape
    sd, sh, sw = stride
    pd, ph, pw = pad
    xp = np.pad(x, ((0, 0), (0, 0), (pd, pd), (ph, ph), (pw, pw)))
    Lo = (L + 2 * pd - kd) // sd + 1
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    y = np.zeros((N, Co, Lo, Ho, Wo), dtype=np.float64)
    og = Co // group
    for g in range(group):
        xs = xp[:, g * Cg:(g + 1) * Cg]
        ws = w[g * og:(g + 1) * og].astype(np.float64)
        for i in range(kd):
            for j in range(kh):
                for k in range(kw):
                    patch = xs[:, :, i:i + sd * Lo:sd, j:j + sh * Ho:sh, k:k + sw * Wo:sw]
                    y[:, g * og:(g + 1) * og] += np.einsum("nclhw,oc->nolhw", patch, ws[:, :, i, j, k])
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(1, Co, 1, 1, 1)
    return y


def deconv3d(x, w, b, stride=(1, 1, 1), pad=(0, 0, 0), group=1):
    """Transposed conv: x (N,C,L,H,W), w (C, Co/g, kd, kh, kw) -> (N,Co,Lo,Ho,Wo) with
    Lo = (L-1)*s - 2p + k. Scatter form, straight from the definition."""
    N, C, L, H, W = x.shape
    _, Og, kd, kh, kw = w.shape
    Co = Og * group
    sd, sh, sw = stride
    pd, ph, pw = pad
    Lf, Hf, Wf = (L - 1) * sd + kd, (H - 1) * sh + kh, (W - 1) * sw + kw
    full = np.zeros((N, Co, Lf, Hf, Wf), dtype=np.float64)
    cg = C // group
    for g in range(group):
        xs = x[:, g * cg:(g + 1) * cg].astype(np.float64)
        ws = w[g * cg:(g + 1) * cg].astype(np.float64)
        for i in range(kd):
            for j in range(kh):
                for k in range(kw):
                    full[:, g * Og:(g + 1) * Og, i:i + sd * L:sd, j:j + sh * H:sh, k:k + sw * W:sw] += \
                        np.einsum("nclhw,co->nolhw", xs, ws[:, :, i, j, k])
    y = full[:, :, pd:Lf - pd, ph:Hf - ph, pw:Wf - pw]
    if b is not None:
        y = y + np.asarray(b, dtype=np.float64).reshape(1, Co, 1, 1, 1)
    return y


def pooled(n, k, s, p):
    out = math.ceil((n + 2 * p - k) / s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    return out


def pool3d(x, kernel, stride, pad=(0, 0, 0), method="max"):
    """Caffe-style ceil-mode pooling with windows clipped at the border; AVE divides by
    the window clipped to size + pad (Caffe's rule)."""
    N, C, L, H, W = x.shape
    dims = (L, H, W)
    outs = [pooled(n, k, s, p) for n, k, s, p in zip(dims, kernel, stride, pad)]
    y = np.zeros((N, C, *outs))
    for o in np.ndindex(*outs):
        lo, hi, size = [], [], 1
        for a in range(3):
            start = o[a] * stride[a] - pad[a]
            end = min(start + kernel[a], dims[a] + pad[a])
            size *= end - start
            lo.append(max(start, 0))
            hi.append(min(end, dims[a]))
        win = x[:, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        if method == "max":
            y[(slice(None), slice(None)) + o] = win.max(axis=(2, 3, 4))
        else:
            y[(slice(None), slice(None)) + o] = win.sum(axis=(2, 3, 4)) / size
    return y
