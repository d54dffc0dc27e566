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

from data_prep.clips import ClipSource, check_labels, parse_params
from models import cli, metrics, preflight, shapes, validate
from models.engine import caffe
from models.paths import PROTOTXT, RUNS, resolve_weights, user_path
from models.v2v import paper_value


class EvalError(ValueError):
    pass


def net_files(net_key=None, deploy=None, train_val=None) -> tuple[Path | None, Path | None]:
    """The deploy and train_val files of a net of prototxt/ (paths given explicitly win)."""
    if net_key:
        deploy = deploy or PROTOTXT / f"{net_key}_deploy.prototxt"
        train_val = train_val or PROTOTXT / f"{net_key}_train_val.prototxt"
    return (Path(deploy) if deploy else None), (Path(train_val) if train_val else None)


def test_data_params(train_val: Path) -> dict:
    """The TEST-phase ClipDataLayer parameters of a train_val net, checked and completed
    with the layer's defaults: how the test net's clips are prepared (evaluate, predict)."""
    net = validate.load_net(train_val)
    for layer in net.layer:
        if (layer.type == "Python" and layer.python_param.layer == "ClipDataLayer"
                and shapes.layer_in_phase(layer, "TEST")):
            try:
                return parse_params(layer.python_param.param_str)
            except ValueError as e:
                raise EvalError(f"{train_val}: layer '{layer.name}': {e}") from None
    raise EvalError(f"{train_val}: no TEST-phase ClipDataLayer to take the test data from")


def output_blob(net) -> str:
    for name in ("prob", "flow"):
        if name in net.outputs:
            return name
    return net.outputs[0]


def pad_to(x: np.ndarray, mult: int = 16) -> np.ndarray:
    """x (..., H, W) zero-padded at the bottom and right up to multiples of ``mult``."""
    h, w = x.shape[-2:]
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, -h % mult), (0, -w % mult)])


class DeployNet:
    """A trained deploy net run one clip at a time: input (C,L,H,W) → output (K,L,H,W).
    With ``pad`` (whole frames: protocol full, tools.predict) the prepared input is
    zero-padded up to multiples of 16 (V2V's size rule) and the padding is cropped from
    the output."""

    def __init__(self, deploy: Path, weights: Path, pad: bool = False, allow_missing=()):
        """``allow_missing``: layers of the net that may have no weights (run from fillers);
        any other layer missing from ``weights`` is an error."""
        validate.validate_weights(weights, validate.validate_net_file(deploy, "TEST"), deploy,
                                  missing_ok=set(allow_missing))
        preflight.net(deploy, "TEST", [weights])
        cf = caffe()
        self.net = cf.Net(str(deploy), str(weights), cf.TEST)
        self.deploy, self.pad = deploy, pad
        self.inp, self.out = self.net.inputs[0], output_blob(self.net)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        xp = pad_to(x) if self.pad else x
        validate.check_input_size(*xp.shape[1:], where=str(self.deploy))
        blob = self.net.blobs[self.inp]
        if xp.shape[0] != blob.data.shape[1]:
            raise validate.ValidationError(f"{self.deploy}: the net takes {blob.data.shape[1]} input "
                                           f"channel(s), the prepared clips have {xp.shape[0]}")
        if blob.data.shape != (1,) + xp.shape:
            blob.reshape(1, *xp.shape)
            self.net.reshape()
        blob.data[0] = xp
        self.net.forward()
        return self.net.blobs[self.out].data[0][..., :h, :w].copy()


def eval_source(params: dict, protocol: str) -> ClipSource:
    """The test clips in database order as the TEST data layer gives them (centre crop, no
    mirror; whole frames for protocol full), flow truth in pixels (deploy nets output pixels)."""
    p = dict(params, train=False, mirror=False, batch_size=1, prefetch=0)
    if p["task"] == "flow":
        p["flow_scale"] = 1.0
    if protocol == "full":
        p["crop"] = None
    try:
        return ClipSource(p)
    except ValueError as e:
        raise EvalError(str(e)) from None


def teacher_clip(frames: np.ndarray) -> np.ndarray:
    """Brox teacher flow (2,L-?,H,W) for frames (3,L,H,W) uint8 RGB: flow t→t+1 for all but
    the last frame (the clip has no frame after it)."""
    from data_prep.teacher import brox_flow
    f = frames.transpose(1, 2, 3, 0)
    return np.stack([brox_flow(f[t], f[t + 1]) for t in range(len(f) - 1)]).transpose(3, 0, 1, 2)


def clip_prediction(src: ClipSource, net: DeployNet | None, j: int):
    """(truth, prediction) of test clip j; net None scores the Brox teacher, whose flow
    covers all but the last frame."""
    x, y = src.clip(j)
    if net is None:
        return y[:, :-1], teacher_clip(src.frames(j))
    return y, net(x)


class Scores:
    """The task's metric summed over clips: seg confusion, flow EPE, colour ADE."""

    def __init__(self, task: str, classes: int):
        self.task = task
        self.conf = metrics.Confusion(classes)
        self.err_sum, self.err_n = 0.0, 0

    def add(self, y: np.ndarray, pred: np.ndarray) -> None:
        if self.task == "seg":
            self.conf.add(y[0], pred.argmax(0))
            return
        s, c = (metrics.epe_sum if self.task == "flow" else metrics.ade_sum)(pred, y)
        self.err_sum, self.err_n = self.err_sum + s, self.err_n + c

    def result(self) -> dict:
        if self.task == "seg":
            conf = self.conf
            per_class = [None if np.isnan(a) else 100 * a for a in conf.per_class_accuracy()]
            return dict(pixel_accuracy=100 * conf.pixel_accuracy(), mean_iou=100 * conf.mean_iou(),
                        per_class_accuracy=per_class, scored_voxels=conf.scored)
        if self.task == "flow":
            return dict(epe=self.err_sum / max(self.err_n, 1), pixels=self.err_n)
        return dict(ade=self.err_sum / max(self.err_n, 1), voxels=self.err_n)


def _eval_params(deploy, train_val, weights, db, teacher) -> dict:
    """The arguments checked; the test data parameters (``db`` replaces the train_val's)."""
    if not deploy or not train_val:
        raise EvalError("give --net, or both --deploy and --train-val")
    if weights is None and not teacher:
        raise EvalError("give --weights (a trained caffemodel), or --teacher to score the Brox teacher")
    params = test_data_params(train_val)
    if teacher and params["task"] != "flow":
        raise EvalError("--teacher scores the flow teacher: use it with a flow net / database")
    if db:
        params["db"] = str(user_path(db))
    return params


def run_name(name: str, db) -> str:
    """The output folder's name: the net (or brox_teacher), and the database when --db
    names another than the net's own (runs/eval/flow_v2v_sintel_final)."""
    if not db:
        return name
    db = user_path(db)
    return f"{name}_{db.parent.name}_{db.name}"


def _paper(name: str, task: str, db_path: Path) -> dict:
    """The paper's number for the row (and, for flow, which truth it is measured against)."""
    if task != "flow":
        return {"paper": paper_value(name)}
    dsname = "sintel" if "sintel" in str(db_path) else "ucf101"
    truth = "ground truth (Sintel)" if dsname == "sintel" else "Brox semi-truth (teacher)"
    return {"truth": truth, "paper": paper_value(name, dsname)}


def evaluate(net_key=None, weights=None, deploy=None, train_val=None, db=None, protocol="release",
             clips=None, out=None, teacher=False, pictures=4, quiet=False, k=None, allow_missing=()) -> dict:
    """Score a trained net (or, with ``teacher``, the Brox teacher) on the first ``clips``
    clips of its test database; write results.json, results.md and pictures to ``out``."""
    deploy, train_val = net_files(net_key, deploy, train_val)
    params = _eval_params(deploy, train_val, weights, db, teacher)
    name = "brox_teacher" if teacher else (net_key or deploy.stem.replace("_deploy", ""))
    out = Path(out) if out else RUNS / "eval" / run_name(name, db)
    out.mkdir(parents=True, exist_ok=True)
    src = eval_source(params, protocol)
    weights = None if teacher else resolve_weights(weights)
    net = None if teacher else DeployNet(deploy, weights, pad=protocol == "full", allow_missing=allow_missing)
    n = src.n if clips is None else min(clips, src.n)
    scores = Scores(params["task"], k or (net.net.blobs[net.out].data.shape[1] if net else 1))
    if params["task"] == "seg":   # class ids the net does not predict would go unscored
        check_labels(src.db, scores.conf.k, scores.conf.ignore, deploy)
    pics, t0 = [], time.time()
    from tqdm import tqdm
    for j in tqdm(range(n), desc=f"evaluate {name}", disable=quiet or not sys.stderr.isatty()):
        y, pred = clip_prediction(src, net, j)
        scores.add(y, pred)
        if len(pics) < pictures:
            pics.append((j, y, pred))
    res = {"net": name, "task": params["task"], "protocol": protocol, "db": str(src.db_path),
           "clips": n, "weights": str(weights) if weights else None, "deploy": str(deploy),
           "seconds": round(time.time() - t0, 1), **scores.result(),
           **_paper(name, params["task"], src.db_path)}
    with cli.writing(out):
        res["pictures"] = draw(pics, src, out)
        (out / "results.json").write_text(json.dumps(res, indent=2))
        (out / "results.md").write_text(row_markdown(res) + "\n")
    return res


def _panels(task: str, fr, y, pred, t: int) -> tuple[list, list[str]]:
    """The pictures of frame t of a drawn clip, with their titles."""
    from data_prep.flowviz import flow_to_color
    from tools import visualize as vz
    if task == "seg":
        return [fr[t], vz.seg_overlay(fr[t], y[0, t]), vz.seg_overlay(fr[t], pred.argmax(0)[t])], \
            ["frame", "truth", "V2V"]
    if task == "flow":
        m = max(1.0, float(np.abs(y[:, t]).max()))
        return [fr[t], flow_to_color(y[:, t].transpose(1, 2, 0), m),
                flow_to_color(pred[:, t].transpose(1, 2, 0), m)], ["frame", "truth", "prediction"]
    return [fr[t].mean(-1), np.clip(pred[:, t].transpose(1, 2, 0), 0, 1), y[:, t].transpose(1, 2, 0)], \
        ["gray input", "V2V colour", "truth"]


def _gif_frame(task: str, fr, y, pred, t: int):
    from data_prep.flowviz import flow_to_color
    from tools import visualize as vz
    if task == "seg":
        return vz.labelled_row([vz.seg_overlay(fr[t], y[0, t]), vz.seg_overlay(fr[t], pred.argmax(0)[t])])
    if task == "flow":
        m = max(1.0, float(np.abs(y).max()))
        return vz.labelled_row([fr[t], flow_to_color(pred[:, t].transpose(1, 2, 0), m)])
    return vz.labelled_row([fr[t].mean(-1), np.clip(pred[:, t].transpose(1, 2, 0), 0, 1)])


def draw(pics, src: ClipSource, out: Path) -> list[str]:
    """A PNG (three frames: input, truth, prediction) and a GIF per drawn clip."""
    from tools import visualize as vz
    task, paths = src.p["task"], []
    for j, y, pred in pics:
        fr = src.frames(j).transpose(1, 2, 3, 0)  # (L,h,w,3) RGB
        steps, scale = min(len(fr), pred.shape[1]), 2 if fr.shape[2] < 100 else 1
        rows = []
        for t in sorted({0, len(fr) // 2, steps - 1}):
            imgs, titles = _panels(task, fr, y, pred, t)
            rows.append(vz.labelled_row(imgs, [f"{s} t={t}" for s in titles], scale=scale))
        paths.append(str(vz.save_png(vz.grid(rows), out / f"clip{j:04d}.png")))
        paths.append(str(vz.save_gif([_gif_frame(task, fr, y, pred, t) for t in range(steps)],
                                     out / f"clip{j:04d}.gif")))
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
    "seg": "| net | paper pixel acc. (%) | ours pixel acc. (%) | ours mean IoU (%) | clips | protocol |\n"
           "|---|---|---|---|---|---|",
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


def add_allow_missing(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--allow-missing", default="", metavar="LAYER[,LAYER]",
                    type=lambda v: tuple(x for x in v.split(",") if x),
                    help="layers of the net that may have no weights in --weights (they run from their "
                         "fillers); any other missing layer is an error")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", help="net name in prototxt/ (e.g. seg_v2v, flow_v2v, color_v2v)")
    ap.add_argument("--weights", type=Path,
                    help="trained caffemodel, or a run folder (runs/<net>: its newest snapshot)")
    ap.add_argument("--deploy", type=Path)
    ap.add_argument("--train-val", type=Path)
    ap.add_argument("--db", type=Path, help="test database (default: the train_val TEST data layer's)")
    ap.add_argument("--protocol", choices=("release", "full"), default="release")
    ap.add_argument("--clips", type=cli.positive_int, help="score only the first N clips")
    ap.add_argument("--teacher", action="store_true", help="score the Brox teacher instead of a net (flow)")
    ap.add_argument("--out", type=Path, help="output folder (default runs/eval/<net>[_<db>])")
    ap.add_argument("--pictures", type=int, default=4, help="clips to draw")
    ap.add_argument("--tables", nargs="*", type=Path, metavar="RESULTS_JSON",
                    help="only print the paper-shaped tables of these results.json files "
                         "(none named: every runs/eval/*/results.json)")
    add_allow_missing(ap)
    a = ap.parse_args(argv)
    if a.tables is not None:
        return print_tables(a.tables)
    try:
        r = evaluate(a.net, a.weights, a.deploy, a.train_val, a.db, a.protocol, a.clips, a.out,
                     a.teacher, a.pictures, allow_missing=a.allow_missing)
    except ValueError as e:  # EvalError, ValidationError, a run folder without snapshots
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(tables([r]))
    return 0


def print_tables(files: list[Path]) -> int:
    files = files or sorted((RUNS / "eval").glob("*/results.json"))
    if not files:
        print(f"error: no results to tabulate in {RUNS / 'eval'}: run python -m tools.evaluate first",
              file=sys.stderr)
        return 2
    try:
        results = [read_results(p) for p in files]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(tables(results))
    return 0


def read_results(path: Path) -> dict:
    """One results.json of tools.evaluate, or a ValueError naming the file."""
    try:
        r = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(r, dict) or "task" not in r:
        raise ValueError(f"{path}: not a results.json of tools.evaluate (no 'task')")
    return r


if __name__ == "__main__":
    cli.run(main)
