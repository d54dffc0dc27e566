"""The demo's measurements beyond tools.evaluate, its pictures and its README.

- ``predictions``: every test clip of a demo net through Caffe's deploy net, with the
  inputs, the database's target (GATECH labels, Brox teacher flow, RGB) and, for flow, the
  true synthetic flow of the same voxels;
- ``majority_scores``, ``flow_scores``, ``color_scores``: V2V and the baselines (the
  majority class; zero flow and the training mean flow, against both truths; the gray
  frame as RGB and the training set's mean colour per luma);
- ``picture_rows``: per task one row per test clip, input | truth | (teacher) | V2V, as a
  PNG (middle frame) and a GIF over the clip's frames;
- ``speed``: V2V's inference (Caffe deploy net, this CPU) against the Brox teacher on the
  same frames, the paper's speed claim measured here;
- ``report``: runs/demo/README.md.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from data_prep.clips import gray
from data_prep.db import ClipDB
from models import metrics


def predictions(net, train_val: Path, true_flow: dict | None = None) -> list[dict]:
    """[{frames (3,L,h,w) uint8, x, y, pred[, truth]}] for every test clip, centre crops,
    through ``net`` (a tools.evaluate.DeployNet)."""
    from tools.evaluate import eval_source, test_data_params
    src = eval_source(test_data_params(train_val), "release")
    out = []
    for j in range(src.n):
        x, y = src.clip(j)
        item = {"frames": src.frames(j), "x": x, "y": y, "pred": net(x)}
        if true_flow is not None:
            rec, t0 = src.db.info(j // src.sub), (j % src.sub) * src.length
            f = true_flow[rec["item"]][rec["start"] + t0:rec["start"] + t0 + src.length]
            y0, x0 = src.prep.centre
            item["truth"] = f.transpose(3, 0, 1, 2)[:, :, y0:y0 + src.ch, x0:x0 + src.cw]
        out.append(item)
    return out


def majority_scores(preds, train_db: Path, classes: int) -> dict:
    """The training set's most frequent class, predicted everywhere: pixel accuracy (%)."""
    tr = ClipDB(train_db)
    hist = np.zeros(256, np.int64)
    for i in range(len(tr)):
        hist += np.bincount(tr[i]["label"].ravel(), minlength=256)
    hist[255] = 0
    major = int(hist.argmax())
    conf = metrics.Confusion(classes)
    for p in preds:
        conf.add(p["y"][0].astype(np.int64), np.full(p["y"][0].shape, major))
    return {"majority_class": major, "majority_pixel_accuracy": 100 * conf.pixel_accuracy()}


def mean_epe(preds, target: str, of=lambda p: p["pred"]) -> float:
    s = n = 0.0
    for p in preds:
        a, b = metrics.epe_sum(np.broadcast_to(of(p), p[target].shape), p[target])
        s, n = s + a, n + b
    return s / n


def train_mean_flow(train_db: Path) -> np.ndarray:
    db = ClipDB(train_db)
    return np.mean([db[i]["flow"].astype(np.float64).mean(axis=(1, 2, 3)) for i in range(len(db))], 0)


def flow_scores(preds, train_db: Path) -> dict:
    """EPE of V2V, zero flow and the training mean flow, against the Brox teacher ("y")
    and against the true synthetic flow ("truth")."""
    mean = train_mean_flow(train_db)[:, None, None, None]
    out = {"train_mean_flow": mean.ravel().tolist()}
    for target in ("y", "truth"):
        name = "teacher" if target == "y" else "truth"
        out[f"v2v_vs_{name}"] = mean_epe(preds, target)
        out[f"zero_vs_{name}"] = mean_epe(preds, target, lambda p: np.zeros_like(p["y"]))
        out[f"mean_vs_{name}"] = mean_epe(preds, target, lambda p: mean)
    return out


def luma_colour_table(train_db: Path) -> np.ndarray:
    """(256, 3) the training set's mean RGB in [0,1] per luma value (the input's gray level);
    luma values never seen take the overall mean colour."""
    db = ClipDB(train_db)
    s, n = np.zeros((256, 3)), np.zeros(256)
    for i in range(len(db)):
        fr = db[i]["frames"]
        f, g = fr.reshape(3, -1).astype(np.float64), luma_index(fr).ravel()
        for c in range(3):
            s[:, c] += np.bincount(g, f[c], minlength=256)
        n += np.bincount(g, minlength=256)
    mean = s.sum(0) / n.sum()
    return np.where(n[:, None] > 0, s / np.maximum(n, 1)[:, None], mean) / 255.0


def luma_index(frames: np.ndarray) -> np.ndarray:
    """The gray level 0..255 of every pixel of (3,L,h,w) uint8 RGB frames."""
    return np.clip(np.rint(gray(frames)), 0, 255).astype(int)


def color_scores(preds, train_db: Path) -> dict:
    """ADE (RGB in [0,1]) of V2V, the gray frame as RGB and the mean colour per luma."""
    table = luma_colour_table(train_db)

    def ade(of):
        s = n = 0.0
        for p in preds:
            a, b = metrics.ade_sum(of(p), p["y"])
            s, n = s + a, n + b
        return s / n
    gray_rgb = lambda p: np.repeat(gray(p["frames"])[None] / 255.0, 3, 0)  # noqa: E731
    by_luma = lambda p: table[luma_index(p["frames"])].transpose(3, 0, 1, 2)  # noqa: E731
    return {"v2v_ade": ade(lambda p: np.clip(p["pred"], 0, 1)), "gray_ade": ade(gray_rgb),
            "luma_mean_ade": ade(by_luma)}


def _panels(task: str, p: dict, t: int) -> tuple[list, list[str]]:
    from data_prep.flowviz import flow_to_color
    from tools import visualize as vz
    fr = p["frames"].transpose(1, 2, 3, 0)
    if task == "seg":
        return ([fr[t], vz.seg_overlay(fr[t], p["y"][0, t]), vz.seg_overlay(fr[t], p["pred"].argmax(0)[t])],
                ["input", "truth", "V2V"])
    if task == "flow":
        m = max(1.0, float(np.abs(p["truth"]).max()))
        fl = [flow_to_color(p[k][:, t].transpose(1, 2, 0), m) for k in ("truth", "y", "pred")]
        return [fr[t], *fl], ["input", "truth", "teacher", "V2V"]
    rgb = [np.clip(a[:, t].transpose(1, 2, 0), 0, 1) for a in (p["y"], p["pred"])]
    return [gray(p["frames"])[t], *rgb], ["gray", "truth", "V2V"]


def picture_rows(task: str, preds, out: Path) -> list[str]:
    """out/pictures.png (middle frame) and out/pictures.gif (all frames): one row per test
    clip, input | truth | (teacher) | V2V."""
    from tools import visualize as vz
    L = preds[0]["pred"].shape[1]

    def frame(t):
        rows = []
        for j, p in enumerate(preds):
            imgs, titles = _panels(task, p, t)
            rows.append(vz.labelled_row(imgs, titles if j == 0 else None, scale=3))
        return vz.grid(rows)
    png = vz.save_png(frame(L // 2), out / "pictures.png")
    gif = vz.save_gif([frame(t) for t in range(L)], out / "pictures.gif", fps=4)
    return [str(png), str(gif)]


def speed(net, preds, repeats: int = 2) -> dict:
    """Milliseconds per frame: V2V (``net``, a Caffe DeployNet on this CPU, one clip at a
    time) and the Brox teacher (data_prep.teacher, one frame pair at a time) on the same
    test clips (``preds`` ran the net once already: it is warm)."""
    from data_prep.teacher import brox_flow
    t0 = time.perf_counter()
    for _ in range(repeats):
        for p in preds:
            net(p["x"])
    frames = repeats * sum(p["x"].shape[1] for p in preds)
    v2v = 1000 * (time.perf_counter() - t0) / frames
    t0, pairs = time.perf_counter(), 0
    for p in preds:
        f = p["frames"].transpose(1, 2, 3, 0)
        for t in range(len(f) - 1):
            brox_flow(f[t], f[t + 1])
            pairs += 1
    brox = 1000 * (time.perf_counter() - t0) / pairs
    return {"v2v_ms_per_frame": v2v, "brox_ms_per_frame": brox, "speedup": brox / v2v,
            "frame_size": list(preds[0]["x"].shape[-2:])}


# What a full `make demo` must show (the test asserts looser margins on a shortened run).
FLOW_RATIO = 0.75        # V2V flow EPE <= 0.75 × the zero-flow EPE, against both truths
SEG_MARGIN = 10.0        # V2V pixel accuracy >= the majority class + 10 points


def checks(res: dict, flow_ratio: float = FLOW_RATIO) -> list[tuple[str, bool]]:
    """The demo's claims about V2V against the baselines: [(claim, held)]."""
    s, f, c = res["seg_v2v_0"], res["flow_v2v"]["scores"], res["color_v2v"]["scores"]
    out = [(f"segmentation: pixel accuracy ≥ majority class + {SEG_MARGIN:g} points",
            s["eval"]["pixel_accuracy"] >= s["scores"]["majority_pixel_accuracy"] + SEG_MARGIN)]
    for t in ("teacher", "truth"):
        out += [(f"flow vs {t}: EPE ≤ {flow_ratio:g} × zero flow", f[f"v2v_vs_{t}"] <= flow_ratio * f[f"zero_vs_{t}"]),
                (f"flow vs {t}: EPE < training mean flow", f[f"v2v_vs_{t}"] < f[f"mean_vs_{t}"])]
    out += [("colour: ADE < gray frame as RGB", c["v2v_ade"] < c["gray_ade"]),
            ("colour: ADE < mean colour per luma", c["v2v_ade"] < c["luma_mean_ade"])]
    return out


def baseline_rows(res: dict) -> list[str]:
    s, f, c = res["seg_v2v_0"], res["flow_v2v"]["scores"], res["color_v2v"]["scores"]
    acc, maj = s["eval"]["pixel_accuracy"], s["scores"]
    rows = ["| task | metric | V2V | baseline | baseline's value | V2V / baseline |", "|---|---|---|---|---|---|",
            f"| segmentation | pixel accuracy (%) | {acc:.1f} | majority class ({maj['majority_class']}) | "
            f"{maj['majority_pixel_accuracy']:.1f} | {acc / maj['majority_pixel_accuracy']:.2f} |"]
    for t, what in (("teacher", "Brox teacher's flow"), ("truth", "true synthetic flow")):
        for b, name in (("zero", "zero flow"), ("mean", "training mean flow")):
            v, bv = f[f"v2v_vs_{t}"], f[f"{b}_vs_{t}"]
            rows.append(f"| flow | EPE (px) against the {what} | {v:.3f} | {name} | {bv:.3f} | {v / bv:.2f} |")
    for b, name in (("gray_ade", "gray frame as RGB"), ("luma_mean_ade", "training mean colour per luma")):
        rows.append(f"| colour | ADE (RGB in [0,1]) | {c['v2v_ade']:.4f} | {name} | {c[b]:.4f} | "
                    f"{c['v2v_ade'] / c[b]:.2f} |")
    return rows


def picture_section(res: dict) -> list[str]:
    out = ["## Pictures (held-out test clips, one row each; PNG: middle frame, GIF: all frames)", ""]
    for key, title in (("seg_v2v_0", "Segmentation: input | truth | V2V"),
                       ("flow_v2v", "Flow: input | true flow | Brox teacher | V2V (colour wheel, same scale per row)"),
                       ("color_v2v", "Colorization: gray input | truth | V2V")):
        out += [f"### {title}", "", f"![{key}]({key}/pictures.png) ![{key} GIF]({key}/pictures.gif)", ""]
    out += ["## Training curves", ""] + [f"![{k}]({k}/curve.png)" for k in ("seg_v2v_0", "flow_v2v", "color_v2v")]
    return out + [""]


def speed_section(res: dict) -> list[str]:
    sp, ox = res["flow_v2v"]["speed"], res["flow_v2v"]["onnx"]
    h, w = sp["frame_size"]
    return ["## Speed: V2V against the Brox teacher (same frames, this CPU)", "",
            f"| flow method | ms per frame ({h}×{w}) |", "|---|---|",
            f"| V2V (Caffe deploy net, one {res['clip']} clip at a time) | {sp['v2v_ms_per_frame']:.1f} |",
            f"| Brox teacher (data_prep.teacher, one frame pair at a time) | {sp['brox_ms_per_frame']:.1f} |", "",
            f"Here V2V runs at {1000 / sp['v2v_ms_per_frame']:.0f} frames/s and the teacher at "
            f"{1000 / sp['brox_ms_per_frame']:.0f} (V2V / teacher time: {1 / sp['speedup']:.2f}). The "
            "paper's claim (91 frames/s against < 2 for Brox's method, 70×) is V2V on a Tesla K40 GPU "
            "at 112×112; on a CPU, on frames this small, a coarse-to-fine solver has little to do.", "",
            "## ONNX", "",
            f"The trained flow net was exported with `tools.export` to `{Path(ox['path']).name}` and one "
            f"test clip was run through onnxruntime: largest difference from Caffe's output "
            f"{ox['max_rel_diff_vs_caffe']:.1e} of its largest value.", ""]


def report(res: dict, clip, frame, classes: int) -> str:
    """runs/demo/README.md."""
    from tools.evaluate import tables
    L, H, W = clip
    res["clip"] = f"{L}×{H}×{W}"
    it = res["iterations"]
    sec = res["seconds"]
    lines = ["# V2V demo", "",
             f"Synthetic data ({res['videos']} training videos per dataset, frames {frame[0]}×{frame[1]}, "
             f"{classes} classes), clips {L}×{H}×{W} (centre crop for testing), full-width V2V trained "
             f"with real Caffe on the CPU: segmentation {it['seg_v2v_0']}, flow {it['flow_v2v']}, "
             f"colour {it['color_v2v']} iterations. Total time {sec['total']:.0f} s.", "",
             "## V2V against simple baselines (held-out test clips)", "", *baseline_rows(res), "",
             "| claim | held |", "|---|---|", *[f"| {c} | {'yes' if ok else '**no**'} |" for c, ok in checks(res)], "",
             "## Paper-shaped rows (tools.evaluate)", "",
             tables([res[k]["eval"] for k in ("seg_v2v_0", "flow_v2v", "color_v2v")]),
             *picture_section(res), *speed_section(res),
             "## Time per stage", "", "| stage | seconds |", "|---|---|",
             *[f"| {k} | {v:.0f} |" for k, v in sec.items()], "",
             "Nets and solvers: `nets/`. Log of every command: `demo.log`. All numbers: `results.json`."]
    return "\n".join(lines) + "\n"
