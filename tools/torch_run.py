"""Run a deploy prototxt + caffemodel with the PyTorch runtime on clips.

    python -m tools.torch_run --net prototxt/seg_v2v_deploy.prototxt --weights W.caffemodel \\
        --input clips.npy --out pred.npz
    python -m tools.torch_run --net prototxt/flow_v2v_deploy.prototxt --shape 1,3,16,112,112   # random clip

--input: a .npy array (N, C, L, H, W) already preprocessed as the net expects (e.g. mean
subtracted), or a C3D .bin blob. Writes every output blob of the net (e.g. ``prob``,
``flow``) to --out (.npz), batch by batch (--batch clips at a time). GPU default: bf16
autocast + channels_last_3d; --precision fp32 for the exact float32 path.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from models import cli


def read_input(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    if path.suffix == ".bin":   # C3D blob: five int32 (n, c, l, h, w) then float32 values
        raw = path.read_bytes()
        dims = np.frombuffer(raw[:20], "<i4")
        return np.frombuffer(raw[20:], "<f4", count=int(np.prod(dims))).reshape(dims).copy()
    raise ValueError(f"{path}: give a .npy or C3D .bin file")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.torch_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", required=True, type=Path, help="deploy prototxt")
    ap.add_argument("--weights", help="caffemodel (omitted: random weights, for timing)")
    ap.add_argument("--input", type=Path)
    ap.add_argument("--shape", help="N,C,L,H,W of a random clip when no --input")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device")
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    return ap


def _clips(a) -> np.ndarray:
    """The input clips (N,C,L,H,W), checked against V2V's size rule."""
    if a.input:
        x = read_input(a.input)
    elif a.shape:
        x = np.random.default_rng(0).standard_normal(tuple(int(s) for s in a.shape.split(","))).astype(np.float32)
    else:
        raise ValueError("give --input or --shape")
    if x.ndim != 5:
        raise ValueError(f"input must be 5D (N,C,L,H,W), got {x.shape}")
    from models import validate
    validate.check_input_size(*x.shape[2:], where=str(a.input or f"--shape {a.shape}"))
    return x


def _model(a, input_shape):
    """(net, options, prepared module) for the deploy net at ``input_shape``."""
    import torch

    from torch_runtime import load_caffemodel
    from torch_runtime.bench import _net_with_shape
    from torch_runtime.runtime import RunOptions
    net = _net_with_shape(a.net, input_shape)
    if a.weights:
        copied = load_caffemodel(net, a.weights, strict=True)
        print(f"[torch_run] {a.weights}: {len(copied)} layers")
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    opts = RunOptions(device=device, precision=a.precision or ("bf16" if cuda else "fp32"),
                      channels_last=cuda and not a.no_channels_last, compile=a.compile)
    net.eval()
    return net, opts, opts.prepare(net)


def _run(net, opts, model, x: np.ndarray, bs: int) -> dict:
    import torch
    outs: dict[str, list] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, x.shape[0], bs):
            with opts.autocast():
                res = model(opts.batch({net.input_names[0]: torch.from_numpy(x[i:i + bs])}))
            for k, v in res.items():
                outs.setdefault(k, []).append(v.float().cpu().numpy())
    dt = time.perf_counter() - t0
    print(f"[torch_run] {x.shape[0]} clip(s) on {opts.device}: {dt:.3f} s, "
          f"{x.shape[0] * x.shape[2] / dt:.1f} frames/s")
    return {k: np.concatenate(v) for k, v in outs.items()}


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    try:
        import torch  # noqa: F401 - a clear error without the runtime's dependency
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        x = _clips(a)
        bs = min(a.batch, x.shape[0])
        net, opts, model = _model(a, (bs,) + x.shape[1:])
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    arrays = _run(net, opts, model, x, bs)
    for k, v in arrays.items():
        print(f"  {k}: {v.shape} mean {v.mean():.4g}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with cli.writing(a.out):
            np.savez(a.out, **arrays)
        print(f"[torch_run] wrote {a.out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
