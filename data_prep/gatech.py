"""GATECH geometric-context videos → segmentation clip databases.

Dataset: Raza, Grundmann, Essa, "Geometric Context from Videos", CVPR 2013
(http://www.cc.gatech.edu/cpl/projects/videogeometriccontext): 63 training and 38 test
outdoor videos with per-pixel labels. Class map (V2V's K = 8, in this order):

    0 sky   1 ground   2 solid   3 porous   4 cars   5 humans   6 vertical mix   7 main mix
    255 void / unlabelled (ignored by the loss and by pixel accuracy)

Accepted inputs (frames: .png/.jpg/.jpeg/.bmp/.ppm; labels: single-channel images):

1. A folder tree, one folder per video under ``<root>/<split>/``:

       <root>/train/<video>/frames/000001.png   (also images/, img/, rgb/)
       <root>/train/<video>/labels/000001.png   (also label/, gt/, groundtruth/, annotations/)
       <root>/test/<video>/...

   Frames and labels are paired by file stem (000001.png ↔ 000001.png/.bmp/...); frames
   without a label image are skipped, and no clip spans such a gap (GATECH labels every
   frame of its clips).
   If the unpacked archive has no train/ test/ folders, give ``--videos LIST`` (one video
   folder per line, relative to --root) for each split.
2. A plain list file (``--list FILE``), one frame per line:

       <frame image> <label image> [<video id>]

   paths relative to the list file's folder; the video id defaults to the frame's folder
   (its parent when that folder is called frames/images/img/rgb). Frames keep the list's
   order within a video. Any dataset layout can be fed this way.

3. The authors' C3D ``.bin`` clips (``--c3d-bins LIST``, first column of each line a .bin
   path relative to the list's folder): (1, 4, L, H, W) uint8, colour channels then the
   label channel (docs/dialect.md). Their colour order is not documented: ``--bin-channels``
   (rgb default, or bgr); label values ≥ 8 become void (the release ignores labels ≥ K).
   Each .bin is one clip; no stride is applied.

Label values: by default gray value k ∈ 0..7 is class k and 255 is void; ``--label-map``
rewrites values first, e.g. ``--label-map 0:255,1:0,2:1,3:2,4:3,5:4,6:5,7:6,8:7`` for
1-based labels with 0 = unlabelled. Colour (RGB) label images are mapped with
``--label-colors FILE.json`` ({"r,g,b": class}). Any other value is an error: that video is
reported (with the file and the value) and skipped, the rest is processed, and the bad
videos are listed at the end.

Frames are resized to 128×171 (area interpolation), labels with nearest neighbour, and cut
into 16-frame clips with stride 1 (train) or 16 (test), as the paper and the release
(11,296 train / 426 test clips). Frames left over at a video's end are not used (the
release's test protocol does not score them).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from functools import partial
from pathlib import Path

import numpy as np

from data_prep import db as cdb
from models.paths import db_path
from models import cli

CLASSES = ("sky", "ground", "solid", "porous", "cars", "humans", "vertical mix", "main mix")
VOID = 255
IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff"}
FRAME_DIRS = ("frames", "images", "img", "rgb", "image")
LABEL_DIRS = ("labels", "label", "gt", "groundtruth", "ground_truth", "annotations", "annotation")


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _images(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir() if p.suffix.lower() in IMG_EXT and p.is_file()), key=_natural)


def pairs_from_folder(vdir: Path) -> list[tuple[Path, Path, int]]:
    """(frame, label, the frame's position among all frames) for the labelled frames."""
    fdir = next((vdir / n for n in FRAME_DIRS if (vdir / n).is_dir()), None)
    ldir = next((vdir / n for n in LABEL_DIRS if (vdir / n).is_dir()), None)
    if fdir is None or ldir is None:
        raise FileNotFoundError(f"{vdir}: needs a frames folder ({'/'.join(FRAME_DIRS)}) and a "
                                f"labels folder ({'/'.join(LABEL_DIRS)})")
    labels = {p.stem: p for p in _images(ldir)}
    return [(f, labels[f.stem], i) for i, f in enumerate(_images(fdir)) if f.stem in labels]


def consecutive_runs(positions: list[int]) -> list[tuple[int, int]]:
    """(first index into ``positions``, length) of each run of consecutive frame positions."""
    runs, first = [], 0
    for k in range(1, len(positions) + 1):
        if k == len(positions) or positions[k] != positions[k - 1] + 1:
            runs.append((first, k - first))
            first = k
    return runs


def videos_from_tree(root: Path, split: str, videos_list: str | None) -> list[tuple[str, object]]:
    if videos_list:
        names = [ln.strip() for ln in Path(videos_list).read_text().splitlines() if ln.strip()]
        return [(n, ("dir", str(root / n))) for n in names]
    base = root / split
    if not base.is_dir():
        raise SystemExit(f"error: {base} not found: the tree needs <root>/{split}/<video>/frames|labels, "
                         f"or give --videos LIST or --list FILE")
    return [(f"{split}/{d.name}", ("dir", str(d))) for d in sorted(base.iterdir(), key=_natural) if d.is_dir()]


def videos_from_list(list_file: Path) -> list[tuple[str, object]]:
    if not list_file.is_file():
        raise SystemExit(f"error: list file {list_file} not found")
    base = list_file.parent
    vids: dict[str, list] = {}
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2:
            raise SystemExit(f"error: {list_file}:{n}: expected '<frame> <label> [<video>]', got {line!r}")
        f, lab = base / parts[0], base / parts[1]
        if len(parts) > 2:
            vid = parts[2]
        else:
            d = Path(parts[0]).parent
            vid = (d.parent if d.name.lower() in FRAME_DIRS else d).as_posix()
        vids.setdefault(vid, []).append((str(f), str(lab)))
    return [(v, ("pairs", p)) for v, p in vids.items()]


def parse_label_map(s: str | None) -> np.ndarray:
    """256-entry lookup: gray value → class id (0..7), 255 void, or -1 = invalid."""
    lut = np.full(256, -1, np.int16)
    lut[:len(CLASSES)] = np.arange(len(CLASSES))
    lut[VOID] = VOID
    if s:
        lut[:] = -1
        for item in s.split(","):
            a, b = item.split(":")
            a, b = int(a), int(b)
            if not (0 <= a < 256) or not (0 <= b < len(CLASSES) or b == VOID):
                raise SystemExit(f"error: --label-map entry {item!r}: values 0..255 → 0..7 or 255")
            lut[a] = b
    return lut


def load_label(path: Path, lut: np.ndarray, colors: dict | None) -> np.ndarray:
    from PIL import Image
    try:
        im = Image.open(path)
        im.load()
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"label image {path} cannot be read ({e})") from None
    a = np.asarray(im)
    if colors is not None:
        if a.ndim != 3:
            raise ValueError(f"label image {path} is not RGB but --label-colors was given")
        flat = a[..., :3].reshape(-1, 3).astype(np.int32)
        code = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
        out = np.full(code.shape, -1, np.int16)
        for key, cls in colors.items():
            out[code == key] = cls
        out = out.reshape(a.shape[:2])
        if (out < 0).any():
            c = flat[np.argmax(out.reshape(-1) < 0)]
            raise ValueError(f"label image {path}: colour {tuple(int(x) for x in c)} is not in --label-colors")
        return out.astype(np.uint8)
    if a.ndim == 3:
        if not (np.all(a[..., 0] == a[..., 1]) and np.all(a[..., 1] == a[..., 2])):
            raise ValueError(f"label image {path} is colour: give --label-colors to map colours to classes")
        a = a[..., 0]
    if a.dtype.kind == "f":
        raise ValueError(f"label image {path} holds floating-point values ({im.mode}): labels are integer "
                         "class ids (8-bit gray, or 16-bit with values 0..255)")
    if a.dtype != np.uint8:
        if a.min() < 0 or a.max() > 255:
            raise ValueError(f"label image {path}: value {int(a.max())} is out of range (0..7, void 255)")
        a = a.astype(np.uint8)
    out = lut[a]
    if (out < 0).any():
        bad = sorted(set(int(v) for v in np.unique(a[out < 0])))[:5]
        raise ValueError(f"label image {path}: value(s) {bad} out of range "
                         f"(classes 0..{len(CLASSES) - 1}, void {VOID}; see --label-map)")
    return out.astype(np.uint8)


def bins_from_list(list_file: Path, bgr: bool) -> list[tuple[str, object]]:
    if not list_file.is_file():
        raise SystemExit(f"error: list file {list_file} not found")
    out = []
    for line in list_file.read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            out.append((parts[0], ("bin", (str(list_file.parent / parts[0]), bgr))))
    return out


def work_bin(path: str, bgr: bool, length: int, height: int, width: int):
    import cv2
    from data_prep.c3dbin import read_c3d_bin
    a = read_c3d_bin(path, np.uint8)
    if a.shape[0] != 1 or a.shape[1] != 4 or a.shape[2] != length:
        raise ValueError(f"{path}: shape {a.shape}, expected (1, 4, {length}, H, W)")
    rgb = a[0, 2::-1] if bgr else a[0, :3]
    lab = a[0, 3].copy()
    lab[lab >= len(CLASSES)] = VOID
    if rgb.shape[2:] != (height, width):
        rgb = np.stack([[cv2.resize(c, (width, height), interpolation=cv2.INTER_AREA) for c in ch] for ch in rgb])
        lab = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_NEAREST) for f in lab])
    return [(0, {"frames": np.ascontiguousarray(rgb), "label": lab[None]})]


def work_video(item: str, payload, length: int, stride: int, height: int, width: int,
               lut: np.ndarray, colors: dict | None):
    import cv2
    from PIL import Image
    kind, val = payload
    if kind == "bin":
        return work_bin(val[0], val[1], length, height, width)
    pairs = pairs_from_folder(Path(val)) if kind == "dir" else [(Path(a), Path(b), i) for i, (a, b) in enumerate(val)]
    runs = consecutive_runs([i for *_, i in pairs])
    if max((n for _, n in runs), default=0) < length:
        raise ValueError(f"{item}: no {length} consecutive labelled frames (a clip; {len(pairs)} labelled "
                         f"frames in {len(runs)} run(s): a frame without its label image breaks a run)")
    frames, labels = [], []
    for f, lab, _ in pairs:
        try:
            im = np.asarray(Image.open(f).convert("RGB"))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"frame {f} cannot be read ({e})") from None
        lb = load_label(lab, lut, colors)
        if lb.shape != im.shape[:2]:
            raise ValueError(f"label image {lab} is {lb.shape[1]}x{lb.shape[0]}, its frame {f} "
                             f"{im.shape[1]}x{im.shape[0]}")
        frames.append(cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA))
        labels.append(cv2.resize(lb, (width, height), interpolation=cv2.INTER_NEAREST))
    fr, lb = np.stack(frames), np.stack(labels)
    return [(pairs[first + s][2], {"frames": fr[first + s:first + s + length].transpose(3, 0, 1, 2),
                                   "label": lb[None, first + s:first + s + length]})
            for first, n in runs for s in range(0, n - length + 1, stride)]  # no clip spans a gap


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.gatech", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Dataset:"):] + """
examples:
  python -m data_prep.gatech --root ~/data/gatech --split train      # stride 1
  python -m data_prep.gatech --root ~/data/gatech --split test       # stride 16
  python -m data_prep.gatech --list ~/data/gatech/train_pairs.txt --split train
""", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="dataset folder (tree layout)")
    ap.add_argument("--list", help="list file '<frame> <label> [<video>]' (instead of --root)")
    ap.add_argument("--c3d-bins", help="list of the authors' C3D .bin clips (instead of --root)")
    ap.add_argument("--bin-channels", choices=("rgb", "bgr"), default="rgb",
                    help="colour order inside the .bin clips (default rgb)")
    ap.add_argument("--videos", help="file naming the video folders (relative to --root) of this split")
    ap.add_argument("--split", choices=("train", "test"), required=True)
    ap.add_argument("--stride", type=cli.positive_int, help="default: 1 for train, 16 for test")
    ap.add_argument("--length", type=cli.positive_int, default=16)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=171)
    ap.add_argument("--label-map", help="gray value remapping 'src:dst,...' (dst 0..7 or 255)")
    ap.add_argument("--label-colors", help="JSON {\"r,g,b\": class} for colour label images")
    ap.add_argument("--out", help="database folder (default data/db/gatech/<split>)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shard", help="k/N (see python -m data_prep.db merge)")
    return ap


def _videos(a) -> list:
    if a.c3d_bins:
        vids = bins_from_list(Path(a.c3d_bins).expanduser(), a.bin_channels == "bgr")
    elif a.list:
        vids = videos_from_list(Path(a.list).expanduser())
    else:
        root = Path(a.root).expanduser()
        if not root.is_dir():
            raise SystemExit(f"error: --root {root} is not a folder")
        vids = videos_from_tree(root, a.split, a.videos)
    if not vids:
        raise SystemExit("error: no videos found")
    return vids


def _label_colors(path) -> dict | None:
    """--label-colors: {"r,g,b": class} → {packed rgb: class}."""
    if not path:
        return None
    colors = {}
    for k, v in json.loads(Path(path).read_text()).items():
        r, g, b = (int(x) for x in k.split(","))
        colors[(r << 16) | (g << 8) | b] = int(v)
    return colors


def main(argv=None):
    ap = _parser()
    a = ap.parse_args(argv)
    if sum(map(bool, (a.root, a.list, a.c3d_bins))) != 1:
        ap.error("give exactly one of --root, --list and --c3d-bins")
    vids = _videos(a)
    colors = _label_colors(a.label_colors)
    stride = a.stride or (1 if a.split == "train" else 16)
    out = Path(a.out) if a.out else db_path("gatech", a.split)
    params = {"length": a.length, "stride": stride, "height": a.height, "width": a.width,
              "label_map": a.label_map, "label_colors": a.label_colors, "videos": len(vids),
              "c3d_bins": bool(a.c3d_bins), "bin_channels": a.bin_channels if a.c3d_bins else None}
    meta = {"dataset": "gatech", "split": a.split, "task": "seg", "classes": list(CLASSES), "void": VOID,
            "command": ["python", "-m", "data_prep.gatech", *(argv if argv is not None else sys.argv[1:])],
            "params": params}
    work = partial(work_video, length=a.length, stride=stride, height=a.height, width=a.width,
                   lut=parse_label_map(a.label_map), colors=colors)
    fields = {"frames": ((3, a.length, a.height, a.width), np.uint8),
              "label": ((1, a.length, a.height, a.width), np.uint8)}
    man = cdb.build(out, vids, work, fields, meta, workers=a.workers, shard=a.shard,
                    desc=f"gatech {a.split}")
    return 0 if man and man["count"] else 1


if __name__ == "__main__":
    cli.run(main)
