"""Check the torch runtime on an NVIDIA GPU: CUDA against the CPU (which the tests hold to
pycaffe), every precision / memory-format option, and speed. Run it on a GPU machine:

    python -m torch_runtime.gpu_check [--nets 'prototxt/*_deploy.prototxt'] [--shape 1,3,16,112,112]

For each net: random weights, one clip; the CPU fp32 forward is the reference.
- CUDA fp32 with TF32 off, NCDHW and channels_last_3d: max relative error < 1e-4;
- CUDA TF32 and bf16 autocast (channels_last_3d): relative error reported (expect ~1e-3
  and ~1e-2), and frames/s of each;
- one training step (train_val, CUDA fp32 TF32 off) against the CPU: parameter gradients
  < 1e-3 relative (cuDNN's algorithms sum in other orders; ReLU decision flips can add
  a little — see README).
Exit status 1 when a check fails. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time

import torch

from .bench import _net_with_shape
from .runtime import RunOptions


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-30))


def _randomize(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            fan = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / max(fan, 1)) ** 0.5
                    if p.dim() > 1 else torch.randn(p.shape, generator=g) * 0.1)


def _forward(net, x, opts: RunOptions, iters=5):
    model = opts.prepare(net)
    inp = opts.batch({net.input_names[0]: x})
    with torch.inference_mode():
        for _ in range(2):
            with opts.autocast():
                out = model(inp)
        torch.cuda.synchronize() if opts.is_cuda else None
        t0 = time.perf_counter()
        for _ in range(iters):
            with opts.autocast():
                out = model(inp)
        torch.cuda.synchronize() if opts.is_cuda else None
    dt = (time.perf_counter() - t0) / iters
    return {k: v.float().cpu() for k, v in out.items()}, dt


def check_net(path, shape, rows) -> bool:
    ok = True
    net = _net_with_shape(path, shape)
    _randomize(net)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ref, t_cpu = _forward(net, x, RunOptions("cpu"), iters=1)
    frames = shape[0] * shape[2]
    rows.append((path, "cpu fp32", 0.0, frames / t_cpu))
    for name, kw, tol in [("cuda fp32", dict(precision="fp32", tf32=False), 1e-4),
                          ("cuda fp32 channels_last", dict(precision="fp32", tf32=False, channels_last=True), 1e-4),
                          ("cuda tf32 channels_last", dict(precision="tf32", channels_last=True), None),
                          ("cuda bf16 channels_last", dict(precision="bf16", channels_last=True), None)]:
        net.to("cpu")
        out, dt = _forward(net, x, RunOptions("cuda", **kw))
        err = max(rel(ref[k], out[k]) for k in ref)
        rows.append((path, name, err, frames / dt))
        if tol is not None and err > tol:
            ok = False
    net.to("cpu")
    return ok


def check_train_step(path, shape, rows) -> bool:
    from .net import TorchNet
    from .parity import guess_label_shape, random_inputs, with_input_layers
    from .net import read_net_param
    import numpy as np
    npm = read_net_param(path)
    shapes = {"data": shape, "label": guess_label_shape(npm, "TRAIN", shape)}
    fed = with_input_layers(npm, "TRAIN", shapes)
    inputs = random_inputs(fed, "TRAIN", shapes, np.random.default_rng(0))
    grads = []
    for dev in ("cpu", "cuda"):
        net = TorchNet(fed, "TRAIN")
        _randomize(net)
        opts = RunOptions(dev, precision="fp32", tf32=False)
        model = opts.prepare(net)
        out = model(opts.batch({k: torch.from_numpy(v) for k, v in inputs.items()}))
        out.loss.backward()
        grads.append({n: [p.grad.cpu() if p.grad is not None else torch.zeros(p.shape) for p in ps]
                      for n, ps in net.params.items() if ps[0].requires_grad})
    err = max(rel(a, b) for n in grads[0] for a, b in zip(grads[0][n], grads[1][n]))
    rows.append((path, "train step grads cuda vs cpu", err, float("nan")))
    return err < 1e-3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torch_runtime.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="prototxt/*_deploy.prototxt")
    ap.add_argument("--shape", default="1,3,16,112,112", help="N,C,L,H,W (C is taken from the net)")
    ap.add_argument("--train", default="prototxt/seg_v2v_train_val.prototxt")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch (the pinned CPU wheel has none)", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    shape = tuple(int(s) for s in a.shape.split(","))
    rows, ok = [], True
    for path in sorted(glob.glob(a.nets)):
        from .net import read_net_param
        npm = read_net_param(path)
        c = next((int(lp.input_param.shape[0].dim[1]) for lp in npm.layer if lp.type == "Input"), shape[1])
        ok &= check_net(path, (shape[0], c) + shape[2:], rows)
    if a.train:
        ok &= check_train_step(a.train, (1, 3, 8, 32, 32), rows)
    print("| net | path | max rel. error vs CPU fp32 | frames/s |\n|---|---|---|---|")
    for p, name, err, fps in rows:
        print(f"| {p} | {name} | {err:.2e} | {fps:.1f} |")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
