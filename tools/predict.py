"""Run a trained deploy net over any video (or a folder of frames) with sliding clips.

    python -m tools.predict --net flow_v2v --weights W.caffemodel --video clip.avi --out runs/predict/clip
    python -m tools.predict --net seg_v2v --weights W.caffemodel --frames my_frames/ --mean data/c3d/sport1m_train16_128_mean.npy

Frames are resized to 128×171 (C3D's size, ``--size``), cut into clips of ``--length``
(16) frames every ``--stride`` frames (default: the length; a last clip is aligned to the
video's end so every frame gets a prediction), prepared like the net's test data (the
train_val TEST data layer's mean, channel order and scale: whole frames, padded to
multiples of 16), and run through the deploy net. Outputs in ``--out``:

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

from models import validate
from models.engine import caffe
from models.paths import PROTOTXT, RUNS, resolve_repo_path


class PredictError(ValueError):
    pass


def load_frames(video=None, frames=None, size=(128, 171)) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB at ``size``."""
    h, w = size
    if video:
        from data_prep.video import decode_video  # noqa: PLC0415
        return decode_video(video, h, w)
    d = Path(frames)
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")) \
        if d.is_dir() else []
    if not files:
        raise PredictError(f"{d}: no .png/.jpg frames found")
    from PIL import Image  # noqa: PLC0415
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


def prepare(clip: np.ndarray, params: dict) -> np.ndarray:
    """(L,H,W,3) uint8 RGB → the net's input (C,L,H,W) float32, as the TEST data layer."""
    x = clip.transpose(3, 0, 1, 2).astype(np.float32)
    if params.get("task") == "color":
        x = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), x, axes=(0, 0))[None]
    elif params.get("channels") == "bgr":
        x = x[::-1]
    if params.get("mean"):
        m = np.load(resolve_repo_path(params["mean"])).astype(np.float32)
        if m.ndim == 5:
            m = m[0]
        if m.ndim == 1:
            m = m.reshape(-1, 1, 1, 1)
        else:  # per voxel: centre-crop to the frames (as the data layer), same length
            L, H, W = x.shape[1:]
            mh, mw = m.shape[2:]
            y0, x0 = max(0, (mh - H) // 2), max(0, (mw - W) // 2)
            m = m[:, :L, y0:y0 + H, x0:x0 + W]
            if m.shape[2:] != (H, W):
                m = m.mean(axis=(1, 2, 3), keepdims=True)
        x = x - m
    return np.ascontiguousarray(x * float(params.get("scale", 1.0)), np.float32)


def predict(net_key=None, weights=None, deploy=None, train_val=None, video=None, frames=None,
            out=None, length=16, stride=None, size=(128, 171), mean=None, fps=8) -> Path:
    if net_key:
        deploy = deploy or PROTOTXT / f"{net_key}_deploy.prototxt"
        train_val = train_val or PROTOTXT / f"{net_key}_train_val.prototxt"
    if not deploy:
        raise PredictError("give --net or --deploy")
    if not weights:
        raise PredictError("give --weights (a trained caffemodel)")
    if bool(video) == bool(frames):
        raise PredictError("give exactly one of --video and --frames")
    deploy = Path(deploy)
    net_param = validate.validate_net_file(deploy, "TEST")
    validate.validate_weights(weights, net_param, deploy)
    params = {}
    if train_val and Path(train_val).exists():
        from tools.evaluate import test_data_params  # noqa: PLC0415
        params = test_data_params(Path(train_val))
    if mean is not None:
        params["mean"] = mean or None
    vids = load_frames(video, frames, size)
    stride = stride or length
    starts = clip_starts(len(vids), length, stride)
    H, W = size
    Hp, Wp = -(-H // 16) * 16, -(-W // 16) * 16
    validate.check_input_size(length, Hp, Wp, where=str(deploy))
    cf = caffe()
    net = cf.Net(str(deploy), str(weights), cf.TEST)
    inp = net.inputs[0]
    C = net.blobs[inp].data.shape[1]
    net.blobs[inp].reshape(1, C, length, Hp, Wp)
    net.reshape()
    outname = "prob" if "prob" in net.outputs else ("flow" if "flow" in net.outputs else net.outputs[0])
    task = params.get("task") or {"prob": "seg", "flow": "flow"}.get(outname, "color")
    result = [None] * len(vids)
    from tqdm import tqdm  # noqa: PLC0415
    for s in tqdm(starts, desc="predict", disable=not sys.stderr.isatty()):
        x = prepare(vids[s:s + length], params)
        net.blobs[inp].data[0] = np.pad(x, ((0, 0), (0, 0), (0, Hp - H), (0, Wp - W)))
        net.forward()
        y = net.blobs[outname].data[0][..., :H, :W]
        for t in range(length):
            result[s + t] = y[:, t].copy()
    out = Path(out) if out else RUNS / "predict" / Path(video or frames).stem
    write_outputs(out, task, vids, result, fps)
    return out


def write_outputs(out: Path, task: str, vids, result, fps: int) -> None:
    from data_prep.flo import write_flo  # noqa: PLC0415
    from data_prep.flowviz import flow_to_color  # noqa: PLC0415
    from tools import visualize as vz  # noqa: PLC0415
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
            from PIL import Image  # noqa: PLC0415
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
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--video", type=Path)
    ap.add_argument("--frames", type=Path, help="a folder of .png/.jpg frames (sorted by name)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--length", type=int, default=16)
    ap.add_argument("--stride", type=int)
    ap.add_argument("--size", default="128x171", help="HxW frames are resized to")
    ap.add_argument("--mean", help="override the mean (.npy); '' for none")
    ap.add_argument("--fps", type=int, default=8)
    a = ap.parse_args(argv)
    try:
        h, w = (int(v) for v in a.size.lower().split("x"))
        out = predict(a.net, a.weights, a.deploy, a.train_val, a.video, a.frames, a.out, a.length,
                      a.stride, (h, w), a.mean, a.fps)
    except (PredictError, validate.ValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[predict] written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
