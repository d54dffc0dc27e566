"""Parity of the torch runtime against pycaffe (CPU, float32) on one net.

    report = compare_with_caffe(prototxt, phase="TRAIN", input_shapes={"data": (1,3,8,32,32)})
    report.max_rel_output, report.max_rel_grad, report.rows

Data layers (Python layers without bottoms) are replaced by Input layers of the given
shapes in both engines; random inputs (labels: integers in [0, K) with some ignore_label,
or Gaussian targets), random weights (He-scaled so deep nets keep O(1) activations),
written as a caffemodel by pycaffe and loaded by the torch runtime. Caffe runs with
force_backward; nets without a loss back-propagate a random top gradient R (objective
Σ top·R) in both engines. Relative error of a blob = max|caffe − torch| / max|caffe|.
Used by tests/test_torch_*.py and usable on any prototxt of the suite:

    python -m torch_runtime.parity prototxt/seg_v2v_train_val.prototxt --shape 1,3,8,32,32
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format

from .caffemodel import load_caffemodel
from .net import TorchNet, layer_included, read_net_param


@dataclass
class ParityReport:
    rows: list = field(default_factory=list)     # (kind, name, rel error)
    caffe_s: float = 0.0
    torch_s: float = 0.0
    flips: int = 0        # ReLU signs / max-pool winners that differ between the engines

    @property
    def max_rel_output(self):
        return max([r for k, _, r in self.rows if k == "blob"] or [0.0])

    @property
    def max_rel_grad(self):
        return max([r for k, _, r in self.rows if k == "grad"] or [0.0])

    def worst(self, n=5):
        return sorted(self.rows, key=lambda r: -r[2])[:n]


def rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    den = np.abs(a).max() if a.size else 0.0
    if den == 0:
        return float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max() / den)


def _consumers(npm, blob, phase):
    return [lp for lp in npm.layer if layer_included(lp, phase) and blob in lp.bottom]


def guess_label_shape(npm, phase, data_shape):
    """(N, c, L, H, W): c = 1 for class labels (SoftmaxWithLoss / Accuracy), else the
    num_output of the last convolution (regression targets at full resolution)."""
    cons = _consumers(npm, "label", phase)
    c = 1 if any(lp.type in ("SoftmaxWithLoss", "Accuracy") for lp in cons) else _num_classes(npm, phase)
    return (data_shape[0], c) + tuple(data_shape[2:])


def with_input_layers(npm, phase, shapes: dict):
    """A copy of the net with its data layers replaced by Input layers of ``shapes``."""
    out = type(npm)()
    out.CopyFrom(npm)
    del out.layer[:]
    for lp in npm.layer:
        if not layer_included(lp, phase):
            continue
        new = out.layer.add()
        new.CopyFrom(lp)
        del new.include[:]
        del new.exclude[:]
        if lp.type == "Python" and not len(lp.bottom):
            new.Clear()
            new.name = lp.name
            new.type = "Input"
            new.top.extend(lp.top)
            for t in lp.top:
                new.input_param.shape.add().dim.extend(int(d) for d in shapes[t])
        elif lp.type == "Input" and any(t in shapes for t in lp.top):
            del new.input_param.shape[:]
            for t in lp.top:
                new.input_param.shape.add().dim.extend(int(d) for d in shapes[t])
    return out


def random_inputs(npm, phase, shapes, rng):
    ign = None
    ncls = None
    for lp in npm.layer:
        if lp.type == "SoftmaxWithLoss" and layer_included(lp, phase):
            if lp.loss_param.HasField("ignore_label"):
                ign = lp.loss_param.ignore_label
    out = {}
    for name, shp in shapes.items():
        if name == "label" and shp[1] == 1 and any(
                lp.type in ("SoftmaxWithLoss", "Accuracy") for lp in _consumers(npm, "label", phase)):
            ncls = ncls or _num_classes(npm, phase)
            lab = rng.integers(0, ncls, size=shp).astype(np.float32)
            if ign is not None:
                lab[rng.random(shp) < 0.1] = ign
            out[name] = lab
        else:
            out[name] = rng.standard_normal(shp).astype(np.float32)
    return out


def _num_classes(npm, phase):
    """num_output of the net's last convolution (None without one)."""
    c = None
    for lp in npm.layer:
        if lp.type in ("Convolution3D", "Deconvolution3D") and layer_included(lp, phase):
            c = lp.convolution3d_param.num_output
        elif lp.type in ("Convolution", "Deconvolution") and layer_included(lp, phase):
            c = lp.convolution_param.num_output
    return c


def _feed_shapes(npm, phase: str, input_shapes) -> tuple[list, dict]:
    """The net's source tops and the shape each is fed with (Input shapes from the
    prototxt unless overridden, a label guessed from the data)."""
    shapes = dict(input_shapes or {})
    data_tops = [t for lp in npm.layer if layer_included(lp, phase)
                 and ((lp.type == "Python" and not len(lp.bottom)) or lp.type == "Input")
                 for t in lp.top]
    if "label" in data_tops and "label" not in shapes and "data" in shapes:
        shapes["label"] = guess_label_shape(npm, phase, shapes["data"])
    for lp in npm.layer:
        if lp.type == "Input" and layer_included(lp, phase):
            for t, s in zip(lp.top, lp.input_param.shape):
                shapes.setdefault(t, tuple(s.dim))
    missing = [t for t in data_tops if t not in shapes]
    if missing:
        raise ValueError(f"give input_shapes for {missing}")
    return data_tops, shapes


def _random_weights(cnet, rng, weight_scale: str) -> None:
    for blobs in cnet.params.values():
        for i, b in enumerate(blobs):
            if i == 0 and weight_scale == "he":
                shp = b.data.shape
                # fan-in: conv (out,in,k..) in*k; deconv (in,out,k..) in*k/stride³ ~ out*k
                fan = int(np.prod(shp[1:])) if len(shp) > 1 else shp[0]
                b.data[...] = rng.standard_normal(shp).astype(np.float32) * np.sqrt(2.0 / max(fan, 1))
            else:
                b.data[...] = 0.1 * rng.standard_normal(b.data.shape).astype(np.float32)


def _caffe_pass(cnet, has_loss: bool, rng) -> dict:
    """Forward + backward in Caffe; without a loss, backward from random top diffs R."""
    cout = cnet.forward()
    if has_loss:
        cnet.backward()
        return {}
    R = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in cout.items()}
    cnet.backward(**R)
    return R


def _torch_pass(tnet, inputs: dict, R: dict):
    tout = tnet({k: torch.from_numpy(v) for k, v in inputs.items()}, return_blobs=True)
    obj = tout.loss if not R else sum((tout[k] * torch.from_numpy(r)).sum() for k, r in R.items())
    obj.backward()
    return tout


def _report(rep: ParityReport, cnet, tnet, tout, inputs) -> ParityReport:
    for name in cnet.blobs:
        if name in tout and name not in inputs:
            rep.rows.append(("blob", name, rel(cnet.blobs[name].data, tout[name].detach().numpy())))
    for name, blobs in tnet.params.items():
        for i, p in enumerate(blobs):
            cd = cnet.params[name][i].diff
            if p.requires_grad:
                g = p.grad.numpy() if p.grad is not None else np.zeros(p.shape, np.float32)
                rep.rows.append(("grad", f"{name}[{i}]", rel(cd, g)))   # no grad: unused
            else:
                rep.rows.append(("frozen", f"{name}[{i}]", float(np.abs(cd).max())))
    return rep


def compare_with_caffe(src, phase="TEST", input_shapes=None, seed=0, tmpdir=None,
                       weight_scale="he") -> ParityReport:
    """One forward + backward of the same net, weights and inputs in pycaffe and in torch."""
    from models.engine import caffe
    cf = caffe()
    npm = read_net_param(src)
    phase = phase.upper()
    data_tops, shapes = _feed_shapes(npm, phase, input_shapes)
    fed = with_input_layers(npm, phase, shapes)
    tnet = TorchNet(fed, phase)
    has_loss = any(w for *_, lw in tnet.plan for w in lw)
    # without a loss Caffe back-propagates only with force_backward (which a net with an
    # Accuracy layer must not have: Accuracy has no backward)
    fed.force_backward = not has_loss
    rng = np.random.default_rng(seed)
    tmp = Path(tmpdir or tempfile.mkdtemp(prefix="v2v-parity-"))
    proto = tmp / "net.prototxt"
    proto.write_text(text_format.MessageToString(fed))
    cnet = cf.Net(str(proto), cf.TRAIN if phase == "TRAIN" else cf.TEST)
    _random_weights(cnet, rng, weight_scale)
    weights = tmp / "w.caffemodel"
    cnet.save(str(weights))
    inputs = random_inputs(fed, phase, {t: shapes[t] for t in data_tops}, rng)
    for k, v in inputs.items():
        cnet.blobs[k].data[...] = v
    load_caffemodel(tnet, weights, strict=True)
    t0 = time.perf_counter()
    R = _caffe_pass(cnet, has_loss, rng)
    caffe_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tout = _torch_pass(tnet, inputs, R)
    rep = ParityReport(caffe_s=caffe_s, torch_s=time.perf_counter() - t0, flips=decision_flips(cnet, tnet, tout))
    return _report(rep, cnet, tnet, tout, inputs)


def decision_flips(cnet, tnet, tout) -> int:
    """Count the discrete decisions the two forwards took differently (float rounding
    near a ReLU kink or a max-pool tie). One flip changes the gradient of everything
    upstream by far more than rounding: a gradient comparison is only meaningful
    without flips (the tests then draw another seed)."""
    import torch.nn.functional as F
    n = 0
    for key, bottoms, tops, _ in tnet.plan:
        layer = tnet.layers[key]
        if layer.ltype == "ReLU" and tops[0] in tout:
            n += int(((cnet.blobs[tops[0]].data > 0) != (tout[tops[0]].detach().numpy() > 0)).sum())
        elif layer.ltype in ("Pooling3D", "Pooling") and getattr(layer, "pool", "") == "MAX" \
                and bottoms[0] in tout and bottoms[0] in cnet.blobs:
            fn = F.max_pool3d if layer.ltype == "Pooling3D" else F.max_pool2d
            k, s, p = layer.kernel, layer.stride, layer.pad
            if any(pp > kk // 2 for pp, kk in zip(p, k)):
                continue
            a = torch.from_numpy(cnet.blobs[bottoms[0]].data.copy())
            b = tout[bottoms[0]].detach()
            ia = fn(a, k, s, p, ceil_mode=True, return_indices=True)[1]
            ib = fn(b, k, s, p, ceil_mode=True, return_indices=True)[1]
            n += int((ia != ib).sum())
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m torch_runtime.parity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prototxt")
    ap.add_argument("--phase", default=None, help="TRAIN or TEST (default: TEST for deploy nets)")
    ap.add_argument("--shape", default="1,3,8,32,32", help="data blob N,C,L,H,W")
    a = ap.parse_args(argv)
    phase = a.phase or ("TEST" if "deploy" in Path(a.prototxt).name else "TRAIN")
    rep = compare_with_caffe(a.prototxt, phase, {"data": tuple(int(x) for x in a.shape.split(","))})
    print(f"max relative error: outputs {rep.max_rel_output:.2e}, gradients {rep.max_rel_grad:.2e}")
    for k, n, r in rep.worst():
        print(f"  {k:6s} {n:20s} {r:.2e}")
    print(f"decision flips (ReLU sign / max-pool winner): {rep.flips}")
    print(f"forward+backward: caffe {rep.caffe_s:.2f} s, torch {rep.torch_s:.2f} s")
    return 0 if max(rep.max_rel_output, rep.max_rel_grad) < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
