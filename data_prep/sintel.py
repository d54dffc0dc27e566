"""MPI-Sintel (training set, with ground-truth flow) → evaluation clip databases and the
3 folds of the paper's 3-fold fine-tuning.

Input layout (MPI-Sintel-complete.zip from http://sintel.is.tue.mpg.de, unpacked):

    <root>/training/clean/alley_1/frame_0001.png ... frame_0050.png
    <root>/training/final/alley_1/frame_0001.png ...
    <root>/training/flow/alley_1/frame_0001.flo  ... frame_0049.flo   (flow frame t → t+1)

For each pass (clean, final) and sequence, frames are resized to ``--height``×``--width``
(default 128×171, the size V2V is trained on) and the flow with them: bilinear resampling,
u × W'/W and v × H'/H, so flows are in pixels of the stored frames. Clips of 16 frames
start every ``--stride`` (16) frames; a clip needs the flows of its 16 frames, i.e. 17
frames. ``--tail`` adds, per sequence, one more clip ending at the last flow so every flow is
covered (overlapping the previous clip); off by default (non-overlapping clips).
EPE at full resolution: evaluation tools can load native frames and flows with
``load_sequence`` and upsample predictions (× 1024/171, × 436/128).

Databases (data/db/sintel/...):

    <pass>                 every sequence (evaluation of V2V trained on UCF101)
    <pass>_fold<k>_train   sequences of the two other folds (fine-tuning, k = 0, 1, 2)
    <pass>_fold<k>_test    sequences of fold k (evaluated by the net fine-tuned on the others)

Folds: the 23 sequences sorted by name, sequence i in fold i mod 3 (the paper does not say
how it split them; this is fixed and written into the manifests). A sequence with an
unreadable frame or a truncated/corrupt .flo is reported with the file, skipped, and listed
at the end.
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

from data_prep import db as cdb
from data_prep.flo import read_flo
from models.paths import db_path
from models import cli

PASSES = ("clean", "final")
FOLDS = 3


def sequences(root: Path) -> list[str]:
    d = root / "training" / "flow"
    if not d.is_dir():
        raise SystemExit(f"error: {d} not found: --root must be the unpacked MPI-Sintel-complete "
                         f"folder (with training/clean, training/final, training/flow)")
    return sorted(p.name for p in d.iterdir() if p.is_dir())


def fold_of(seqs: list[str]) -> dict[str, int]:
    return {s: i % FOLDS for i, s in enumerate(sorted(seqs))}


def load_sequence(root, pass_: str, seq: str):
    """Native-resolution frames (T, H, W, 3) uint8 and flows (T-1, H, W, 2) float32."""
    from PIL import Image
    root = Path(root)
    fdir, ldir = root / "training" / pass_ / seq, root / "training" / "flow" / seq
    frames_p = sorted(fdir.glob("frame_*.png"))
    if not frames_p:
        raise FileNotFoundError(f"{fdir}: no frame_*.png")
    check_numbering(fdir, frames_p)
    frames = []
    for p in frames_p:
        try:
            frames.append(np.asarray(Image.open(p).convert("RGB")))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"frame {p} cannot be read ({e})") from None
    flows = []
    for p in frames_p[:-1]:
        f = ldir / (p.stem + ".flo")
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing (flow of {p.name})")
        flows.append(read_flo(f))
    same_shape(frames_p, frames)
    same_shape([ldir / (p.stem + ".flo") for p in frames_p[:-1]], flows)
    return np.stack(frames), np.stack(flows)


def check_numbering(fdir: Path, frames_p: list[Path]) -> None:
    """frame_NNNN.png numbered without a gap: a clip must not be stitched across a missing frame."""
    try:
        nums = [int(p.stem.split("_", 1)[1]) for p in frames_p]
    except ValueError:
        raise ValueError(f"{fdir}: frame names other than frame_NNNN.png") from None
    for a, b in zip(nums, nums[1:]):
        if b != a + 1:
            raise ValueError(f"{fdir}: frame_{a + 1:04d}.png is missing (frames {nums[0]}..{nums[-1]}); "
                             "a clip would be stitched across the gap")


def same_shape(paths: list[Path], arrays: list[np.ndarray]) -> None:
    for p, a in zip(paths, arrays):
        if a.shape != arrays[0].shape:
            raise ValueError(f"{p}: shape {a.shape[:2]}, the sequence's first is {arrays[0].shape[:2]}")


def resize_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2
    h, w = flow.shape[:2]
    if (h, w) == (height, width):
        return flow.astype(np.float32)
    out = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


def work_sequence(item: str, payload, length: int, stride: int, height: int, width: int, tail: bool):
    import cv2
    root, pass_ = payload
    frames, flows = load_sequence(root, pass_, item)
    n = len(flows)
    if n < length:
        raise ValueError(f"{item}: {n} flows, fewer than a clip ({length})")
    fr = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    fl = np.stack([resize_flow(f, height, width) for f in flows])
    starts = list(range(0, n - length + 1, stride))
    if tail and starts[-1] != n - length:
        starts.append(n - length)
    return [(s, {"frames": fr[s:s + length].transpose(3, 0, 1, 2),
                 "flow": fl[s:s + length].transpose(3, 0, 1, 2).astype(np.float32)}) for s in starts]


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.sintel", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Input layout"):] + """
examples:
  python -m data_prep.sintel --root ~/data/MPI-Sintel-complete
  python -m data_prep.sintel --root ~/data/MPI-Sintel-complete --pass final --tail
""", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="unpacked MPI-Sintel-complete folder")
    ap.add_argument("--pass", dest="passes", choices=(*PASSES, "both"), default="both")
    ap.add_argument("--length", type=cli.positive_int, default=16)
    ap.add_argument("--stride", type=cli.positive_int, default=16)
    ap.add_argument("--tail", action="store_true", help="add a last clip ending at each sequence's last flow")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=171)
    ap.add_argument("--no-folds", action="store_true", help="only the all-sequences databases")
    ap.add_argument("--out", help="folder for the databases (default data/db/sintel)")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args(argv)
    root = Path(a.root).expanduser()
    seqs = sequences(root)
    folds = fold_of(seqs)
    base = Path(a.out) if a.out else db_path("sintel", "x").parent
    work = partial(work_sequence, length=a.length, stride=a.stride, height=a.height,
                   width=a.width, tail=a.tail)
    fields = {"frames": ((3, a.length, a.height, a.width), np.uint8),
              "flow": ((2, a.length, a.height, a.width), np.float32)}
    params = {"length": a.length, "stride": a.stride, "tail": a.tail, "height": a.height,
              "width": a.width, "folds": folds}
    cmd = ["python", "-m", "data_prep.sintel", *(argv if argv is not None else sys.argv[1:])]
    status = 0
    for p in (PASSES if a.passes == "both" else (a.passes,)):
        jobs = [(p, seqs)]
        if not a.no_folds:
            for k in range(FOLDS):
                jobs.append((f"{p}_fold{k}_train", [s for s in seqs if folds[s] != k]))
                jobs.append((f"{p}_fold{k}_test", [s for s in seqs if folds[s] == k]))
        for split, subset in jobs:
            meta = {"dataset": "sintel", "split": split, "task": "flow", "pass": p,
                    "command": cmd, "params": params}
            man = cdb.build(base / split, [(s, (str(root), p)) for s in subset], work, fields,
                            meta, workers=a.workers, desc=f"sintel {split}")
            status |= 0 if man["count"] else 1
    return status


if __name__ == "__main__":
    cli.run(main)
