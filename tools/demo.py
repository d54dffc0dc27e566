"""`make demo`: V2V end to end on small synthetic data, with real Caffe, in ~8 minutes on 2 cores.

    python -m tools.demo [--out runs/demo] [--seg-iters N] [--flow-iters N] [--color-iters N] [--quick]

1. makes a synthetic video dataset laid out like the public downloads (data_prep.synthetic):
   a GATECH-like tree of frames + label images, and a UCF101-like folder of .avi videos
   with split lists and their true flow;
2. builds the clip databases with the real dataset tools (`python -m data_prep.gatech`,
   `python -m data_prep.ucf101 --task flow|color`, the flow one running the Brox teacher)
   and per-voxel training means (`python -m data_prep.mean`);
3. writes demo nets: the real V2V architecture at full width (models/v2v.py — the same
   code as prototxt/), on small clips (8×32×32), reading the demo databases, with a
   solver for a few hundred iterations (DEMO_CHOICES);
4. trains segmentation (V2V-0, from scratch: no C3D weights offline), flow (V2V-flow,
   Huber loss) and colorization (gray → RGB, L2) with tools.train (pycaffe);
5. evaluates with tools.evaluate and against simple baselines (tools/demo_report.py:
   majority class; zero flow and the training mean flow, against the Brox teacher and the
   true flow; gray as RGB and the mean colour per luma), measures V2V's speed against the
   teacher, exports the flow net to ONNX and runs a clip through onnxruntime, and writes
   the report, curves and pictures (PNG + GIF) to runs/demo/.

Everything is written under --out (git-ignored); the real data/db/ is not touched.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    """The synthetic downloads: raw/gatech (frames + labels), raw/ucf (flow videos) and
    raw/ucf_color (colorization videos, 6 objects of classes of equal luma), split lists in
    raw/ucf_splits, the true flow of raw/ucf in raw/ucf_true_flow.npz."""
    from data_prep.synthetic import EQUAL_LUMA_COLOURS, make_scene, write_gatech_like
    rng = np.random.default_rng(seed)
    H, W = FRAME

    def scenes(n, frames, **kw):
        return [make_scene(rng, frames=frames, height=H, width=W, classes=CLASSES, **kw) for _ in range(n)]
    write_gatech_like(raw / "gatech", {"train": scenes(n_train, 24), "test": scenes(n_test, 16)})
    for split, n in (("train", n_train), ("test", n_test)):
        (raw / "gatech" / f"{split}.txt").write_text("".join(f"{split}/video{i:03d}\n" for i in range(n)))
    truth, lists = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        lists[split] = write_ucf_like(raw / "ucf", split, scenes(n, 2 * CLIP[0] + 1, class_motion=True), truth)
        write_ucf_like(raw / "ucf_color", split, scenes(n, 2 * CLIP[0] + 1, class_motion=True,
                                                        colours=EQUAL_LUMA_COLOURS, objects=6))
    (raw / "ucf_splits").mkdir(parents=True, exist_ok=True)
    (raw / "ucf_splits" / "trainlist01.txt").write_text("".join(f"{r} 1\n" for r in lists["train"]))
    (raw / "ucf_splits" / "testlist01.txt").write_text("".join(f"{r}\n" for r in lists["test"]))
    np.savez_compressed(raw / "ucf_true_flow.npz", **{k.replace("/", "__"): v for k, v in truth.items()})


def write_ucf_like(root: Path, split: str, scenes, truth: dict | None = None) -> list[str]:
    """Scenes as UCF101-style videos <Class>/v_<Class>_gNN_<split>.avi; their relative
    paths (the split list's entries); the true flow into ``truth`` by path."""
    from data_prep.synthetic import write_video
    rels = []
    for i, s in enumerate(scenes):
        cls = f"Synth{i % 3}"
        rel = f"{cls}/v_{cls}_g{i:02d}_{split}.avi"
        write_video(root / rel, s.frames)
        rels.append(rel)
        if truth is not None:
            truth[rel] = s.flow
    return rels


DEMO_CHOICES = ("demo-only choices for a schedule of a few hundred iterations: MSRA weight "
                "fillers and bias 0 (the paper's gaussian 0.01 / bias 1 start far too slowly), "
                "the prediction layer started near zero (gaussian 0.001; colour: its bias at the "
                "training set's mean RGB value), the Adam solver (lr 1e-4; colour 3e-4); flow "
                "targets in pixels (alpha = 1 instead of 15: the demo's flows are 0-2 px); no "
                "mirroring for flow and colour (the demo's classes move with their own "
                "velocities); the architecture is the one in prototxt/")


@dataclass(frozen=True)
class Task:
    """One of the demo's three nets: its variant (models/v2v.py), databases and mean."""
    key: str
    dataset: str              # folder under db/
    mean: str                 # file under db/
    overrides: tuple = ()     # (name, value) pairs: Variant fields changed for the demo
    data: tuple = ()          # (name, value) pairs: ClipDataLayer parameters changed
    lr: float = 1e-4          # Adam's base_lr


TASKS = (Task("seg_v2v_0", "gatech", "gatech_mean.npy"),
         Task("flow_v2v", "ucf101_flow", "ucf101_flow_mean.npy", (("flow_scale", 1.0),), (("mirror", False),)),
         Task("color_v2v", "ucf101_color", "ucf101_color_mean.npy", (), (("mirror", False),), lr=3e-4))


def demo_net_text(net_text: str, db_root: Path, mean: Path | None, data: dict,
                  predict_bias: float = 0.0) -> str:
    """A generated train_val net with its ClipDataLayers pointed at the demo databases and
    the demo's fillers (see DEMO_CHOICES)."""
    from google.protobuf import text_format
    from models.engine import pb2
    net = text_format.Parse(net_text, pb2().NetParameter())
    for layer in net.layer:
        if layer.type in ("Convolution3D", "Deconvolution3D"):
            demo_fillers(layer.name, layer.convolution3d_param, predict_bias)
        if layer.type == "Python" and layer.python_param.layer == "ClipDataLayer":
            p = json.loads(layer.python_param.param_str)
            split = p["db"].rsplit("/", 1)[1]
            p.update(db=str(db_root / split), crop=CLIP[1], length=CLIP[0],
                     mean=str(mean) if mean else None, **data)
            layer.python_param.param_str = json.dumps(p)
    return text_format.MessageToString(net)


def demo_fillers(name: str, p, predict_bias: float) -> None:
    p.weight_filler.Clear()
    p.bias_filler.Clear()
    p.bias_filler.type = "constant"
    p.bias_filler.value = 0.0
    if name in ("conv_pre", "predict"):  # start from ~constant predictions
        p.weight_filler.type = "gaussian"
        p.weight_filler.std = 0.001
        p.bias_filler.value = predict_bias
    else:
        p.weight_filler.type = "msra"


def write_nets(out: Path, task: Task, db: Path, solver: dict) -> tuple[Path, Path, Path]:
    """Demo train_val / deploy / solver of one task's net (models.v2v, with its overrides)."""
    from models.v2v import build, solver_text, variant
    v = replace(variant(task.key), **dict(task.overrides))
    d = out / "nets"
    d.mkdir(parents=True, exist_ok=True)
    key = v.key
    tv, dep, sol = d / f"{key}_train_val.prototxt", d / f"{key}_deploy.prototxt", d / f"{key}_solver.prototxt"
    C = 1 if v.task == "color" else 3
    bias = mean_rgb(db / task.dataset / "train") if v.task == "color" else 0.0
    tv.write_text(f"# demo copy of prototxt/{key}_train_val.prototxt: demo databases, clips "
                  f"{'x'.join(map(str, CLIP))}; {DEMO_CHOICES}\n"
                  + demo_net_text(build(v, "train_val", title=False), db / task.dataset,
                                  db / task.mean, dict(task.data), bias))
    dep.write_text(build(v, "deploy", input_shape=(1, C, *CLIP)))
    text = solver_text(v, net=str(tv), **solver)
    text = "\n".join(line.split("  # ")[0] if not line.startswith("#") else line
                     for line in text.splitlines())  # the paper/release notes do not apply here
    sol.write_text(f"# demo solver: {DEMO_CHOICES}\n{text}\n")
    return tv, dep, sol


def mean_rgb(train_db: Path) -> float:
    """The training set's mean RGB value in [0, 1] (the colour net's mean target)."""
    from data_prep.db import ClipDB
    db = ClipDB(train_db)
    return round(float(np.mean([db[i]["frames"].mean() for i in range(len(db))]) / 255), 4)


def demo_solver(iters: int, base_lr: float = 1e-4) -> dict:
    """Adam, lr × 0.1 for the last 20 %; snapshots halfway and at the end (a V2V snapshot
    with Adam's history is ~400 MB)."""
    return dict(type="Adam", base_lr=base_lr, momentum=0.9, momentum2=0.999, lr_policy="step",
                gamma=0.1, stepsize=max(1, int(iters * 0.8)), max_iter=iters, weight_decay=0.0005,
                snapshot=max(50, iters // 2), test_iter=2, test_interval=max(1, iters // 4))


def make_databases(raw: Path, db: Path, log, quiet: bool) -> None:
    """The clip databases and training means of the synthetic downloads in ``raw``, built
    into ``db`` with the real dataset tools (training clips overlap: stride 2 or 4)."""
    L = str(CLIP[0])
    size = ["--height", str(FRAME[0]), "--width", str(FRAME[1])]
    for split in ("train", "test"):
        sh(["data_prep.gatech", "--root", str(raw / "gatech"),
            "--videos", str(raw / "gatech" / f"{split}.txt"), "--split", split, "--length", L,
            "--stride", "2" if split == "train" else L, *size, "--out", str(db / "gatech" / split)],
           log, quiet)
        for task, videos in (("flow", "ucf"), ("color", "ucf_color")):
            sh(["data_prep.ucf101", "--task", task, "--root", str(raw / videos),
                "--splits", str(raw / "ucf_splits"), "--split", split, "--length", L,
                "--stride", "4" if split == "train" else L, *size, "--workers", "2",
                "--out", str(db / f"ucf101_{task}" / split)], log, quiet)
    for t in TASKS:
        gray = ["--gray"] if t.key.startswith("color") else []
        sh(["data_prep.mean", "--db", str(db / t.dataset / "train"), *gray, "--out", str(db / t.mean)],
           log, quiet)


def train_net(out: Path, key: str, solver: Path, log, quiet: bool) -> dict:
    """Train one net with tools.train (real Caffe): its summary.json."""
    sh(["tools.train", "--solver", str(solver), "--out", str(out / key), "--fresh", "--log-every", "50"],
       log, quiet)
    return json.loads((out / key / "summary.json").read_text())


def evaluate_task(out: Path, db: Path, task: Task, files, weights: Path, true_flow) -> dict:
    """tools.evaluate's row, then V2V and the baselines on the same test clips, pictures."""
    from tools import demo_report as rep
    from tools.evaluate import DeployNet, evaluate
    tv, dep, _ = files
    r = evaluate(deploy=dep, train_val=tv, weights=weights, out=out / task.key / "eval",
                 quiet=True, pictures=0)
    r["net"], r["paper"] = f"{task.key} (demo)", None  # synthetic data: no paper number applies
    net = DeployNet(dep, weights)
    preds = rep.predictions(net, tv, true_flow if r["task"] == "flow" else None)
    train_db = db / task.dataset / "train"
    scores = {"seg": lambda: rep.majority_scores(preds, train_db, CLASSES),
              "flow": lambda: rep.flow_scores(preds, train_db),
              "color": lambda: rep.color_scores(preds, train_db)}[r["task"]]()
    res = {"eval": r, "scores": scores, "pictures": rep.picture_rows(r["task"], preds, out / task.key)}
    if r["task"] == "flow":
        res["speed"] = rep.speed(net, preds)
        res["onnx"] = onnx_check(out / task.key, dep, weights, preds[0]["x"], preds[0]["pred"])
    return res


def onnx_check(out: Path, deploy: Path, weights: Path, clip, caffe_out) -> dict:
    """Export the trained net to ONNX (tools.export) and run one clip through onnxruntime."""
    from tools.export import export_onnx, run_onnx
    path = export_onnx(deploy, weights, out / f"{deploy.stem.replace('_deploy', '')}.onnx")
    got = next(iter(run_onnx(path, clip).values()))
    diff = float(np.abs(got - caffe_out).max() / max(np.abs(caffe_out).max(), 1e-12))
    return {"path": str(path), "max_rel_diff_vs_caffe": diff}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RUNS / "demo")
    ap.add_argument("--seg-iters", type=int, default=250)
    ap.add_argument("--flow-iters", type=int, default=350)
    ap.add_argument("--color-iters", type=int, default=600)
    ap.add_argument("--videos", type=int, default=12, help="training videos per dataset")
    ap.add_argument("--quick", action="store_true",
                    help="shorter run (the test): 250 + 200 + 450 iterations (segmentation "
                         "keeps its 250: at 150 its margin over the majority class was 6-21 points)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.flow_iters, a.color_iters = min(a.flow_iters, 200), min(a.color_iters, 450)
    return a


class Stages:
    """Progress lines and the time each stage took."""

    def __init__(self, quiet: bool, total: int):
        self.quiet, self.total, self.seconds, self.t0 = quiet, total, {}, time.time()

    @contextmanager
    def __call__(self, name: str):
        if not self.quiet:
            print(f"[demo] {len(self.seconds) + 1}/{self.total} {name}", flush=True)
        t = time.time()
        yield
        self.seconds[name] = round(time.time() - t, 1)


def main(argv=None) -> int:
    from tools import demo_report as rep
    a = parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "demo.log", "w")
    stage = Stages(a.quiet, 4 + 2 * len(TASKS))
    raw, db = out / "raw", out / "db"
    with stage("synthetic videos (GATECH-like frames + labels, UCF101-like .avi)"):
        make_raw(raw, a.videos, max(2, a.videos // 3))
    with stage("clip databases with the real dataset tools (Brox teacher for flow)"):
        make_databases(raw, db, log, a.quiet)
    with stage("demo nets: full-width V2V on 8x32x32 clips"):
        iters = {"seg_v2v_0": a.seg_iters, "flow_v2v": a.flow_iters, "color_v2v": a.color_iters}
        nets = {t.key: write_nets(out, t, db, demo_solver(iters[t.key], t.lr)) for t in TASKS}
    results = {"iterations": iters, "videos": a.videos}
    for t in TASKS:
        with stage(f"train {t.key} ({iters[t.key]} iterations, Caffe, tools.train)"):
            results[t.key] = {"train": train_net(out, t.key, nets[t.key][2], log, a.quiet)}
    true_flow = dict(np.load(raw / "ucf_true_flow.npz"))
    true_flow = {k.replace("__", "/"): v for k, v in true_flow.items()}
    for t in TASKS:
        with stage(f"evaluate {t.key}: baselines, pictures" + (", speed, ONNX" if "flow" in t.key else "")):
            results[t.key].update(evaluate_task(out, db, t, nets[t.key],
                                                Path(results[t.key]["train"]["weights"]), true_flow))
    with stage("report"):
        results["seconds"] = dict(stage.seconds, total=round(time.time() - stage.t0, 1))
        text = rep.report(results, CLIP, FRAME, CLASSES)
        (out / "README.md").write_text(text)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if not a.quiet:
        print(text)
        print(f"\n[demo] done in {time.time() - stage.t0:.0f} s: report, curves and pictures in {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
