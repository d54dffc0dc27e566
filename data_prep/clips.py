"""Clip sampling and preparation without Caffe: the param_str schema of ``ClipDataLayer``,
its sampler and the one clip preparation every path shares.

``ClipPrep`` turns raw frames (uint8 RGB) and a crop window into the net input, and raw
targets into the label blob: the data layer (through ``ClipSource``), tools.evaluate and
tools.predict all prepare clips with it, so a net sees the same input whichever runs it.
``ClipSource(params)`` yields (data, label) batches from a clip database exactly as the
Caffe data layer ``data_prep.layers.ClipDataLayer`` does (it wraps this class); tools and
the PyTorch runtime use it directly, so none of them needs pycaffe. The parameters and
tops are documented in data_prep/layers.py.
"""
from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import numpy as np

from data_prep.db import ClipDB, DBError, manifest
from models.paths import resolve_repo_path

TASKS = ("seg", "flow", "color")
TARGET = {"seg": "label", "flow": "flow", "color": "frames"}   # database field of the label
KEYS = {"db", "task", "batch_size", "crop", "length", "mirror", "train", "mean", "scale",
        "flow_scale", "seed", "channels", "prefetch"}
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # gray = Rec. 601 luma of RGB
LUMA = np.array(LUMA_WEIGHTS, np.float32)


def gray(frames: np.ndarray) -> np.ndarray:
    """(3, ...) RGB -> (...) float32 luma: the colour task's input before the mean."""
    return np.tensordot(LUMA, frames.astype(np.float32, copy=False), axes=(0, 0))


def _decode(params: str | dict) -> dict:
    if isinstance(params, dict):
        return params
    try:
        p = json.loads(params) if params and params.strip() else {}
    except ValueError as e:
        raise ValueError(f"ClipDataLayer param_str is not JSON ({e}): {params!r}") from None
    if not isinstance(p, dict):
        raise ValueError(f"ClipDataLayer param_str must be a JSON object, got {params!r}")
    return p


def parse_params(params: str | dict) -> dict:
    """A ClipDataLayer param_str (JSON text, or already decoded), checked and completed with
    the defaults."""
    p = _decode(params)
    out = complete_params(p)
    if "db" not in p:
        raise ValueError("ClipDataLayer: param_str needs \"db\" (a database folder)")
    return {"db": str(p["db"]), **out}


def complete_params(p: dict) -> dict:
    """Every parameter but ``db``, checked, with the data layer's defaults: what ClipPrep
    reads (a tool preparing clips without a database passes e.g. just {"task": ...})."""
    unknown = set(p) - KEYS
    if unknown:
        raise ValueError(f"ClipDataLayer: unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)}")
    task = p.get("task")
    if task not in TASKS:
        raise ValueError(f"ClipDataLayer: task must be one of {TASKS}, got {task!r}")
    out = {"task": task, "batch_size": int(p.get("batch_size", 1)),
           "crop": None if p.get("crop") is None else int(p["crop"]),
           "length": None if p.get("length") is None else int(p["length"]),
           "mirror": bool(p.get("mirror", False)), "train": bool(p.get("train", False)),
           "mean": p.get("mean"), "scale": float(p.get("scale", 1.0)),
           "flow_scale": float(p.get("flow_scale", 1.0)), "seed": int(p.get("seed", 0)),
           "channels": str(p.get("channels", "rgb")).lower(), "prefetch": int(p.get("prefetch", 4))}
    if out["batch_size"] < 1:
        raise ValueError(f"ClipDataLayer: batch_size must be >= 1, got {out['batch_size']}")
    for key in ("scale", "flow_scale"):
        if not np.isfinite(out[key]):
            raise ValueError(f"ClipDataLayer: {key} must be a finite number, got {out[key]}")
    if out["channels"] not in ("rgb", "bgr"):
        raise ValueError(f"ClipDataLayer: channels must be rgb or bgr, got {out['channels']!r}")
    return out


def _geometry(p: dict, man: dict, db: Path):
    """(stored L, H, W, emitted L, crop h, crop w), checked against the manifest."""
    fields = man["fields"]
    if "frames" not in fields:
        raise ValueError(f"database {db} has no frames field")
    _, ls, h, w = fields["frames"]["shape"]
    need = TARGET[p["task"]]
    if need not in fields:
        raise ValueError(f"database {db} (task {man.get('task')}) has no {need} field: it cannot "
                         f"feed task {p['task']!r}")
    length = p["length"] or ls
    if length < 1 or ls % length:
        raise ValueError(f"length {length} must divide the stored clip length {ls} of {db}")
    ch, cw = (h, w) if p["crop"] is None else (p["crop"], p["crop"])
    if ch > h or cw > w:
        raise ValueError(f"crop {p['crop']} is larger than the frames {h}x{w} of {db}")
    return ls, h, w, length, ch, cw


def top_shapes(p: dict, db: Path, man: dict) -> list[tuple]:
    _, _, _, length, ch, cw = _geometry(p, man, db)
    n = p["batch_size"]
    c_in = 1 if p["task"] == "color" else 3
    c_out = {"seg": 1, "flow": 2, "color": 3}[p["task"]]
    return [(n, c_in, length, ch, cw), (n, c_out, length, ch, cw)]


def load_manifest(p: dict):
    db = resolve_repo_path(p["db"])
    try:
        return db, manifest(db)
    except DBError as e:
        raise ValueError(str(e)) from None


def check_labels(db: ClipDB, classes: int, void: int | None, net_file) -> None:
    """A segmentation database's label values against a net that predicts ``classes``
    classes (0..classes-1; ``void`` is ignored, None: the net ignores no label). A larger
    id is an error: Caffe's SoftmaxWithLoss would read past the prediction, and the
    evaluation would leave it unscored without a word."""
    top = max((v for v in db.label_values() if v != void), default=-1)
    if top >= classes:
        ignored = f"{void} = void" if void is not None else "no label ignored"
        raise ValueError(f"{db.path}: labels go up to {top} but the net {net_file} predicts {classes} "
                         f"classes (0..{classes - 1}; {ignored})")


# The layers that read class-id labels: (prediction's class axis, the message with ignore_label).
LABEL_READERS = {"SoftmaxWithLoss": lambda lp: (lp.softmax_param.axis, lp.loss_param),
                 "Accuracy": lambda lp: (lp.accuracy_param.axis, lp.accuracy_param)}


def check_net_labels(net_path, phase: str) -> None:
    """check_labels for every layer of the net (in ``phase``) that reads the labels of a
    segmentation ClipDataLayer: the classes are the channels of its prediction bottom."""
    from models import shapes, validate
    net = validate.load_net(net_path)
    layers = [lp for lp in net.layer if shapes.layer_in_phase(lp, phase)]
    blobs, sources = {}, {}   # blob shapes so far; label top -> its database
    for lp, info in zip(layers, validate.validate_net(net, net_path, phase)):
        blobs.update(zip(info.tops, info.top_shapes))
        if lp.type == "Python" and lp.python_param.layer == "ClipDataLayer" and len(lp.top) == 2:
            p = parse_params(lp.python_param.param_str)
            if p["task"] == "seg":
                sources[lp.top[1]] = ClipDB(load_manifest(p)[0])
        elif lp.type in LABEL_READERS and len(lp.bottom) == 2 and lp.bottom[1] in sources:
            axis, msg = LABEL_READERS[lp.type](lp)
            pred = blobs[lp.bottom[0]]
            void = msg.ignore_label if msg.HasField("ignore_label") else None
            if pred is not None:
                check_labels(sources[lp.bottom[1]], pred[axis % len(pred)], void, net_path)


class ClipPrep:
    """The test- and train-time preparation of one clip, as the data layer defines it.

    ``p``: the data layer's parameters (parse_params or complete_params: task, mean, scale,
    channels, flow_scale). The clips have ``length`` frames of ``frames_hw`` and are cut to
    ``crop_hw`` (default: whole frames); ``stored_length`` is the stored clip length of a
    database (a per-voxel mean may have it; default ``length``). The mean is loaded and
    checked here, once.
    """

    def __init__(self, p: dict, length: int, frames_hw: tuple[int, int],
                 crop_hw: tuple[int, int] | None = None, stored_length: int | None = None):
        self.task, self.channels, self.scale = p["task"], p["channels"], p["scale"]
        self.flow_scale = p["flow_scale"]
        self.length, self.stored_length = length, stored_length or length
        self.h, self.w = frames_hw
        self.ch, self.cw = crop_hw or frames_hw
        self.centre = ((self.h - self.ch) // 2, (self.w - self.cw) // 2)   # test-time window
        self.mean = None if p["mean"] is None else self._load_mean(resolve_repo_path(p["mean"]))

    def _load_mean(self, path: Path) -> np.ndarray:
        """(C,1,1,1) per channel, or (C, L, h', w') per voxel: centre-cropped to the frames
        when larger (a mean of crop size, or between, is kept and centred on the frames)."""
        if not path.is_file():
            raise ValueError(f"mean file {path} not found (make one with python -m data_prep.mean, "
                             f"or convert C3D's with tools.convert_c3d)")
        a = np.load(path).astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"mean {path}: {int(np.count_nonzero(~np.isfinite(a)))} NaN/inf values")
        c = 1 if self.task == "color" else 3
        if a.ndim == 1:
            if a.shape[0] != c:
                raise ValueError(f"mean {path}: shape {a.shape}, task {self.task} needs ({c},)")
            return a.reshape(c, 1, 1, 1)
        if a.ndim == 5 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 4 or a.shape[0] != c:
            raise ValueError(f"mean {path}: shape {a.shape}, expected ({c},) or ({c}, L, H, W)")
        if a.shape[1] not in (self.length, self.stored_length):
            raise ValueError(f"mean {path}: length {a.shape[1]}, the clips have {self.length} "
                             f"(stored {self.stored_length})")
        mh, mw = a.shape[2:]
        if mh < self.ch or mw < self.cw:
            raise ValueError(f"mean {path}: {mh}x{mw} is smaller than the crop {self.ch}x{self.cw}")
        y0, x0 = max(0, (mh - self.h) // 2), max(0, (mw - self.w) // 2)
        return np.ascontiguousarray(a[:, :, y0:y0 + min(mh, self.h), x0:x0 + min(mw, self.w)])

    def _crop(self, a: np.ndarray, y0: int, x0: int) -> np.ndarray:
        return a[:, :, y0:y0 + self.ch, x0:x0 + self.cw]

    def _mean_at(self, y0: int, x0: int, t0: int) -> np.ndarray:
        """The mean under the crop window at (y0, x0) of frames t0.. of the stored clip
        (Caffe/C3D's transformer takes the same offset in the mean as in the frames)."""
        m = self.mean
        if m.shape[1:] == (1, 1, 1):       # per channel
            return m
        if m.shape[1] == self.stored_length:
            m = m[:, t0:t0 + self.length]
        mh, mw = m.shape[2:]
        oy = min(max(y0 - (self.h - mh) // 2, 0), mh - self.ch)
        ox = min(max(x0 - (self.w - mw) // 2, 0), mw - self.cw)
        return m[:, :, oy:oy + self.ch, ox:ox + self.cw]

    def input(self, frames: np.ndarray, y0: int, x0: int, flip: bool = False, t0: int = 0) -> np.ndarray:
        """Frames (3, L, H, W) uint8 RGB → the net input (C, L, h, w) float32: the crop at
        (y0, x0), gray (colour task) or in the channel order, minus the mean, × scale,
        mirrored if ``flip``. t0: where the clip starts in its stored clip (for the mean)."""
        f = self._crop(frames, y0, x0).astype(np.float32)
        if self.task == "color":
            x = gray(f)[None]
        else:
            x = f[::-1] if self.channels == "bgr" else f
        if self.mean is not None:
            x = x - self._mean_at(y0, x0, t0)
        if self.scale != 1.0:
            x = x * self.scale
        if flip:
            x = x[..., ::-1]
        return np.ascontiguousarray(x, np.float32)

    def label(self, target: np.ndarray, y0: int, x0: int, flip: bool = False) -> np.ndarray:
        """The clip's database field TARGET[task] (K, L, H, W) → the label blob (K, L, h, w)
        float32: seg class ids, flow × flow_scale (u negated when mirrored), colour RGB/255."""
        y = self._crop(target, y0, x0).astype(np.float32)
        if self.task == "color":
            y = y / 255.0
        elif self.task == "flow":
            y = y * self.flow_scale
        if flip:
            y = y[..., ::-1].copy()
            if self.task == "flow":
                y[0] = -y[0]
        return np.ascontiguousarray(y, np.float32)


class ClipSource:
    """Deterministic batches (data, label) from a database: the sampler of ClipDataLayer."""

    def __init__(self, params: dict | str):
        # a dict (e.g. a prototxt's param_str already decoded) is checked and completed too
        self.p = parse_params(params)
        self.db_path, man = load_manifest(self.p)
        self.db = ClipDB(self.db_path)
        self.ls, self.h, self.w, self.length, self.ch, self.cw = _geometry(self.p, man, self.db_path)
        self.shapes = top_shapes(self.p, self.db_path, man)
        self.sub = self.ls // self.length
        self.n = len(self.db) * self.sub          # emitted clips per epoch
        self.rng = np.random.default_rng(self.p["seed"])
        self.prep = ClipPrep(self.p, self.length, (self.h, self.w), (self.ch, self.cw), self.ls)
        self._order, self._pos = np.arange(self.n), self.n  # new epoch at first draw

    # -- order
    def _next_index(self) -> int:
        if self._pos >= self.n:
            self._order = self.rng.permutation(self.n) if self.p["train"] else np.arange(self.n)
            self._pos = 0
        i = int(self._order[self._pos])
        self._pos += 1
        return i

    # -- one clip
    def record(self, j: int) -> tuple[dict, int]:
        """Emitted clip j → (its stored record {field: array}, its first frame in it)."""
        return self.db[j // self.sub], (j % self.sub) * self.length

    def frames(self, j: int) -> np.ndarray:
        """The raw frames (3, L, h, w) uint8 RGB that the test-time input of clip j shows."""
        rec, t0 = self.record(j)
        y0, x0 = self.prep.centre
        return rec["frames"][:, t0:t0 + self.length, y0:y0 + self.ch, x0:x0 + self.cw]

    def clip(self, j: int, rng_draws=None):
        """Emitted clip j (0 <= j < n) → (data (C,L,h,w), label (K,L,h,w)) float32.
        rng_draws: (y0, x0, mirror) or None for the test-time centre crop."""
        rec, t0 = self.record(j)
        y0, x0, flip = (*self.prep.centre, False) if rng_draws is None else rng_draws
        span = slice(t0, t0 + self.length)
        x = self.prep.input(rec["frames"][:, span], y0, x0, flip, t0)
        return x, self.prep.label(rec[TARGET[self.p["task"]]][:, span], y0, x0, flip)

    def skip(self, batches: int) -> None:
        """Advance as if ``batches`` batches had been drawn, loading nothing: the same
        random calls as next_batch, so a resumed training run sees the same clips, crops
        and mirrors as an uninterrupted one."""
        for _ in range(batches * self.p["batch_size"]):
            self._next_index()
            if self.p["train"]:
                self.rng.integers(0, self.h - self.ch + 1)
                self.rng.integers(0, self.w - self.cw + 1)
                if self.p["mirror"]:
                    self.rng.random()

    def next_batch(self):
        x = np.empty(self.shapes[0], np.float32)
        y = np.empty(self.shapes[1], np.float32)
        for b in range(self.p["batch_size"]):
            j = self._next_index()
            draws = None
            if self.p["train"]:
                y0 = int(self.rng.integers(0, self.h - self.ch + 1))
                x0 = int(self.rng.integers(0, self.w - self.cw + 1))
                flip = bool(self.p["mirror"] and self.rng.random() < 0.5)
                draws = (y0, x0, flip)
            x[b], y[b] = self.clip(j, draws)
        return x, y


class Prefetcher:
    """A background thread filling a bounded queue from a ClipSource (order unchanged)."""

    def __init__(self, source: ClipSource, depth: int = 4):
        self.source = source
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, name="ClipDataLayer-prefetch", daemon=True)
        self.t.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                item = self.source.next_batch()
                while not self._stop.is_set():
                    try:
                        self.q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except Exception as e:  # noqa: BLE001 - handed to the consumer
            self.q.put(e)

    def get(self):
        item = self.q.get()
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self):
        self._stop.set()
