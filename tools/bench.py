"""`make bench`: throughput of the V2V deploy net and of the Brox teacher, in one run.

    python -m tools.bench [--net prototxt/seg_deploy.prototxt] [--iters 3] [--out runs/bench]

Measures, on the same 16-frame clips:
1. Caffe (this engine, CPU): V2V deploy forward, frames/s, and per-layer times like
   `caffe time`;
2. the Brox teacher (data_prep.teacher) on the clip's frame pairs, frames/s, and the ratio
   V2V / teacher whichever way it falls (the paper's 70× was V2V on a K40 GPU against
   OpenCV's GPU Brox, I/O included);
3. the PyTorch runtime (torch_runtime) on the same net: CPU frames/s and its
   ratio to Caffe; frames/s on an NVIDIA GPU when one is visible;
4. data tools (data_prep.bench) unless --no-data.
Results: <out>/bench.md (a table) and <out>/bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from models import validate
from models.engine import caffe
from models.paths import PROTOTXT, RUNS


def default_net() -> Path:
    for name in ("seg_deploy.prototxt", "seg_v2v_deploy.prototxt"):
        if (PROTOTXT / name).exists():
            return PROTOTXT / name
    found = sorted(PROTOTXT.glob("*deploy*.prototxt"))
    if not found:
        raise SystemExit("error: no deploy prototxt in prototxt/; give --net")
    return found[0]


def caffe_forward(net_path: Path, shape, iters: int):
    cf = caffe()
    net = cf.Net(str(net_path), cf.TEST)
    inp = net.inputs[0]
    net.blobs[inp].reshape(*shape)
    net.reshape()
    net.blobs[inp].data[...] = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    net.forward()  # warm-up (allocations)
    per_layer = np.zeros(len(net.layers))
    total = []
    for _ in range(iters):
        t0 = time.perf_counter()
        for i in range(len(net.layers)):
            s = time.perf_counter()
            net._forward(i, i)
            per_layer[i] += time.perf_counter() - s
        total.append(time.perf_counter() - t0)
    names = list(net._layer_names)
    layers = [(names[i], net.layers[i].type, 1000 * per_layer[i] / iters) for i in range(len(names))]
    return float(np.median(total)), layers


def teacher_rate(frames: np.ndarray):
    """Flow frames/s of the Brox teacher on consecutive frames, one process."""
    from data_prep.teacher import brox_flow
    t0 = time.perf_counter()
    for t in range(len(frames) - 1):
        brox_flow(frames[t], frames[t + 1])
    return (len(frames) - 1) / (time.perf_counter() - t0), "Brox teacher, 1 process"


def torch_rates(net_path: Path, shape, iters: int):
    try:
        from torch_runtime.bench import bench_forward
        import torch
    except ImportError as e:
        return {"note": f"torch runtime not available ({e}); `make setup-torch`"}
    out = {"cpu_fps": bench_forward(str(net_path), shape, "cpu", iters),
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_fps"] = bench_forward(str(net_path), shape, "cuda", max(iters, 10))
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", type=Path, help="deploy prototxt (default: the V2V segmentation deploy net)")
    ap.add_argument("--shape", default="1,3,16,112,112", help="input N,C,L,H,W")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RUNS / "bench")
    ap.add_argument("--no-data", action="store_true", help="skip the data-tool benchmark")
    return ap


def measure(net_path: Path, shape: tuple, iters: int, out: Path, data: bool) -> dict:
    """Caffe, the Brox teacher on the same frames, the PyTorch runtime (and the data tools)."""
    print(f"[bench] Caffe CPU forward of {net_path.name} at {shape} ({iters} iterations)")
    t, layers = caffe_forward(net_path, shape, iters)
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "net": str(net_path), "shape": shape, "layers": layers,
           "caffe_cpu": {"seconds_per_clip": t, "fps": shape[0] * shape[2] / t}}
    from data_prep.synthetic import make_scene
    frames = make_scene(np.random.default_rng(0), frames=shape[2] + 1, height=shape[3], width=shape[4]).frames
    print("[bench] Brox teacher on the same frame size")
    fps, note = teacher_rate(frames)
    res["teacher"] = {"fps": fps, "note": note}
    print("[bench] PyTorch runtime")
    res["torch"] = torch_rates(net_path, shape, iters)
    if data:
        from data_prep import bench as data_bench
        print("[bench] data tools (data_prep.bench)")
        res["data"] = data_bench.run(out)
    return res


def report(res: dict, iters: int) -> list[str]:
    """The markdown of bench.md."""
    shape, t, tr = res["shape"], res["caffe_cpu"]["seconds_per_clip"], res["torch"]
    fpc, fps, note = shape[0] * shape[2], res["teacher"]["fps"], res["teacher"]["note"]
    md = [f"# Benchmarks ({time.strftime('%Y-%m-%d %H:%M')})", "",
          f"Machine: {res['machine']}. Net: `{Path(res['net']).name}`, input {'×'.join(map(str, shape))}.", "",
          "| what | seconds / clip | frames/s | note |", "|---|---|---|---|",
          f"| V2V forward, Caffe CPU (this engine) | {t:.3f} | {fpc / t:.1f} | median of {iters} |",
          f"| Brox teacher (CPU), same frames | {shape[2] / fps:.3f} | {fps:.1f} | {note} |"]
    if "cpu_fps" in tr:
        md.append(f"| V2V forward, PyTorch {tr['torch']} CPU | {fpc / tr['cpu_fps']:.3f} | "
                  f"{tr['cpu_fps']:.1f} | {tr['threads']} threads |")
    if "gpu_fps" in tr:
        md.append(f"| V2V forward, PyTorch GPU ({tr['gpu']}) | {fpc / tr['gpu_fps']:.4f} | {tr['gpu_fps']:.1f} | |")
    r = (fpc / t) / fps
    md += ["", f"V2V (Caffe CPU) / Brox teacher (CPU): **{r:.2f}×** "
               f"({'V2V faster' if r >= 1 else 'teacher faster'}; the paper reports 70× on a K40 GPU)."]
    if "cpu_fps" in tr:
        md.append(f"PyTorch CPU / Caffe CPU on the same net: **{tr['cpu_fps'] / (fpc / t):.2f}×**.")
    if "note" in tr:
        md.append(f"PyTorch: {tr['note']}")
    md += ["", "Per-layer forward times (Caffe, ms):", "", "| layer | type | ms |", "|---|---|---|"]
    return md + [f"| {n} | {ty} | {ms:.1f} |" for n, ty, ms in res["layers"] if ms >= 0.05]


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    net_path = a.net or default_net()
    shape = tuple(int(x) for x in a.shape.split(","))
    try:
        validate.validate_net_file(net_path, "TEST")
        validate.check_input_size(*shape[2:], where=f"--shape {a.shape}")
    except validate.ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    res = measure(net_path, shape, a.iters, a.out, not a.no_data)
    md = report(res, a.iters)
    (a.out / "bench.md").write_text("\n".join(md) + "\n")
    (a.out / "bench.json").write_text(json.dumps(res, indent=2, default=str))
    print("\n".join(md[:14]))
    print(f"[bench] written {a.out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
