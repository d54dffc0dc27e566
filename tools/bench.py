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
4. data tools (data_prep.bench) unless --no-data;
5. on a GPU (Caffe's CUDA build and/or PyTorch with CUDA): forward and forward+backward
   per clip, frames/s, peak memory and effective TFLOP/s at each of --gpu-batches, for
   Caffe GPU and the torch runtime in fp32, TF32, bf16 + channels_last_3d and bf16 +
   torch.compile, next to the paper's K40 figure and the Brox teacher, with the two goals
   (torch bf16 inference >= 10,000 frames/s; Caffe GPU >= 5x the K40) as pass/fail.
   Without a usable GPU the report says why in one line.
Results: <out>/bench.md (a table) and <out>/bench.json ("gpu": the GPU table).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models import cli, validate
from models.engine import caffe, gpu_unavailable_reason
from models.gpu import torch_cuda_reason
from models.paths import PROTOTXT, RUNS

# The paper's speed (§5, optical flow): V2V runs at 91 frames/s on a K40 GPU (in Caffe),
# the figure behind its "70× faster than Brox". models/paper.py keeps accuracy numbers only.
K40_FPS = 91.0
GOAL_TORCH_BF16_FPS = 10_000   # goal: torch runtime bf16 inference frames/s
GOAL_CAFFE_X_K40 = 5           # goal: Caffe GPU forward >= 5 × the paper's K40 figure
# Peak dense (no sparsity) TFLOP/s from NVIDIA's data sheets, by a substring of the device
# name, first match wins (PCIe / NVL parts before their SXM namesakes).
PEAK_TFLOPS = {
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}
# (row name, precision key of PEAK_TFLOPS, torch_runtime.bench.build options)
TORCH_GPU_CONFIGS = [
    ("PyTorch fp32", "fp32", {"precision": "fp32", "channels_last": False}),
    ("PyTorch TF32", "tf32", {"precision": "tf32", "channels_last": False}),
    ("PyTorch bf16 + channels_last_3d", "bf16", {"precision": "bf16", "channels_last": True}),
    ("PyTorch bf16 + channels_last_3d + torch.compile", "bf16",
     {"precision": "bf16", "channels_last": True, "compile": True}),
]


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


# ------------------------------------------------------------------ GPU table
def gpu_reasons() -> tuple[str, str]:
    """(why Caffe cannot use a GPU, why torch cannot); "" where it can."""
    return gpu_unavailable_reason(), torch_cuda_reason()


def gpu_name() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return smi_query("name") or "unknown GPU"


def smi_query(field: str) -> str | None:
    """nvidia-smi's value of ``field`` for the first visible GPU (None without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    dev = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    try:
        r = subprocess.run([exe, f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", dev],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def smi_memory_mib():
    """The GPU's memory.used in MiB (the whole device), or 'n/a'."""
    v = smi_query("memory.used")
    try:
        return float(v)
    except (TypeError, ValueError):
        return "n/a"


def _growth(now, base):
    return now - base if isinstance(now, float) and isinstance(base, float) else "n/a"


def gflop_per_clip(net_path: Path, clip) -> float:
    """Forward GFLOPs of one clip (models.shapes, a multiply-add = 2 FLOPs)."""
    from models import shapes
    npm = validate.load_net(net_path)
    name = next(lp.top[0] for lp in npm.layer if lp.type == "Input")
    return sum(i.flops for i in shapes.infer_net(npm, "TEST", {name: (1, *clip)})) / 1e9


def peak_tflops(device: str, precision: str):
    return next((p[precision] for k, p in PEAK_TFLOPS.items() if k in device), "n/a")


def timed(fn, iters: int, warmup: int = 1, sync=None) -> float:
    """Median seconds of ``fn()`` over ``iters`` calls after ``warmup`` calls."""
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_row(name, precision, batch, L, fwd, fwdbwd, mem, gflop, device) -> dict:
    """One row of the GPU table; fwd+bwd FLOPs count as 3× the forward's."""
    peak = peak_tflops(device, precision)
    tf = {"fwd": gflop * batch / fwd / 1e3, "fwdbwd": 3 * gflop * batch / fwdbwd / 1e3}
    return {"engine": name, "precision": precision, "batch": batch,
            "fwd_s_per_clip": fwd / batch, "fwd_fps": batch * L / fwd,
            "fwdbwd_s_per_clip": fwdbwd / batch, "fwdbwd_fps": batch * L / fwdbwd,
            "peak_mib": mem, "tflops": tf,
            "peak_fraction": {k: (v / peak if peak != "n/a" else "n/a") for k, v in tf.items()}}


def _caffe_gpu_times(cf, net_path: Path, shape, iters: int):
    """(forward s, forward+backward s, growth of the device's memory.used after each: the
    net's blobs and buffers) of a fresh Caffe net."""
    base = smi_memory_mib()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "net.prototxt"
        p.write_text("force_backward: true\n" + net_path.read_text())
        net = cf.Net(str(p), cf.TEST)
    inp, out = net.inputs[0], net.outputs[-1]
    net.blobs[inp].reshape(*shape)
    net.reshape()
    rng = np.random.default_rng(0)
    net.blobs[inp].data[...] = rng.uniform(0, 255, shape).astype(np.float32)
    top = rng.standard_normal(net.blobs[out].data.shape).astype(np.float32)
    # forward() returns the outputs and backward() the input diff, copied to the host: both sync
    fwd = timed(net.forward, iters)
    mem = {"fwd": _growth(smi_memory_mib(), base)}
    fwdbwd = timed(lambda: (net.forward(), net.backward(**{out: top})), iters)
    mem["fwdbwd"] = _growth(smi_memory_mib(), base)
    return fwd, fwdbwd, mem


def caffe_gpu_row(net_path: Path, shape, iters: int, gflop: float, device: str) -> dict:
    """Caffe on GPU 0 (pycaffe through models.engine.use_gpu), a fresh net per batch."""
    from models.engine import use_gpu
    cf = use_gpu(0)
    try:
        fwd, fwdbwd, mem = _caffe_gpu_times(cf, net_path, shape, iters)
        gc.collect()  # the net's GPU memory goes before the next batch's net
    finally:
        cf.set_mode_cpu()
    return gpu_row("Caffe GPU (this engine)", "fp32", shape[0], shape[2], fwd, fwdbwd, mem, gflop, device)


def _torch_gpu_times(opts: dict, precision: str, net_path: Path, shape, iters: int):
    """({fwd, fwdbwd}: median s, {fwd, fwdbwd}: peak MiB) of the torch runtime on cuda:0."""
    import torch

    from torch_runtime.bench import build
    if opts.get("compile"):
        torch._dynamo.reset()  # a fresh graph per batch size, not a dynamic-shape one
    net, model, ro = build(str(net_path), shape, "cuda", **opts)
    if precision == "fp32":  # build() leaves TF32 on for fp32
        ro.tf32 = False
        ro.configure_backends()
    x = ro.batch({net.input_names[0]: torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 50})
    out = net.output_names[-1]

    def fwd():
        with torch.inference_mode(), ro.autocast():
            model(x)

    def fwdbwd():
        with ro.autocast():
            y = model(x)[out]
        y.float().mean().backward()
        net.zero_grad(set_to_none=True)

    times, mem = {}, {}
    for key, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times[key] = timed(fn, iters, warmup=2, sync=torch.cuda.synchronize)
        mem[key] = torch.cuda.max_memory_allocated() / 2**20
    return times, mem


def torch_gpu_row(config, net_path: Path, shape, iters: int, gflop: float, device: str) -> dict:
    import torch
    name, precision, opts = config
    times, mem = _torch_gpu_times(opts, precision, net_path, shape, iters)
    gc.collect()
    torch.cuda.empty_cache()
    return gpu_row(name, precision, shape[0], shape[2], times["fwd"], times["fwdbwd"], mem, gflop, device)


def gpu_goals(rows: list) -> dict:
    def best(pick):
        fps = [r["fwd_fps"] for r in rows if pick(r)]
        return max(fps) if fps else None

    out = {}
    for key, goal, pick in (
            ("torch_bf16_inference", GOAL_TORCH_BF16_FPS, lambda r: r["engine"].startswith("PyTorch bf16")),
            ("caffe_gpu_vs_k40", GOAL_CAFFE_X_K40 * K40_FPS, lambda r: r["engine"].startswith("Caffe"))):
        b = best(pick)
        out[key] = {"goal_fps": goal, "best_fps": b, "pass": None if b is None else b >= goal}
    return out


def gpu_table(net_path: Path, clip, batches, iters: int, teacher_fps: float) -> dict:
    """The GPU section of bench.json, or {"not_run": why} without a usable GPU."""
    caffe_why, torch_why = gpu_reasons()
    if caffe_why and torch_why:
        return {"not_run": f"Caffe: {caffe_why}; PyTorch: {torch_why}"}
    device, gflop = gpu_name(), gflop_per_clip(net_path, clip)
    rows, notes = [], [f"no Caffe GPU rows: {caffe_why}"] if caffe_why else []
    for b in batches:
        if not caffe_why:
            print(f"[bench] Caffe GPU, batch {b}")
            rows.append(caffe_gpu_row(net_path, (b, *clip), iters, gflop, device))
    if torch_why:
        notes.append(f"no PyTorch GPU rows: {torch_why}")
    for config in [] if torch_why else TORCH_GPU_CONFIGS:
        for b in batches:
            print(f"[bench] {config[0]}, batch {b}")
            rows.append(torch_gpu_row(config, net_path, (b, *clip), iters, gflop, device))
    return {"device": device, "clip": list(clip), "batches": list(batches), "gflop_per_clip": gflop,
            "rows": rows, "k40_fps": K40_FPS, "teacher_fps": teacher_fps, "goals": gpu_goals(rows),
            "notes": notes}


def _num(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _pair(d: dict, spec: str) -> str:
    return f"{_num(d['fwd'], spec)} / {_num(d['fwdbwd'], spec)}" if isinstance(d, dict) else "n/a"


def _goal_cell(r: dict) -> str:
    if r["engine"].startswith("PyTorch bf16"):
        goal = GOAL_TORCH_BF16_FPS
    elif r["engine"].startswith("Caffe"):
        goal = GOAL_CAFFE_X_K40 * K40_FPS
    else:
        return "–"
    return f"≥ {goal:,.0f}: {'pass' if r['fwd_fps'] >= goal else 'fail'}"


def _goal_lines(goals: dict) -> list[str]:
    out = []
    for key, what, extra in (
            ("torch_bf16_inference", "PyTorch bf16 inference", ""),
            ("caffe_gpu_vs_k40", "Caffe GPU forward", f" ({GOAL_CAFFE_X_K40}× the paper's {K40_FPS:g} on a K40)")):
        g = goals[key]
        verdict = "not measured" if g["pass"] is None else \
            f"**{'PASS' if g['pass'] else 'FAIL'}** (best {g['best_fps']:,.0f} frames/s)"
        out.append(f"Goal: {what} ≥ {g['goal_fps']:,.0f} frames/s{extra}: {verdict}.")
    return out


def gpu_report(g: dict) -> list[str]:
    """The GPU section of bench.md (one line when there was no GPU)."""
    if "not_run" in g:
        return ["", f"No GPU table: {g['not_run']}."]
    L = g["clip"][1]
    md = ["", f"## GPU: {g['device']}", "",
          f"V2V on {'×'.join(map(str, g['clip']))} clips ({g['gflop_per_clip']:.1f} GFLOP/clip forward), "
          f"batches {', '.join(map(str, g['batches']))}.", "",
          "| engine | batch | fwd s/clip | fwd frames/s | fwd+bwd s/clip | fwd+bwd frames/s | peak MiB fwd / fwd+bwd "
          "| TFLOP/s fwd / fwd+bwd | of peak fwd / fwd+bwd | goal (fwd frames/s) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in g["rows"]:
        pct = {k: f"{100 * v:.1f} %" if v != "n/a" else v for k, v in r["peak_fraction"].items()}
        md.append(f"| {r['engine']} | {r['batch']} | {r['fwd_s_per_clip']:.4f} | {r['fwd_fps']:,.0f} | "
                  f"{r['fwdbwd_s_per_clip']:.4f} | {r['fwdbwd_fps']:,.0f} | {_pair(r['peak_mib'], '.0f')} | "
                  f"{_pair(r['tflops'], '.1f')} | {_pair(pct, '')} | {_goal_cell(r)} |")
    md += [f"| paper: V2V on a K40 (Caffe; §5) | 1 | {16 / g['k40_fps']:.4f} | {g['k40_fps']:g} | | | | | | |",
           f"| Brox teacher (CPU, above), same frames | | {L / g['teacher_fps']:.4f} | {g['teacher_fps']:.1f} "
           "| | | | | | |", ""]
    md += _goal_lines(g["goals"])
    md += ["", "Peak memory: torch.cuda.max_memory_allocated for PyTorch; for Caffe the growth of the "
               "device's nvidia-smi memory.used from before the net was made ('n/a' without nvidia-smi). TFLOP/s: "
               "models.shapes' forward FLOPs × clips/s, forward+backward counted as 3× the forward; "
               "peak: dense fp32 / TF32 / bf16 of the device's data sheet ('n/a' for an unlisted GPU)."]
    return md + [f"Note: {n}." for n in g["notes"]]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", type=Path, help="deploy prototxt (default: the V2V segmentation deploy net)")
    ap.add_argument("--shape", default="1,3,16,112,112", help="input N,C,L,H,W")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RUNS / "bench")
    ap.add_argument("--no-data", action="store_true", help="skip the data-tool benchmark")
    ap.add_argument("--gpu-batches", default="1,8,32",
                    help="batch sizes of the GPU table (clips of --shape's C,L,H,W), e.g. 1 for a smoke run")
    return ap


def measure(net_path: Path, shape: tuple, iters: int, out: Path, data: bool, gpu_batches=(1, 8, 32)) -> dict:
    """Caffe, the Brox teacher on the same frames, the PyTorch runtime (and the data tools),
    then the GPU table."""
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
    print("[bench] GPU table")
    res["gpu"] = gpu_table(net_path, shape[1:], gpu_batches, iters, fps)
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
    md += gpu_report(res["gpu"]) if "gpu" in res else []
    md += ["", "Per-layer forward times (Caffe, ms):", "", "| layer | type | ms |", "|---|---|---|"]
    return md + [f"| {n} | {ty} | {ms:.1f} |" for n, ty, ms in res["layers"] if ms >= 0.05]


def parse_batches(spec: str) -> list[int]:
    try:
        batches = [int(b) for b in spec.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise validate.ValidationError(f"--gpu-batches {spec}: expected positive batch sizes such as 1,8,32")
    return batches


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    net_path = a.net or default_net()
    shape = tuple(int(x) for x in a.shape.split(","))
    try:
        batches = parse_batches(a.gpu_batches)
        validate.validate_net_file(net_path, "TEST")
        validate.check_input_size(*shape[2:], where=f"--shape {a.shape}")
    except validate.ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    res = measure(net_path, shape, a.iters, a.out, not a.no_data, batches)
    md = report(res, a.iters)
    with cli.writing(a.out):
        (a.out / "bench.md").write_text("\n".join(md) + "\n")
        (a.out / "bench.json").write_text(json.dumps(res, indent=2, default=str))
    print("\n".join(md[:md.index("Per-layer forward times (Caffe, ms):")]))
    print(f"[bench] written {a.out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    cli.run(main)
