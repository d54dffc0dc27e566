"""Run a trained deploy net over any video (or a folder of frames) with sliding clips.

    python -m tools.predict --net flow_v2v --weights W.caffemodel --video clip.avi --out runs/predict/clip
    python -m tools.predict --net seg_v2v --weights W.caffemodel --frames my_frames/ \\
        --mean data/c3d/sport1m_train16_128_mean.npy

Frames are resized to 128×171 (C3D's size, ``--size``), cut into clips of ``--length``
(16) frames every ``--stride`` frames (default: the length; a last clip is aligned to the
video's end so every frame gets a prediction), prepared exactly as the net's test data
(data_prep.clips.ClipPrep with the train_val TEST data layer's mean, channel order and
scale, on whole frames; a per-voxel mean must have the clip length and cover the frames,
as in the data layer), zero-padded to multiples of 16 and run through the deploy net.
Outputs in ``--out``:

- flow: ``flow/%06d.flo`` (Middlebury .flo, pixels, frame t → t+1) and ``flow/%06d.png``
  colour wheels;
- segmentation: ``labels/%06d.png`` (class ids) and ``overlay/%06d.png``;
- colour: ``color/%06d.png``;
- ``preview.gif`` of input and prediction side by side.
Where clips overlap, later clips overwrite earlier ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data_prep.clips import ClipPrep, complete_params
from models import cli, validate
from models.paths import RUNS, resolve_weights, user_path
from tools.evaluate import DeployNet, add_allow_missing, net_files, test_data_params


class PredictError(ValueError):
    pass


def load_frames(video=None, frames=None, size=(128, 171)) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB at ``size``."""
    h, w = size
    if video:
        from data_prep.video import decode_video
        return decode_video(video, h, w)
    d = Path(frames)
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")) \
        if d.is_dir() else []
    if not files:
        raise PredictError(f"{d}: no .png/.jpg frames found")
    from PIL import Image
    out = []
    for f in files:
        try:
            out.append(np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)))
        except OSError as e:
            raise PredictError(f"{f}: cannot read the image ({e})") from None
    return np.stack(out)


def clip_starts(T: int, length: int, stride: int) -> list[int]:
    if T < length:
        raise PredictError(f"the video has {T} frames; a clip needs {length}")
    starts = list(range(0, T - length + 1, stride))
    if starts[-1] + length < T:
        starts.append(T - length)
    return starts


def clip_prep(net: DeployNet, train_val: Path | None, mean: str | None, length: int, size) -> ClipPrep:
    """How clips are prepared: as the train_val's TEST data layer (its task, mean, channel
    order, scale) on whole frames, or with the layer's defaults for the task of the net's
    output when there is no train_val; ``mean`` overrides the mean ('' for none)."""
    if train_val and train_val.exists():
        params = test_data_params(train_val)
    else:
        params = complete_params({"task": {"prob": "seg", "flow": "flow"}.get(net.out, "color")})
    if mean is not None:
        params["mean"] = str(user_path(mean)) if mean else None
    return ClipPrep(params, length, size)


def run_clips(net: DeployNet, prep: ClipPrep, vids: np.ndarray, starts: list[int]) -> list:
    """Each frame's prediction (K, H, W); where clips overlap, later clips win."""
    from tqdm import tqdm
    result = [None] * len(vids)
    L = prep.length
    for s in tqdm(starts, desc="predict", disable=not sys.stderr.isatty()):
        frames = np.ascontiguousarray(vids[s:s + L].transpose(3, 0, 1, 2))  # (3, L, H, W)
        result[s:s + L] = list(net(prep.input(frames, 0, 0)).transpose(1, 0, 2, 3))
    return result


def predict(net_key=None, weights=None, deploy=None, train_val=None, video=None, frames=None,
            out=None, length=16, stride=None, size=(128, 171), mean=None, fps=8, allow_missing=()) -> Path:
    """Predict every frame of a video (or a folder of frames) with sliding clips; write the
    outputs to ``out`` (see the module docstring) and return it."""
    deploy, train_val = net_files(net_key, deploy, train_val)
    if not deploy:
        raise PredictError("give --net or --deploy")
    if not weights:
        raise PredictError("give --weights (a trained caffemodel)")
    if bool(video) == bool(frames):
        raise PredictError("give exactly one of --video and --frames")
    net = DeployNet(deploy, resolve_weights(weights), pad=True, allow_missing=allow_missing)
    prep = clip_prep(net, train_val, mean, length, size)
    vids = load_frames(video, frames, size)
    result = run_clips(net, prep, vids, clip_starts(len(vids), length, stride or length))
    out = Path(out) if out else RUNS / "predict" / Path(video or frames).stem
    with cli.writing(out):
        write_outputs(out, prep.task, vids, result, fps)
    return out


def write_outputs(out: Path, task: str, vids, result, fps: int) -> None:
    from data_prep.flo import write_flo
    from data_prep.flowviz import flow_to_color
    from tools import visualize as vz
    out.mkdir(parents=True, exist_ok=True)
    for sub in {"flow": ["flow"], "seg": ["labels", "overlay"]}.get(task, ["color"]):
        (out / sub).mkdir(exist_ok=True)
    gif = []
    m = max(1.0, max(float(np.abs(r).max()) for r in result)) if task == "flow" else None
    for t, (frame, y) in enumerate(zip(vids, result)):
        if task == "flow":
            f = y.transpose(1, 2, 0)
            write_flo(out / "flow" / f"{t:06d}.flo", f)
            pic = flow_to_color(f, m)
            vz.save_png(pic, out / "flow" / f"{t:06d}.png")
        elif task == "seg":
            lab = y.argmax(0).astype(np.uint8)
            from PIL import Image
            Image.fromarray(lab).save(out / "labels" / f"{t:06d}.png")
            pic = vz.seg_overlay(frame, lab)
            vz.save_png(pic, out / "overlay" / f"{t:06d}.png")
        else:
            pic = np.clip(y.transpose(1, 2, 0), 0, 1)
            vz.save_png(pic, out / "color" / f"{t:06d}.png")
        gif.append(vz.labelled_row([frame, pic]))
    vz.save_gif(gif, out / "preview.gif", fps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", help="net name in prototxt/ (flow_v2v, seg_v2v, color_v2v, ...)")
    ap.add_argument("--deploy", type=Path)
    ap.add_argument("--train-val", type=Path, help="where the input preparation is read from")
    ap.add_argument("--weights", type=Path, required=True,
                    help="trained caffemodel, or a run folder (its newest snapshot)")
    ap.add_argument("--video", type=Path)
    ap.add_argument("--frames", type=Path, help="a folder of .png/.jpg frames (sorted by name)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--length", type=cli.positive_int, default=16)
    ap.add_argument("--stride", type=cli.positive_int)
    ap.add_argument("--size", default="128x171", help="HxW frames are resized to")
    ap.add_argument("--mean", help="override the mean (.npy); '' for none")
    ap.add_argument("--fps", type=cli.positive_int, default=8)
    add_allow_missing(ap)
    a = ap.parse_args(argv)
    try:
        h, w = (int(v) for v in a.size.lower().split("x"))
        out = predict(a.net, a.weights, a.deploy, a.train_val, a.video, a.frames, a.out, a.length,
                      a.stride, (h, w), a.mean, a.fps, allow_missing=a.allow_missing)
    except (PredictError, validate.ValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[predict] written to {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
