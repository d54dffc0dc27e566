"""`make demo`: V2V end to end on small synthetic data, with real Caffe, in ~15 minutes.

    python -m tools.demo [--out runs/demo] [--seg-iters 400] [--flow-iters 400] [--quick]

1. makes a synthetic video dataset laid out like the public downloads (data_prep.synthetic):
   a GATECH-like tree of frames + label images, and a UCF101-like folder of .avi videos
   with split lists;
2. builds the clip databases with the real dataset tools (`python -m data_prep.gatech`,
   `python -m data_prep.ucf101 --task flow`, which runs the Brox teacher) and a
   per-voxel training mean (`python -m data_prep.mean`);
3. writes demo nets: the real V2V architecture at full width (models/v2v.py — the same
   code as prototxt/), on small clips (8×32×32), reading the demo databases, with a
   solver tuned for a few hundred iterations;
4. trains segmentation (V2V-0, from scratch: no C3D weights offline) and flow (V2V-flow,
   Huber on flow/α) with tools.train (pycaffe);
5. evaluates with tools.evaluate and against simple baselines (majority class; zero flow
   and the training mean flow), and writes tables, curves and pictures to runs/demo/.

Everything is written under --out (git-ignored); the real data/db/ is not touched.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from models.paths import REPO, RUNS
from models import cli

CLIP = (8, 32, 32)          # L, H, W of the demo clips
FRAME = (48, 64)            # H, W of the demo videos
CLASSES = 4


def sh(args, log, quiet):
    """Run one of our tools as a user would (python -m ...), logging its output."""
    cmd = [sys.executable, "-m", *args]
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    if not quiet:
        print("  $ python -m " + " ".join(args), flush=True)
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:  # everything to the log; training progress to the terminal too
        log.write(line)
        if not quiet and line.startswith("[train]"):
            print("    " + line.rstrip(), flush=True)
    log.flush()
    if p.wait() != 0:
        raise SystemExit(f"demo: step failed ({' '.join(args[:2])}); see {log.name}")


def make_raw(raw: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    from data_prep.synthetic import make_scene, write_gatech_like, write_video
    rng = np.random.default_rng(seed)
    H, W = FRAME

    def scenes(n, frames, **kw):
        return [make_scene(rng, frames=frames, height=H, width=W, classes=CLASSES, **kw) for _ in range(n)]
    write_gatech_like(raw / "gatech", {"train": scenes(n_train, 24), "test": scenes(n_test, 16)})
    (raw / "gatech" / "train.txt").write_text(
        "".join(f"train/video{i:03d}\n" for i in range(n_train)))
    (raw / "gatech" / "test.txt").write_text(
        "".join(f"test/video{i:03d}\n" for i in range(n_test)))
    lists = {"train": [], "test": []}
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i, s in enumerate(scenes(n, 2 * CLIP[0] + 1, class_motion=True)):
            cls = f"Synth{i % 3}"
            rel = f"{cls}/v_{cls}_g{i:02d}_{split}.avi"
            write_video(raw / "ucf" / rel, s.frames)
            lists[split].append(rel)
            truth[rel] = s.flow
    (raw / "ucf_splits").mkdir(parents=True, exist_ok=True)
    (raw / "ucf_splits" / "trainlist01.txt").write_text("".join(f"{r} 1\n" for r in lists["train"]))
    (raw / "ucf_splits" / "testlist01.txt").write_text("".join(f"{r}\n" for r in lists["test"]))
    np.savez_compressed(raw / "ucf_true_flow.npz", **{k.replace("/", "__"): v for k, v in truth.items()})


DEMO_CHOICES = ("demo-only choices for a schedule of a few hundred iterations: MSRA weight "
                "fillers and bias 0 (the paper's gaussian 0.01 / bias 1 start far too slowly), "
                "the prediction layer started near zero (gaussian 0.001), flow input × 1/128 "
                "after the mean, the Adam solver; the architecture is the one in prototxt/")


def demo_net_text(net_text: str, db_root: Path, mean: Path | None, scale: float = 1.0) -> str:
    """A generated train_val net with its ClipDataLayers pointed at the demo databases and
    the demo's fillers (see DEMO_CHOICES)."""
    from google.protobuf import text_format
    from models.engine import pb2
    net = text_format.Parse(net_text, pb2().NetParameter())
    for layer in net.layer:
        if layer.type in ("Convolution3D", "Deconvolution3D"):
            p = layer.convolution3d_param
            p.weight_filler.Clear()
            p.weight_filler.type = "msra"
            p.bias_filler.Clear()
            p.bias_filler.type = "constant"
            p.bias_filler.value = 0.0
            if layer.name in ("conv_pre", "predict"):  # start from ~zero predictions
                p.weight_filler.Clear()
                p.weight_filler.type = "gaussian"
                p.weight_filler.std = 0.001
        if layer.type == "Python" and layer.python_param.layer == "ClipDataLayer":
            p = json.loads(layer.python_param.param_str)
            split = p["db"].rsplit("/", 1)[1]
            p.update(db=str(db_root / split), crop=CLIP[1], length=CLIP[0],
                     mean=str(mean) if mean else None, scale=scale)
            layer.python_param.param_str = json.dumps(p)
    return text_format.MessageToString(net)


def write_nets(out: Path, key, db_root: Path, mean, solver: dict,
               scale: float = 1.0) -> tuple[Path, Path, Path]:
    """Demo train_val / deploy / solver of a net of models.v2v (a key or a Variant)."""
    from models.v2v import Variant, build, solver_text, variant
    v = key if isinstance(key, Variant) else variant(key)
    key = v.key
    d = out / "nets"
    d.mkdir(parents=True, exist_ok=True)
    tv, dep, sol = d / f"{key}_train_val.prototxt", d / f"{key}_deploy.prototxt", d / f"{key}_solver.prototxt"
    C = 1 if key.startswith("color") else 3
    tv.write_text(f"# demo copy of prototxt/{key}_train_val.prototxt: demo databases, clips "
                  f"{'x'.join(map(str, CLIP))}; {DEMO_CHOICES}\n"
                  + demo_net_text(build(v, "train_val", title=False), db_root, mean, scale))
    dep.write_text(build(v, "deploy", input_shape=(1, C, *CLIP)))
    text = solver_text(v, net=str(tv), **solver)
    text = "\n".join(line.split("  # ")[0] if not line.startswith("#") else line
                     for line in text.splitlines())  # the paper/release notes do not apply here
    sol.write_text(f"# demo solver: {DEMO_CHOICES}\n{text}\n")
    return tv, dep, sol


def demo_solver(iters: int) -> dict:
    return dict(type="Adam", base_lr=1e-4, momentum=0.9, momentum2=0.999, lr_policy="step",
                gamma=0.1, stepsize=max(1, int(iters * 0.8)), max_iter=iters, weight_decay=0.0005,
                snapshot=max(50, iters // 4), test_iter=2, test_interval=max(1, iters // 4))


def baselines_seg(train_db: Path, test_db: Path) -> dict:
    from data_prep.db import ClipDB
    from models.metrics import Confusion
    tr = ClipDB(train_db)
    hist = np.zeros(256, np.int64)
    for i in range(len(tr)):
        hist += np.bincount(tr[i]["label"].ravel(), minlength=256)
    hist[255] = 0
    major = int(hist.argmax())
    te = ClipDB(test_db)
    conf = Confusion(CLASSES)
    for i in range(len(te)):
        lab = centre(te[i]["label"][:, :CLIP[0]])
        conf.add(lab, np.full(lab.shape, major))
    return {"majority_class": major, "majority_pixel_accuracy": 100 * conf.pixel_accuracy()}


def centre(a):
    h, w = a.shape[-2:]
    y0, x0 = (h - CLIP[1]) // 2, (w - CLIP[2]) // 2
    return a[..., y0:y0 + CLIP[1], x0:x0 + CLIP[2]]


def baselines_flow(train_db: Path, test_db: Path) -> dict:
    from data_prep.db import ClipDB
    from models.metrics import epe_sum
    tr = ClipDB(train_db)
    mean = np.mean([tr[i]["flow"].astype(np.float64).mean(axis=(1, 2, 3)) for i in range(len(tr))], 0)
    te = ClipDB(test_db)
    z = m = n = 0.0
    for i in range(len(te)):
        f = centre(te[i]["flow"][:, :CLIP[0]].astype(np.float64))
        s, c = epe_sum(np.zeros_like(f), f)
        z, n = z + s, n + c
        s, _ = epe_sum(np.broadcast_to(mean[:, None, None, None], f.shape), f)
        m += s
    return {"zero_flow_epe": z / n, "mean_flow_epe": m / n, "train_mean_flow": mean.tolist()}


def make_databases(raw: Path, db: Path, log, quiet: bool) -> None:
    """The clip databases and training means of the synthetic downloads in ``raw``, built
    into ``db`` with the real dataset tools."""
    L = str(CLIP[0])
    size = ["--height", str(FRAME[0]), "--width", str(FRAME[1])]
    for split in ("train", "test"):
        sh(["data_prep.gatech", "--root", str(raw / "gatech"),
            "--videos", str(raw / "gatech" / f"{split}.txt"), "--split", split, "--length", L,
            "--stride", "2" if split == "train" else L, *size, "--out", str(db / "gatech" / split)],
           log, quiet)
        sh(["data_prep.ucf101", "--task", "flow", "--root", str(raw / "ucf"),
            "--splits", str(raw / "ucf_splits"), "--split", split, "--length", L, "--stride", L, *size,
            "--workers", "2", "--out", str(db / "ucf101_flow" / split)], log, quiet)
    for name in ("gatech", "ucf101_flow"):
        sh(["data_prep.mean", "--db", str(db / name / "train"), "--out", str(db / f"{name}_mean.npy")],
           log, quiet)


def train_nets(out: Path, nets: dict, log, quiet: bool) -> dict:
    """Train each net (key → (train_val, deploy, solver)) with tools.train: {key: {"train": summary}}."""
    results = {}
    for key, (_, _, sol) in nets.items():
        sh(["tools.train", "--solver", str(sol), "--out", str(out / key), "--fresh", "--log-every", "50"],
           log, quiet)
        results[key] = {"train": json.loads((out / key / "summary.json").read_text())}
    return results


def evaluate_nets(out: Path, nets: dict, results: dict) -> None:
    """Evaluate each trained net with tools.evaluate, into results[key]["eval"]."""
    from tools.evaluate import evaluate
    for key, (tv, dep, _) in nets.items():
        r = evaluate(deploy=dep, train_val=tv, weights=results[key]["train"]["weights"],
                     out=out / key / "eval", quiet=True, pictures=2)
        r["net"], r["paper"] = f"{key} (demo)", None  # synthetic data: no paper number applies
        results[key]["eval"] = r


def report(results: dict, videos: int, seconds: float) -> list[str]:
    """The demo's README: the paper-shaped tables and the baselines."""
    from tools.evaluate import tables
    s, f, b = results["seg_v2v_0"]["eval"], results["flow_v2v"]["eval"], results["baselines"]
    L, H, W = CLIP
    return [
        "# V2V demo", "",
        f"Synthetic data ({videos} training videos per task, frames {FRAME[0]}×{FRAME[1]}, "
        f"{CLASSES} classes), clips {L}×{H}×{W} (centre crop for testing), full-width V2V "
        f"({results['seg_v2v_0']['train']['iter']} + {results['flow_v2v']['train']['iter']} iterations "
        f"of real Caffe on the CPU). Total time {seconds:.0f} s.", "",
        tables([s, f]), "",
        "### Against simple baselines (same test clips)", "",
        "| task | V2V (demo) | baseline | value |", "|---|---|---|---|",
        f"| segmentation pixel acc. (%) | {s['pixel_accuracy']:.1f} | majority class "
        f"({b['majority_class']}) | {b['majority_pixel_accuracy']:.1f} |",
        f"| flow EPE vs Brox teacher (px) | {f['epe']:.3f} | zero flow | {b['zero_flow_epe']:.3f} |",
        f"| flow EPE vs Brox teacher (px) | {f['epe']:.3f} | training mean flow | {b['mean_flow_epe']:.3f} |",
        "", "Training curves: `seg_v2v_0/curve.png`, `flow_v2v/curve.png`. Pictures: "
        "`seg_v2v_0/eval/clip*.png|gif`, `flow_v2v/eval/clip*.png|gif`. Nets: `nets/`. Log: `demo.log`.",
    ]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RUNS / "demo")
    ap.add_argument("--seg-iters", type=int, default=300)
    ap.add_argument("--flow-iters", type=int, default=400)
    ap.add_argument("--videos", type=int, default=8, help="training videos per dataset")
    ap.add_argument("--quick", action="store_true", help="shorter run (the test): 200 + 400 iterations")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.seg_iters, a.flow_iters = min(a.seg_iters, 200), min(a.flow_iters, 400)
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "demo.log", "w")
    say = (lambda m: None) if a.quiet else (lambda m: print(f"[demo] {m}", flush=True))
    t0 = time.time()
    say(f"1/5 synthetic videos -> {out / 'raw'}")
    raw, db = out / "raw", out / "db"
    make_raw(raw, a.videos, max(2, a.videos // 2))
    say("2/5 clip databases with the real dataset tools (Brox teacher for flow)")
    make_databases(raw, db, log, a.quiet)
    say("3/5 demo nets: full-width V2V on 8x32x32 clips")
    nets = {"seg_v2v_0": write_nets(out, "seg_v2v_0", db / "gatech", db / "gatech_mean.npy",
                                    demo_solver(a.seg_iters)),
            "flow_v2v": write_nets(out, "flow_v2v", db / "ucf101_flow", db / "ucf101_flow_mean.npy",
                                   demo_solver(a.flow_iters), scale=1 / 128)}
    say(f"4/5 training (segmentation {a.seg_iters} it, flow {a.flow_iters} it) with tools.train")
    results = train_nets(out, nets, log, a.quiet)
    say("5/5 evaluation, baselines, tables and pictures")
    evaluate_nets(out, nets, results)
    results["baselines"] = {**baselines_seg(db / "gatech" / "train", db / "gatech" / "test"),
                            **baselines_flow(db / "ucf101_flow" / "train", db / "ucf101_flow" / "test")}
    text = report(results, a.videos, time.time() - t0)
    (out / "README.md").write_text("\n".join(text) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if not a.quiet:
        print("\n".join(text))
        print(f"\n[demo] done in {time.time() - t0:.0f} s: results, curves and pictures in {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
