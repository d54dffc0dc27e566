"""Evaluate a trained net with the paper's metrics; write a table row, JSON and pictures.

    python -m tools.evaluate --net seg_v2v --weights runs/seg_v2v/snapshots/seg_v2v_iter_100000.caffemodel
    python -m tools.evaluate --net flow_v2v --weights W.caffemodel --db data/db/sintel/clean
    python -m tools.evaluate --net flow_v2v --teacher --db data/db/sintel/clean   # the Brox row

``--net`` is a net of prototxt/ (e.g. seg_v2v, flow_v2v, color_v2v): its deploy file is
run, and its train_val file's TEST data layer says how clips are prepared (centre crop,
mean, channel order), so evaluation sees exactly what the test net sees. Or give
``--deploy`` and ``--train-val`` paths yourself.

Protocols (the one used is written into every result):
- ``release`` (default): every clip of the test database (non-overlapping 16-frame clips of
  frames at 128×171), centre 112×112 crop; frames left over at a video's end are not in the
  database and not scored; segmentation void (255) excluded.
- ``full``: whole frames, zero-padded (after mean subtraction) up to multiples of 16, the
  padding cropped from the output before scoring.

Metrics: segmentation pixel accuracy (+ per-class accuracy, mean IoU); flow EPE in pixels
(deploy nets output pixels; evaluation never rescales) against the database's flow — Brox
semi-truth for UCF101 databases, ground truth for Sintel; colour ADE on RGB in [0,1].
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from models import metrics, validate
from models.engine import caffe
from models.paths import PROTOTXT, RUNS

# The paper's numbers, for the tables: seg pixel accuracy (%), flow EPE by test set
# (UCF101 against Brox, Sintel against ground truth), colour ADE.
PAPER = {
    "seg_v2v": 76.0, "seg_v2v_0": 66.7, "seg_v2v_remove_skip": 74.7,
    "seg_v2v_remove_skip_0": 60.8, "seg_conv3b_up": 69.7, "seg_conv4b_up": 72.7,
    "seg_conv5b_up": 72.1, "seg_2d_v2v": 55.7,
    "flow_v2v": {"ucf101": 1.24, "sintel": 8.86}, "brox_teacher": {"sintel": 8.89},
    "color_v2v": 0.1375, "color_2d_v2v": 0.1495,
}


def paper_value(name: str, dataset: str | None = None):
    v = PAPER.get(name)
    return v.get(dataset) if isinstance(v, dict) else v


class EvalError(ValueError):
    pass


def test_data_params(train_val: Path) -> dict:
    """The TEST-phase ClipDataLayer parameters of a train_val net."""
    net = validate.load_net(train_val)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.layer == "ClipDataLayer":
            phases = [r.phase for r in layer.include]
            if not phases or 1 in phases:  # TEST
                return json.loads(layer.python_param.param_str)
    raise EvalError(f"{train_val}: no TEST-phase ClipDataLayer to take the test data from")


def output_blob(net) -> str:
    for name in ("prob", "flow"):
        if name in net.outputs:
            return name
    return net.outputs[0]


def pad_to(x: np.ndarray, mult: int = 16):
    h, w = x.shape[-2:]
    H, W = -(-h // mult) * mult, -(-w // mult) * mult
    if (H, W) == (h, w):
        return x, (h, w)
    pad = [(0, 0)] * (x.ndim - 2) + [(0, H - h), (0, W - w)]
    return np.pad(x, pad), (h, w)


class Evaluator:
    def __init__(self, deploy: Path, weights: Path | None, params: dict, protocol: str):
        self.deploy, self.protocol = deploy, protocol
        self.task = params["task"]
        p = dict(params, train=False, mirror=False, batch_size=1, prefetch=0)
        if self.task == "flow":
            p["flow_scale"] = 1.0  # truth in pixels; the deploy net outputs pixels
        if protocol == "full":
            p["crop"] = None
        from data_prep.clips import ClipSource  # noqa: PLC0415
        try:
            self.src = ClipSource(p)
        except ValueError as e:
            raise EvalError(str(e)) from None
        self.params = p
        if weights is not None:
            validate.validate_weights(weights, validate.load_net(deploy), deploy)
        cf = caffe()
        self.net = cf.Net(str(deploy), str(weights), cf.TEST) if weights else None
        self.out = output_blob(self.net) if self.net else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x (C,L,H,W) → net output (K,L,H,W) for one clip (padding for protocol full)."""
        xp, (h, w) = pad_to(x) if self.protocol == "full" else (x, x.shape[-2:])
        validate.check_input_size(*xp.shape[1:], where=str(self.deploy))
        blob = self.net.blobs[self.net.inputs[0]]
        if blob.data.shape != (1,) + xp.shape:
            blob.reshape(1, *xp.shape)
            self.net.reshape()
        blob.data[0] = xp
        self.net.forward()
        return self.net.blobs[self.out].data[0][..., :h, :w].copy()


def teacher_clip(frames: np.ndarray) -> np.ndarray:
    """Brox teacher flow (2,L-?,H,W) for frames (3,L,H,W) uint8 RGB: flow t→t+1 for all but
    the last frame (the clip has no frame after it)."""
    from data_prep.teacher import brox_flow  # noqa: PLC0415
    f = frames.transpose(1, 2, 3, 0)
    return np.stack([brox_flow(f[t], f[t + 1]) for t in range(len(f) - 1)]).transpose(3, 0, 1, 2)


def evaluate(net_key=None, weights=None, deploy=None, train_val=None, db=None, protocol="release",
             clips=None, out=None, teacher=False, pictures=4, quiet=False, k=None) -> dict:
    if net_key:
        deploy = deploy or PROTOTXT / f"{net_key}_deploy.prototxt"
        train_val = train_val or PROTOTXT / f"{net_key}_train_val.prototxt"
    if not deploy or not train_val:
        raise EvalError("give --net, or both --deploy and --train-val")
    deploy, train_val = Path(deploy), Path(train_val)
    validate.validate_net_file(deploy, "TEST")
    params = test_data_params(train_val)
    if db:
        params["db"] = str(Path(db).resolve())
    if weights is None and not teacher:
        raise EvalError("give --weights (a trained caffemodel), or --teacher to score the Brox teacher")
    if teacher and params["task"] != "flow":
        raise EvalError("--teacher scores the flow teacher: use it with a flow net / database")
    name = net_key or deploy.stem.replace("_deploy", "")
    if teacher:
        name = "brox_teacher"
    out = Path(out) if out else RUNS / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    ev = Evaluator(deploy, None if teacher else Path(weights), params, protocol)
    n = ev.src.n if clips is None else min(clips, ev.src.n)
    from tqdm import tqdm  # noqa: PLC0415
    K = k or (ev.net.blobs[ev.out].data.shape[1] if ev.net else 1)
    conf = metrics.Confusion(K)
    err_sum, err_n = 0.0, 0
    pics = []
    t0 = time.time()
    for j in tqdm(range(n), desc=f"evaluate {name}", disable=quiet or not sys.stderr.isatty()):
        x, y = ev.src.clip(j, None)
        if teacher:
            rec = ev.src.db[j // ev.src.sub]
            t_start = (j % ev.src.sub) * ev.src.length
            frames = rec["frames"][:, t_start:t_start + ev.src.length]
            y0, x0 = (ev.src.h - ev.src.ch) // 2, (ev.src.w - ev.src.cw) // 2
            frames = frames[:, :, y0:y0 + ev.src.ch, x0:x0 + ev.src.cw]
            pred = teacher_clip(frames)
            y = y[:, :-1]
        else:
            pred = ev.predict(x)
        if ev.task == "seg":
            conf.add(y[0], pred.argmax(0))
        elif ev.task == "flow":
            s, c = metrics.epe_sum(pred, y)
            err_sum, err_n = err_sum + s, err_n + c
        else:
            s, c = metrics.ade_sum(pred, y)
            err_sum, err_n = err_sum + s, err_n + c
        if len(pics) < pictures:
            pics.append((j, x, y, pred))
    res = {"net": name, "task": ev.task, "protocol": protocol, "db": str(ev.src.db_path),
           "clips": n, "weights": str(weights) if weights else None, "deploy": str(deploy),
           "seconds": round(time.time() - t0, 1)}
    if ev.task == "seg":
        res.update(pixel_accuracy=100 * conf.pixel_accuracy(), mean_iou=100 * conf.mean_iou(),
                   per_class_accuracy=[None if np.isnan(a) else 100 * a for a in conf.per_class_accuracy()],
                   scored_voxels=conf.scored, paper=paper_value(name))
    elif ev.task == "flow":
        res.update(epe=err_sum / max(err_n, 1), pixels=err_n)
        dsname = "sintel" if "sintel" in str(ev.src.db_path) else "ucf101"
        res["truth"] = "ground truth (Sintel)" if dsname == "sintel" else "Brox semi-truth (teacher)"
        res["paper"] = paper_value(name, dsname)
    else:
        res.update(ade=err_sum / max(err_n, 1), voxels=err_n, paper=paper_value(name))
    res["pictures"] = draw(pics, ev, out)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(row_markdown(res) + "\n")
    return res


def draw(pics, ev, out: Path) -> list[str]:
    from data_prep.flowviz import flow_to_color  # noqa: PLC0415
    from tools import visualize as vz  # noqa: PLC0415
    paths = []
    for j, x, y, pred in pics:
        rec = ev.src.db[j // ev.src.sub]
        t_start = (j % ev.src.sub) * ev.src.length
        fr = rec["frames"][:, t_start:t_start + ev.src.length]
        h, w = y.shape[-2:]
        y0, x0 = (ev.src.h - h) // 2, (ev.src.w - w) // 2
        fr = fr[:, :, y0:y0 + h, x0:x0 + w].transpose(1, 2, 3, 0)  # (L,h,w,3) RGB
        rows, gif = [], []
        for t in sorted({0, len(fr) // 2, min(len(fr), pred.shape[1]) - 1}):
            if ev.task == "seg":
                p = pred.argmax(0)[t]
                imgs = [fr[t], vz.seg_overlay(fr[t], y[0, t]), vz.seg_overlay(fr[t], p)]
                titles = ["frame", "truth", "V2V"]
            elif ev.task == "flow":
                m = max(1.0, float(np.abs(y[:, t]).max()))
                imgs = [fr[t], flow_to_color(y[:, t].transpose(1, 2, 0), m),
                        flow_to_color(pred[:, t].transpose(1, 2, 0), m)]
                titles = ["frame", "truth", "prediction"]
            else:
                imgs = [fr[t].mean(-1), np.clip(pred[:, t].transpose(1, 2, 0), 0, 1), y[:, t].transpose(1, 2, 0)]
                titles = ["gray input", "V2V colour", "truth"]
            rows.append(vz.labelled_row(imgs, [f"{s} t={t}" for s in titles], scale=2 if w < 100 else 1))
        for t in range(min(len(fr), pred.shape[1])):
            if ev.task == "seg":
                gif.append(vz.labelled_row([vz.seg_overlay(fr[t], y[0, t]), vz.seg_overlay(fr[t], pred.argmax(0)[t])]))
            elif ev.task == "flow":
                m = max(1.0, float(np.abs(y).max()))
                gif.append(vz.labelled_row([fr[t], flow_to_color(pred[:, t].transpose(1, 2, 0), m)]))
            else:
                gif.append(vz.labelled_row([fr[t].mean(-1), np.clip(pred[:, t].transpose(1, 2, 0), 0, 1)]))
        paths.append(str(vz.save_png(vz.grid(rows), out / f"clip{j:04d}.png")))
        paths.append(str(vz.save_gif(gif, out / f"clip{j:04d}.gif")))
    return paths


def row_markdown(r: dict) -> str:
    if r["task"] == "seg":
        paper = f"{r['paper']:.1f}" if r.get("paper") else "–"
        return (f"| {r['net']} | {paper} | {r['pixel_accuracy']:.1f} | {r['mean_iou']:.1f} | "
                f"{r['clips']} | {r['protocol']} |")
    if r["task"] == "flow":
        paper = f"{r['paper']:.2f}" if r.get("paper") else "–"
        return f"| {r['net']} | {paper} | {r['epe']:.3f} | {r['truth']} | {r['clips']} | {r['protocol']} |"
    paper = f"{r['paper']:.4f}" if r.get("paper") else "–"
    return f"| {r['net']} | {paper} | {r['ade']:.4f} | {r['clips']} | {r['protocol']} |"


HEADERS = {
    "seg": "| net | paper pixel acc. (%) | ours pixel acc. (%) | ours mean IoU (%) | clips | protocol |\n|---|---|---|---|---|---|",
    "flow": "| net | paper EPE | ours EPE (px) | against | clips | protocol |\n|---|---|---|---|---|---|",
    "color": "| net | paper ADE | ours ADE | clips | protocol |\n|---|---|---|---|---|",
}


def tables(results: list[dict]) -> str:
    """Markdown tables shaped like the paper's Table 1 (seg), Table 2 (flow) and the ADE
    comparison (colour), from results.json dicts."""
    out = []
    titles = {"seg": "Table 1 — segmentation (GATECH protocol)", "flow": "Table 2 — optical flow",
              "color": "Colorization — ADE"}
    for task in ("seg", "flow", "color"):
        rows = [r for r in results if r["task"] == task]
        if rows:
            out += [f"### {titles[task]}", "", HEADERS[task]] + [row_markdown(r) for r in rows] + [""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", help="net name in prototxt/ (e.g. seg_v2v, flow_v2v, color_v2v)")
    ap.add_argument("--weights", type=Path, help="trained caffemodel")
    ap.add_argument("--deploy", type=Path)
    ap.add_argument("--train-val", type=Path)
    ap.add_argument("--db", type=Path, help="test database (default: the train_val TEST data layer's)")
    ap.add_argument("--protocol", choices=("release", "full"), default="release")
    ap.add_argument("--clips", type=int, help="score only the first N clips")
    ap.add_argument("--teacher", action="store_true", help="score the Brox teacher instead of a net (flow)")
    ap.add_argument("--out", type=Path, help="output folder (default runs/eval/<net>)")
    ap.add_argument("--pictures", type=int, default=4, help="clips to draw")
    ap.add_argument("--tables", nargs="+", type=Path, metavar="RESULTS_JSON",
                    help="only print the paper-shaped tables of these results.json files")
    a = ap.parse_args(argv)
    if a.tables:
        print(tables([json.loads(p.read_text()) for p in a.tables]))
        return 0
    try:
        r = evaluate(a.net, a.weights, a.deploy, a.train_val, a.db, a.protocol, a.clips, a.out,
                     a.teacher, a.pictures)
    except (EvalError, validate.ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(tables([r]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
