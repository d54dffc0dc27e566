"""Forward throughput of a deploy prototxt in the torch runtime (used by `make bench`).

    bench_forward("prototxt/seg_v2v_deploy.prototxt", (1, 3, 16, 112, 112), "cpu", 3) -> frames/s

Frames = N·L per forward. Random weights (the speed does not depend on them), random
input, no autograd. Median over ``iters`` timed forwards after warm-up. On CUDA the default
is the fast path: bf16 autocast, channels_last_3d, cuDNN autotuning (TF32 for fp32);
pass precision="fp32", channels_last=False to time plain float32.

    python -m torch_runtime.bench prototxt/seg_v2v_deploy.prototxt --shape 1,3,16,112,112
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from .net import TorchNet
from .runtime import RunOptions


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def build(prototxt, shape, device="cpu", precision=None, channels_last=None, compile=False):
    net = TorchNet(prototxt, "TEST") if shape is None else _net_with_shape(prototxt, shape)
    cuda = str(device).startswith("cuda")
    opts = RunOptions(device=device,
                      precision=precision or ("bf16" if cuda else "fp32"),
                      channels_last=cuda if channels_last is None else channels_last,
                      compile=compile)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    net.eval()
    model = opts.prepare(net)
    return net, model, opts


def _net_with_shape(prototxt, shape):
    from .net import read_net_param
    npm = read_net_param(prototxt)
    names = [t for lp in npm.layer if lp.type == "Input" for t in lp.top] or list(npm.input)
    if not names:
        raise ValueError(f"{prototxt}: no Input layer (benchmark a deploy net)")
    return TorchNet(npm, "TEST", input_shapes={names[0]: tuple(shape)})


def bench_forward(prototxt, shape, device="cpu", iters=3, warmup=None, **opts) -> float:
    """Frames per second (N·L per forward) of the deploy net's forward on ``device``."""
    shape = tuple(int(s) for s in shape)
    net, model, ro = build(prototxt, shape, device, **opts)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 50
    inputs = ro.batch({net.input_names[0]: x})
    warmup = warmup if warmup is not None else (3 if ro.is_cuda else 1)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            _sync(device)
            t0 = time.perf_counter()
            with ro.autocast():
                model(inputs)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return shape[0] * shape[2] / statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m torch_runtime.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prototxt")
    ap.add_argument("--shape", default="1,3,16,112,112")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args(argv)
    shape = tuple(int(s) for s in a.shape.split(","))
    fps = bench_forward(a.prototxt, shape, a.device, a.iters, precision=a.precision,
                        channels_last=False if a.no_channels_last else None, compile=a.compile)
    print(f"{a.prototxt} {a.shape} on {a.device} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads): {fps:.2f} frames/s, {shape[0] * shape[2] / fps:.3f} s/clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
