"""Clip sampling without Caffe: the param_str schema of ``ClipDataLayer`` and its sampler.

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
KEYS = {"db", "task", "batch_size", "crop", "length", "mirror", "train", "mean", "scale",
        "flow_scale", "seed", "channels", "prefetch"}
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def parse_params(param_str: str) -> dict:
    try:
        p = json.loads(param_str) if param_str and param_str.strip() else {}
    except ValueError as e:
        raise ValueError(f"ClipDataLayer param_str is not JSON ({e}): {param_str!r}") from None
    if not isinstance(p, dict):
        raise ValueError(f"ClipDataLayer param_str must be a JSON object, got {param_str!r}")
    unknown = set(p) - KEYS
    if unknown:
        raise ValueError(f"ClipDataLayer: unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)}")
    if "db" not in p:
        raise ValueError("ClipDataLayer: param_str needs \"db\" (a database folder)")
    task = p.get("task")
    if task not in TASKS:
        raise ValueError(f"ClipDataLayer: task must be one of {TASKS}, got {task!r}")
    out = {"db": str(p["db"]), "task": task, "batch_size": int(p.get("batch_size", 1)),
           "crop": None if p.get("crop") is None else int(p["crop"]),
           "length": None if p.get("length") is None else int(p["length"]),
           "mirror": bool(p.get("mirror", False)), "train": bool(p.get("train", False)),
           "mean": p.get("mean"), "scale": float(p.get("scale", 1.0)),
           "flow_scale": float(p.get("flow_scale", 1.0)), "seed": int(p.get("seed", 0)),
           "channels": str(p.get("channels", "rgb")).lower(), "prefetch": int(p.get("prefetch", 4))}
    if out["batch_size"] < 1:
        raise ValueError(f"ClipDataLayer: batch_size must be >= 1, got {out['batch_size']}")
    if out["channels"] not in ("rgb", "bgr"):
        raise ValueError(f"ClipDataLayer: channels must be rgb or bgr, got {out['channels']!r}")
    return out


def _geometry(p: dict, man: dict, db: Path):
    """(stored L, H, W, emitted L, crop h, crop w), checked against the manifest."""
    fields = man["fields"]
    if "frames" not in fields:
        raise ValueError(f"database {db} has no frames field")
    _, ls, h, w = fields["frames"]["shape"]
    need = {"seg": "label", "flow": "flow", "color": None}[p["task"]]
    if need and need not in fields:
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


class ClipSource:
    """Deterministic batches (data, label) from a database: the sampler of ClipDataLayer."""

    def __init__(self, params: dict | str):
        # a dict (e.g. a prototxt's param_str already decoded) is checked and completed too
        self.p = parse_params(params if isinstance(params, str) else json.dumps(params))
        self.db_path, man = load_manifest(self.p)
        self.db = ClipDB(self.db_path)
        self.ls, self.h, self.w, self.length, self.ch, self.cw = _geometry(self.p, man, self.db_path)
        self.shapes = top_shapes(self.p, self.db_path, man)
        self.sub = self.ls // self.length
        self.n = len(self.db) * self.sub          # emitted clips per epoch
        self.rng = np.random.default_rng(self.p["seed"])
        self.mean = self._load_mean()
        self._order, self._pos = np.arange(self.n), self.n  # new epoch at first draw

    def _load_mean(self):
        m = self.p["mean"]
        if m is None:
            return None
        path = resolve_repo_path(m)
        if not path.is_file():
            raise ValueError(f"mean file {path} not found (make one with python -m data_prep.mean, "
                             f"or convert C3D's with tools.convert_c3d)")
        a = np.load(path).astype(np.float32)
        c = 1 if self.p["task"] == "color" else 3
        if a.ndim == 1:
            if a.shape[0] != c:
                raise ValueError(f"mean {path}: shape {a.shape}, task {self.p['task']} needs ({c},)")
            return a.reshape(c, 1, 1, 1)
        if a.ndim == 5 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 4 or a.shape[0] != c:
            raise ValueError(f"mean {path}: shape {a.shape}, expected ({c},) or ({c}, L, H, W)")
        if a.shape[1] not in (self.length, self.ls):
            raise ValueError(f"mean {path}: length {a.shape[1]}, the clips have {self.length} "
                             f"(stored {self.ls})")
        mh, mw = a.shape[2:]
        if mh < self.h or mw < self.w:
            if mh < self.ch or mw < self.cw:
                raise ValueError(f"mean {path}: {mh}x{mw} is smaller than the crop {self.ch}x{self.cw}")
            # a mean of crop size (or between): centre it; the crop then uses the mean's centre.
        y0, x0 = max(0, (mh - self.h) // 2), max(0, (mw - self.w) // 2)
        return np.ascontiguousarray(a[:, :, y0:y0 + min(mh, self.h), x0:x0 + min(mw, self.w)])

    # -- order
    def _next_index(self) -> int:
        if self._pos >= self.n:
            self._order = self.rng.permutation(self.n) if self.p["train"] else np.arange(self.n)
            self._pos = 0
        i = int(self._order[self._pos])
        self._pos += 1
        return i

    # -- one clip
    def clip(self, j: int, rng_draws=None):
        """Emitted clip j (0 <= j < n) → (data (C,L,h,w), label (K,L,h,w)) float32.
        rng_draws: (y0, x0, mirror) or None for the test-time centre crop."""
        rec = self.db[j // self.sub]
        t0 = (j % self.sub) * self.length
        frames = rec["frames"][:, t0:t0 + self.length]           # (3, L, H, W) uint8
        if rng_draws is None:
            y0, x0, flip = (self.h - self.ch) // 2, (self.w - self.cw) // 2, False
        else:
            y0, x0, flip = rng_draws
        sl = (slice(None), slice(None), slice(y0, y0 + self.ch), slice(x0, x0 + self.cw))
        f = frames[sl].astype(np.float32)
        task = self.p["task"]
        if task == "color":
            x = np.tensordot(LUMA, f, axes=(0, 0))[None]
            y = f / 255.0
        else:
            x = f[::-1] if self.p["channels"] == "bgr" else f
            if task == "seg":
                y = rec["label"][:, t0:t0 + self.length][sl].astype(np.float32)
            else:
                y = rec["flow"][:, t0:t0 + self.length][sl].astype(np.float32) * self.p["flow_scale"]
        if self.mean is not None:
            m = self.mean
            if m.shape[-1] > 1:  # per voxel
                if m.shape[1] == self.ls:
                    m = m[:, t0:t0 + self.length]
                mh, mw = m.shape[2:]
                oy, ox = y0 - (self.h - mh) // 2, x0 - (self.w - mw) // 2
                oy = min(max(oy, 0), mh - self.ch)
                ox = min(max(ox, 0), mw - self.cw)
                m = m[:, :, oy:oy + self.ch, ox:ox + self.cw]
            x = x - m
        if self.p["scale"] != 1.0:
            x = x * self.p["scale"]
        if flip:
            x, y = x[..., ::-1], y[..., ::-1].copy()
            if task == "flow":
                y[0] = -y[0]
        return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)

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
