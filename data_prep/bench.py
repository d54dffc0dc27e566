"""Throughput of the data tools (a benchmark, not a test); results → runs/bench/data.md.

- decode + resize: PyAV decoding a 320×240 MPEG-4 AVI (UCF101's frame size) to 128×171
  RGB, frames/s, with 1 and 2 processes (each process decodes whole videos);
- the Brox teacher (data_prep.teacher) on 171×128 frame pairs, pairs/s (= flow frames/s),
  with 1 and 2 processes, plus its self-check EPE next to DIS and Farneback;
- the data layer's sampler (ClipSource: read, crop, mirror, float conversion), clips/s
  for 16×112×112 flow clips.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from models.paths import RUNS
from models import cli


def _decode(path):
    from data_prep.video import decode_video
    return len(decode_video(path))


def _teach(pair):
    from data_prep.teacher import brox_flow
    brox_flow(*pair)
    return 1


def _rate(fn, items, procs):
    t0 = time.perf_counter()
    if procs == 1:
        n = sum(fn(i) for i in items)
    else:
        with get_context("fork").Pool(procs) as pool:
            n = sum(pool.map(fn, items, chunksize=1))
    return n / (time.perf_counter() - t0)


def _cpu_rate(fn, items):
    """Items per CPU-second of this process (robust to other load on the machine)."""
    t0 = time.process_time()
    n = sum(fn(i) for i in items)
    return n / max(time.process_time() - t0, 1e-9)


def _moving(rng, frames, h, w):
    """Frames of a real photograph (scikit-image's coffee) panning 2 px right, 1 px down."""
    import cv2
    from skimage import data
    pad = 2 * frames + 4
    big = cv2.resize(data.coffee(), (w + 2 * pad, h + 2 * pad), interpolation=cv2.INTER_AREA)
    return np.stack([big[pad - t:pad - t + h, pad - 2 * t:pad - 2 * t + w] for t in range(frames)])


def run(out=None, quick: bool = False) -> dict:
    from data_prep import teacher
    from data_prep.synthetic import write_video
    out = Path(out) if out else RUNS / "bench"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "python": sys.version.split()[0], "load_before": os.getloadavg()[0]}
    nvid, nfr, npairs = (2, 50, 8) if quick else (4, 150, 40)
    with tempfile.TemporaryDirectory() as td:
        vids = []
        for i in range(nvid):
            vids.append(str(write_video(Path(td) / f"v{i}.avi", _moving(rng, nfr, 240, 320))))
        _decode(vids[0])  # warm-up (imports, codec init)
        res["decode_fps"] = {p: _rate(_decode, vids, p) for p in (1, 2)}
        res["decode_fps_per_cpu_s"] = _cpu_rate(_decode, vids)
    fr = _moving(rng, npairs + 1, 128, 171)
    pairs = [(fr[t], fr[t + 1]) for t in range(npairs)]
    teacher.brox_flow(*pairs[0])
    res["teacher_fps"] = {p: _rate(_teach, pairs, p) for p in (1, 2)}
    res["teacher_fps_per_cpu_s"] = _cpu_rate(_teach, pairs)
    res["selfcheck"] = teacher.selfcheck(4 if quick else 8)
    res["layer_clips_per_s"] = _layer_rate(quick)
    r = res
    md = [f"# Data tools benchmark ({time.strftime('%Y-%m-%d %H:%M')})", "",
          f"Machine: {r['machine']}, Python {r['python']}. Single-threaded OpenCV per process. "
          f"Load average when it started: {r['load_before']:.1f} (wall-clock rates drop when other "
          f"jobs share the cores; the per-CPU-second column does not).", "",
          "| what | 1 process | 2 processes | per CPU-second |", "|---|---|---|---|",
          f"| decode + resize 320×240 → 128×171 (PyAV), frames/s | {r['decode_fps'][1]:.0f} | "
          f"{r['decode_fps'][2]:.0f} | {r['decode_fps_per_cpu_s']:.0f} |",
          f"| Brox teacher on 171×128 pairs, flow frames/s | {r['teacher_fps'][1]:.1f} | "
          f"{r['teacher_fps'][2]:.1f} | {r['teacher_fps_per_cpu_s']:.1f} |",
          "", f"Data layer sampler (16×112×112 flow clips, crop + mirror + float): "
          f"{r['layer_clips_per_s']:.0f} clips/s (one thread).", "",
          "Teacher self-check (real images warped by known smooth flows, mean |w| 4.5 px, 171×128):", "",
          "| method | EPE px | ms/pair |", "|---|---|---|"]
    md += [f"| {k} | {v['epe']:.3f} | {v['ms_per_pair']:.1f} |" for k, v in r["selfcheck"].items()]
    pairs_ucf = 2.4e6
    md += ["", f"UCF101 (≈2.4 M frame pairs): ≈{pairs_ucf / r['teacher_fps_per_cpu_s'] / 3600:.1f} "
           f"core-hours of teacher; ≈{pairs_ucf / r['teacher_fps'][2] / 3600:.1f} h at this run's "
           f"2-process rate."]
    with cli.writing(out):
        (out / "data.md").write_text("\n".join(md) + "\n")
        (out / "data.json").write_text(json.dumps(res, indent=1))
    print("\n".join(md))
    print(f"\nwritten {out / 'data.md'}")
    return res


def _layer_rate(quick: bool) -> float:
    from data_prep.db import ClipWriter
    from data_prep.clips import ClipSource
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as td:
        w = ClipWriter(Path(td) / "db", {"frames": ((3, 16, 128, 171), np.uint8),
                                          "flow": ((2, 16, 128, 171), np.float16)})
        for u in range(4):
            w.put_unit(u, f"v{u}", [(0, {"frames": rng.integers(0, 255, (3, 16, 128, 171), dtype=np.uint8),
                                         "flow": rng.normal(0, 3, (2, 16, 128, 171)).astype(np.float16)})])
        w.finalize({"dataset": "bench", "split": "x", "task": "flow", "command": [], "params": {}})
        w.close()
        src = ClipSource({"db": str(Path(td) / "db"), "task": "flow", "batch_size": 1, "crop": 112,
                          "length": None, "mirror": True, "train": True, "mean": None, "scale": 1.0,
                          "flow_scale": 0.125, "seed": 0, "channels": "rgb", "prefetch": 1})
        n = 10 if quick else 40
        t0 = time.perf_counter()
        for _ in range(n):
            src.next_batch()
        return n / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.bench", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("- decode"):]
        + "\nexample:\n  python -m data_prep.bench            # → runs/bench/data.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RUNS / "bench", help="folder for data.md / data.json")
    ap.add_argument("--quick", action="store_true", help="fewer frames (a smoke run)")
    a = ap.parse_args(argv)
    run(a.out, a.quick)
    return 0


if __name__ == "__main__":
    cli.run(main)
