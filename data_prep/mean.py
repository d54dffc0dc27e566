"""Per-voxel training mean of a clip database, like C3D's (sport1m_train16_128_mean):
the mean over all training clips of every (channel, frame, row, column), saved as a .npy
of shape (C, L, H, W) float32 — C = 3 (RGB, 0–255) or, with ``--gray``, C = 1 (the luma
the colorization data layer feeds). Give it to the data layer as ``"mean": "<file>"``; the
layer subtracts it at the crop window of each clip, as C3D does.

C3D's own sport1m mean (for fine-tuning from C3D's weights) is converted by
``python -m tools.convert_c3d`` instead; it was computed on BGR frames (use the layer's
``"channels": "bgr"`` with it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data_prep.clips import LUMA_WEIGHTS
from data_prep.db import ClipDB, DBError
from models.paths import DATA, user_path
from models import cli

LUMA = np.array(LUMA_WEIGHTS)  # float64: the sums here are float64


def clip_mean(db, gray: bool = False, max_clips: int | None = None) -> np.ndarray:
    from tqdm import tqdm
    d = ClipDB(db)
    n = len(d) if not max_clips else min(len(d), max_clips)
    acc = None
    for i in tqdm(range(n), desc="mean", unit="clip", file=sys.stderr):
        f = d[i]["frames"].astype(np.float64)
        if gray:
            f = np.tensordot(LUMA, f, axes=(0, 0))[None]
        acc = f if acc is None else acc + f
    return (acc / n).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.mean", description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python -m data_prep.mean --db data/db/gatech/train      # -> data/mean/gatech_train.npy\n"
               "  python -m data_prep.mean --db data/db/ucf101_color/train --gray --out ucf101_gray.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="a training clip database (data/db/... works from any directory)")
    ap.add_argument("--out", help=".npy file to write (default data/mean/<dataset>_<split>[_gray].npy)")
    ap.add_argument("--gray", action="store_true", help="mean of the gray input (C=1)")
    ap.add_argument("--max-clips", type=cli.positive_int, help="use only the first N clips")
    a = ap.parse_args(argv)
    db = user_path(a.db)
    try:
        m = clip_mean(db, a.gray, a.max_clips)
    except DBError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(a.out) if a.out else DATA / "mean" / f"{db.parent.name}_{db.name}{'_gray' if a.gray else ''}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    with cli.writing(out), open(out, "wb") as f:   # np.save(path) would add ".npy" to the name
        np.save(f, m)
    print(f"wrote {out}: shape {m.shape}, overall mean {m.mean(axis=(1, 2, 3)).round(2).tolist()}")
    return 0


if __name__ == "__main__":
    cli.run(main)
