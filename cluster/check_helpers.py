"""Helpers of cluster/slurm_check.sh (and the teacher-rate measurement in cluster/README.md).

    python cluster/check_helpers.py ucf DIR                 # a small UCF101-shaped download in DIR
    python cluster/check_helpers.py wait-progress DB        # until DB holds >= 1 finished video
    python cluster/check_helpers.py same-db A B             # equal checksum, records, bad items?
    python cluster/check_helpers.py ddp-nets DIR --db DB    # the DDP-equivalence solvers
    python cluster/check_helpers.py compare-weights A B --tol T
    python cluster/check_helpers.py rate                    # the teacher's cost per clip, one core

Run with the project's venv from the repository root (or with the root on PYTHONPATH).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: the repository root is the parent folder
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Class folders as in the archive; the list spells one as the official lists do
# ("HandStandPushups" in the lists, "HandstandPushups" on disk): matched case-insensitively.
CLASSES = [("ApplyEyeMakeup", "ApplyEyeMakeup"), ("Biking", "Biking"), ("Diving", "Diving"),
           ("HandstandPushups", "HandStandPushups")]
CORRUPT = "Diving/v_Diving_g99_c01.avi"


# ------------------------------------------------------------------ the synthetic download
def write_ucf(root: Path, videos: int = 16, frames: int = 33, height: int = 240, width: int = 320,
              seed: int = 0) -> dict:
    """``root/UCF-101/<Class>/v_<Class>_gNN_c01.avi`` (synthetic scenes, UCF101's 320×240
    frame size) and ``root/ucfTrainTestlist/{train,test}list01.txt`` naming them, plus one
    corrupt video in the train list (a bad item every build must report the same way)."""
    from data_prep.synthetic import make_scene, write_video
    rng = np.random.default_rng(seed)
    names = []
    for i in range(videos):
        disk, listed = CLASSES[i % len(CLASSES)]
        g = i // len(CLASSES) + 1
        s = make_scene(rng, frames=frames, height=height, width=width, classes=8, objects=3)
        write_video(root / "UCF-101" / disk / f"v_{disk}_g{g:02d}_c01.avi", s.frames)
        names.append(f"{listed}/v_{listed}_g{g:02d}_c01.avi")
    bad = root / "UCF-101" / CORRUPT
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x17" * 4000)
    train = sorted(names + [CORRUPT])
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "trainlist01.txt").write_text("".join(f"{n} {1 + i % 4}\n" for i, n in enumerate(train)))
    (lists / "testlist01.txt").write_text("".join(f"{n}\n" for n in names[:4]))
    return {"videos": videos, "train_list": len(train), "frames": frames}


# ------------------------------------------------------------------ databases
def wait_progress(db: Path, at_least: int = 1, timeout: float = 300.0, poll: float = 0.1) -> int:
    """Wait until the (shard) database under construction holds ``at_least`` finished videos.
    0: it does and is still being built; 3: it finished first (manifest.json); 2: timeout."""
    from data_prep.db import progress
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (db / "manifest.json").exists():
            return 3
        try:
            if progress(db) >= at_least:
                return 3 if (db / "manifest.json").exists() else 0
        except Exception:  # noqa: BLE001 - the writer may be creating the environment right now
            pass
        time.sleep(poll)
    return 2


def db_summary(db: Path) -> dict:
    man = json.loads((Path(db) / "manifest.json").read_text())
    return {"checksum": man["checksum"], "count": man["count"], "keys": [r["key"] for r in man["records"]],
            "bad": sorted(b["item"] for b in man["bad"])}


def same_db(a: Path, b: Path) -> list[str]:
    """What differs between two finished databases (empty: the same records and bad items)."""
    sa, sb = db_summary(a), db_summary(b)
    return [f"{k}: {sa[k] if k != 'keys' else len(sa[k])} != {sb[k] if k != 'keys' else len(sb[k])}"
            for k in ("checksum", "count", "keys", "bad") if sa[k] != sb[k]]


# ------------------------------------------------------------------ DDP equivalence
DATA = """layer {{ name: "{name}" type: "Python" top: "{data}" top: "{label}"
  python_param {{ module: "data_prep.layers" layer: "ClipDataLayer"
    param_str: '{params}' }} }}
"""
BODY = """layer {{ name: "conv1" type: "Convolution3D" bottom: "data" top: "conv1"
  convolution3d_param {{ num_output: 8 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1
    weight_filler {{ type: "gaussian" std: 0.05 }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "conv2" type: "Convolution3D" bottom: "conv1" top: "pred"
  convolution3d_param {{ num_output: 2 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1
    weight_filler {{ type: "gaussian" std: 0.05 }} }} }}
layer {{ name: "fp" type: "Flatten" bottom: "pred" top: "fp" }}
layer {{ name: "fl" type: "Flatten" bottom: "label" top: "fl" }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "fp" bottom: "fl" top: "loss" }}
"""
SOLVER = """net: "{net}"
base_lr: 0.00001
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.0005
max_iter: {iters}
snapshot: 0
snapshot_prefix: "runs/{name}/snapshots/{name}"
random_seed: 1
"""


def _clip_params(db: Path, seed: int, batch: int) -> str:
    return json.dumps({"db": str(db), "task": "flow", "batch_size": batch, "crop": 24, "length": 8,
                       "train": True, "mirror": True, "seed": seed, "scale": 1 / 255, "flow_scale": 0.125})


def ddp_nets(out: Path, db: Path, batch: int = 2, seed: int = 5, iters: int = 6) -> dict:
    """Three solvers over the same two-conv flow net and database:

    - ``ddp``: one ClipDataLayer (batch B, seed s); run as R = 2 DDP ranks, rank r reads
      with seed s + r (torch_runtime.data), gradients averaged: effective batch 2B;
    - ``one``: one process whose net has two ClipDataLayers (seeds s and s + 1, batch B each)
      concatenated into one batch of 2B: the same clips, crops and mirrors as the two ranks,
      the same mean loss and gradient;
    - ``control``: as ``one`` with seed s + 2 in place of s + 1 (what rank 1 would train on
      if the seed offset were lost): the distance the comparison must tell apart.
    """
    out.mkdir(parents=True, exist_ok=True)
    nets = {
        "ddp": DATA.format(name="data", data="data", label="label", params=_clip_params(db, seed, batch)),
    }
    for name, second in (("one", seed + 1), ("control", seed + 2)):
        nets[name] = (DATA.format(name="data0", data="data0", label="label0", params=_clip_params(db, seed, batch))
                      + DATA.format(name="data1", data="data1", label="label1",
                                    params=_clip_params(db, second, batch))
                      + 'layer { name: "cat_d" type: "Concat" bottom: "data0" bottom: "data1" top: "data"\n'
                        '  concat_param { axis: 0 } }\n'
                      + 'layer { name: "cat_l" type: "Concat" bottom: "label0" bottom: "label1" top: "label"\n'
                        '  concat_param { axis: 0 } }\n')
    solvers = {}
    for name, data in nets.items():
        (out / f"{name}_net.prototxt").write_text(f'name: "ddpcheck"\n{data}{BODY.format()}')
        sp = out / f"{name}_solver.prototxt"
        sp.write_text(SOLVER.format(net=out / f"{name}_net.prototxt", iters=iters, name=f"ddpcheck_{name}"))
        solvers[name] = str(sp)
    return solvers


def weights_diff(a: Path, b: Path) -> dict:
    """Largest |a − b| over all blobs of two caffemodels, absolute and relative to max |a|."""
    from torch_runtime.caffemodel import read_caffemodel
    wa, wb = read_caffemodel(a), read_caffemodel(b)
    if sorted(wa) != sorted(wb):
        raise SystemExit(f"error: {a} and {b} hold different layers: {sorted(wa)} vs {sorted(wb)}")
    diff, scale = 0.0, 0.0
    for k in wa:
        for x, y in zip(wa[k], wb[k]):
            diff = max(diff, float(np.abs(x.astype(np.float64) - y).max()))
            scale = max(scale, float(np.abs(x).max()))
    return {"max_abs": diff, "max_rel": diff / max(scale, 1e-30), "blobs": sum(len(v) for v in wa.values())}


# ------------------------------------------------------------------ the teacher's cost
def teacher_rate(clips: int = 3) -> dict:
    """Seconds per UCF101 clip (decode 17 frames of 320×240 + 16 Brox flows at 128×171) in
    this process (CPU time: pin it to one core with taskset for a one-core figure)."""
    import tempfile

    from data_prep.synthetic import make_scene, write_video
    from data_prep.ucf101 import work_video
    rng = np.random.default_rng(0)
    frames = 16 * clips + 1
    with tempfile.TemporaryDirectory() as td:
        v = write_video(Path(td) / "v.avi", make_scene(rng, frames=frames, height=240, width=320,
                                                       classes=8, objects=3).frames)
        work_video("warm-up", v, "color", 16, 16, 128, 171)
        t0, c0 = time.perf_counter(), time.process_time()
        out = work_video("v", v, "flow", 16, 16, 128, 171)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(out) == clips
    return {"clips": clips, "s_per_clip_wall": wall / clips, "s_per_clip_cpu": cpu / clips,
            "ms_per_pair_cpu": 1000 * cpu / (16 * clips)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python cluster/check_helpers.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ucf", help="a small UCF101-shaped download")
    p.add_argument("root", type=Path)
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--frames", type=int, default=33)
    p = sub.add_parser("wait-progress", help="wait until a database being built holds N finished videos")
    p.add_argument("db", type=Path)
    p.add_argument("--at-least", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300)
    p = sub.add_parser("same-db", help="exit 1 unless two finished databases hold the same records")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p = sub.add_parser("ddp-nets", help="write the DDP-equivalence solvers")
    p.add_argument("out", type=Path)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--iters", type=int, default=6)
    p = sub.add_parser("compare-weights", help="exit 1 if two caffemodels differ by more than --tol (relative)")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--tol", type=float, required=True)
    p.add_argument("--at-least", action="store_true", help="exit 1 if they differ by LESS than --tol")
    p = sub.add_parser("rate", help="the teacher's cost per UCF101 clip in this process")
    p.add_argument("--clips", type=int, default=3)
    a = ap.parse_args(argv)
    if a.cmd == "ucf":
        print(json.dumps(write_ucf(a.root, a.videos, a.frames)))
    elif a.cmd == "wait-progress":
        return wait_progress(a.db, a.at_least, a.timeout)
    elif a.cmd == "same-db":
        diff = same_db(a.a, a.b)
        s = db_summary(a.a)
        print(f"{'differ: ' + '; '.join(diff) if diff else 'same'} (count {s['count']}, "
              f"checksum {s['checksum'][:16]}, bad {len(s['bad'])})")
        return 1 if diff else 0
    elif a.cmd == "ddp-nets":
        print(json.dumps(ddp_nets(a.out, a.db.resolve(), iters=a.iters)))
    elif a.cmd == "compare-weights":
        d = weights_diff(a.a, a.b)
        print(f"largest weight difference {d['max_abs']:.3g}, {d['max_rel']:.3g} of the largest weight, "
              f"over {d['blobs']} blobs (tolerance {a.tol:g})")
        return int(d["max_rel"] < a.tol if a.at_least else d["max_rel"] > a.tol)
    else:
        print(json.dumps(teacher_rate(a.clips)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
