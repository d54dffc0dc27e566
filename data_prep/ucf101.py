"""UCF101 → clip databases for V2V optical flow (Brox semi-truth) and colorization.

Input layout (the public download, https://www.crcv.ucf.edu/data/UCF101.php):

    <root>/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi     (UCF101.rar unpacked: UCF-101/)
    <splits>/trainlist01.txt  lines "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    <splits>/testlist01.txt   lines "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
                                                           (UCF101TrainTestSplits-RecognitionTask.zip)

Paths in the lists are matched case-insensitively (the official lists spell some class
folders differently from the archive, e.g. HandStandPushups vs HandstandPushups).

Every video is decoded (PyAV, OpenCV fallback), resized to 128×171 (H×W, C3D's frame
size) and cut into clips of ``--length`` (16) frames starting every ``--stride`` frames
(16: non-overlapping, as the paper for flow and colour).

- ``--task flow``: each clip also holds 16 flows, flow t = Brox flow frame t → t+1
  (data_prep.teacher, computed at 128×171, stored float16 in pixels). The 16th flow needs
  the frame after the clip, so a clip is made only when 17 frames are available: at a
  video's end a clip without a following frame is dropped (no flow is invented).
- ``--task color``: the clips hold the RGB frames only; the data layer makes the gray input
  (ITU-R 601 luma) and the RGB target in [0, 1] from them.

Frames left over at a video's end (fewer than a clip) are not used. The database goes to
data/db/ucf101_<task>/<split> (models.paths) unless ``--out`` says otherwise; it resumes
after a kill (run the same command again) and ``--shard k/N`` + ``python -m data_prep.db
merge`` split the work over machines.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

from data_prep import db as cdb
from data_prep.teacher import DEFAULT as TEACHER
from data_prep.teacher import brox_flow, brox_flow_gpu, gpu_available
from data_prep.video import decode_video
from models.paths import db_path
from models import cli


def read_split_list(path) -> list[str]:
    """Relative video paths from a trainlistNN/testlistNN file (class index column ignored)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: split list {path} " + ("is a folder, not a file" if path.is_dir() else "not found"))
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise SystemExit(f"error: split list {path} is not a text file") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split()[0].replace("\\", "/"))
    return out


def resolve_videos(root: Path, rels: list[str]) -> list[tuple[str, Path | None]]:
    """(name from the list, file) pairs; case-insensitive match under root; None if absent."""
    index = {}
    for p in root.rglob("*"):
        if p.suffix.lower() in (".avi", ".mp4", ".mkv", ".mov"):  # folders too: work_video names them
            index[p.relative_to(root).as_posix().lower()] = p
            index.setdefault(p.name.lower(), p)
    out = []
    for r in rels:
        p = index.get(r.lower()) or index.get(Path(r).name.lower())
        out.append((r, p))
    return out


def clip_starts(n_frames: int, length: int, stride: int, need_next: bool) -> list[int]:
    need = length + (1 if need_next else 0)
    return list(range(0, n_frames - need + 1, stride)) if n_frames >= need else []


def work_video(item: str, path, task: str, length: int, stride: int, height: int, width: int,
               teacher_params=TEACHER, gpu: bool = False):
    if path is None:
        raise FileNotFoundError(f"{item}: listed in the split file but not found under --root")
    if not Path(path).is_file():
        raise IsADirectoryError(f"{path}: a folder, not a video file")
    frames = decode_video(path, height, width)
    starts = clip_starts(len(frames), length, stride, need_next=(task == "flow"))
    if not starts:
        raise ValueError(f"{path}: {len(frames)} frames, fewer than the "
                         f"{length + (task == 'flow')} a clip needs")
    flows = {}
    clips = []
    for s in starts:
        rec = {"frames": frames[s:s + length].transpose(3, 0, 1, 2)}
        if task == "flow":
            fl = []
            for t in range(s, s + length):
                if t not in flows:
                    flows[t] = (brox_flow_gpu(frames[t], frames[t + 1]) if gpu else
                                brox_flow(frames[t], frames[t + 1], teacher_params))
                fl.append(flows[t])
            rec["flow"] = np.stack(fl).transpose(3, 0, 1, 2).astype(np.float16)
        clips.append((s, rec))
    return clips


def fields_for(task: str, length: int, height: int, width: int) -> dict:
    f = {"frames": ((3, length, height, width), np.uint8)}
    if task == "flow":
        f["flow"] = ((2, length, height, width), np.float16)
    return f


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.ucf101", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Input layout"):] + """
examples:
  python -m data_prep.ucf101 --task flow --root ~/data/UCF-101 --splits ~/data/ucfTrainTestlist \\
      --split train --workers 2
  python -m data_prep.ucf101 --task flow --root ~/data/UCF-101 --splits ~/data/ucfTrainTestlist --split test
  python -m data_prep.ucf101 --task color --root ~/data/UCF-101 --splits ~/data/ucfTrainTestlist --split train
  # a cluster array job, task k of 64, then one merge:
  python -m data_prep.ucf101 --task flow ... --split train --shard $k/64
  python -m data_prep.db merge data/db/ucf101_flow/train data/db/ucf101_flow/train.shard-*-of-64
""", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("flow", "color"), required=True)
    ap.add_argument("--root", required=True, help="the UCF-101 folder (class folders of .avi)")
    ap.add_argument("--splits", help="folder with trainlistNN.txt/testlistNN.txt")
    ap.add_argument("--list", help="a split list file to use instead of --splits/--split")
    ap.add_argument("--split", choices=("train", "test"), default="train")
    ap.add_argument("--split-id", type=int, default=1, help="1, 2 or 3 (default 1, as the paper)")
    ap.add_argument("--out", help="database folder (default data/db/ucf101_<task>/<split>)")
    ap.add_argument("--length", type=cli.positive_int, default=16)
    ap.add_argument("--stride", type=cli.positive_int, default=16,
                    help="frames between clip starts (16 = non-overlapping)")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=171)
    ap.add_argument("--workers", type=int, default=1, help="processes (decode + teacher)")
    ap.add_argument("--shard", help="k/N: build only videos i with i %% N == k, into <out>.shard-k-of-N")
    ap.add_argument("--gpu", action="store_true",
                    help="OpenCV CUDA Brox (the paper's implementation) instead of the CPU teacher; "
                         "only when this OpenCV has cv2.cuda.BroxOpticalFlow (no pip wheel does)")
    ap.add_argument("--limit", type=cli.positive_int, help="only the first N videos of the list (a quick try)")
    return ap


def _videos(a) -> tuple[Path, list]:
    """The split list and its videos [(relative name, path or None)]."""
    root = Path(a.root).expanduser()
    if not root.is_dir():
        raise SystemExit(f"error: --root {root} is not a folder")
    if a.list:
        lst = Path(a.list)
    elif a.splits:
        lst = Path(a.splits).expanduser() / f"{a.split}list{a.split_id:02d}.txt"
    else:
        raise SystemExit("error: give --splits <ucfTrainTestlist folder> or --list <file>")
    rels = read_split_list(lst)
    if a.limit:
        rels = rels[:a.limit]
    vids = resolve_videos(root, rels)
    missing = sum(p is None for _, p in vids)
    if missing == len(vids):
        raise SystemExit(f"error: none of the {len(vids)} videos of {lst} is under {root}")
    return lst, vids


def main(argv=None):
    a = _parser().parse_args(argv)
    lst, vids = _videos(a)
    out = Path(a.out) if a.out else db_path(f"ucf101_{a.task}", a.split)
    params = {"task": a.task, "length": a.length, "stride": a.stride, "height": a.height,
              "width": a.width, "list": lst.name, "videos": len(vids)}
    meta = {"dataset": f"ucf101_{a.task}", "split": a.split, "task": a.task,
            "command": ["python", "-m", "data_prep.ucf101", *(argv if argv is not None else sys.argv[1:])],
            "params": params}
    if a.gpu and not gpu_available():
        raise SystemExit("error: --gpu: this OpenCV has no CUDA BroxOpticalFlow (pip wheels never do); "
                         "drop --gpu to use the CPU teacher")
    if a.task == "flow":
        meta["teacher"] = ({"method": "opencv_cuda_brox", "alpha": 0.197, "gamma": 50.0, "scale": 0.8,
                            "inner": 5, "outer": 150, "solver": 10} if a.gpu else
                           {"method": "brox2004_cpu (data_prep.teacher)", **asdict(TEACHER)})
        params["teacher"] = meta["teacher"]["method"]
    work = partial(work_video, task=a.task, length=a.length, stride=a.stride,
                   height=a.height, width=a.width, gpu=a.gpu)
    if a.gpu:
        a.workers = 1  # one CUDA context
    man = cdb.build(out, [(r, str(p) if p else None) for r, p in vids], work,
                    fields_for(a.task, a.length, a.height, a.width), meta,
                    workers=a.workers, shard=a.shard, desc=f"ucf101 {a.task} {a.split}")
    return 0 if man and man["count"] else 1


if __name__ == "__main__":
    cli.run(main)
