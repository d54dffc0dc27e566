"""Small real datasets made on the fly for the data_prep tests (no network, tiny sizes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.paths import REPO

PY = sys.executable


def run_tool(module: str, *args, check=True, timeout=300, cwd=None):
    """Run ``python -m <module> args`` as a user would (from another directory)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([PY, "-m", module, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd or "/", env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def texture(rng, h, w):
    """A real photograph (scikit-image's bundled coffee) resized, plus a little noise."""
    import cv2
    from skimage import data
    img = cv2.resize(data.coffee(), (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def moving_texture(rng, frames=35, h=128, w=171, v=(2, 1)):
    """Frames of a real texture translating by integer v=(vx, vy) px/frame (frame t+1 =
    frame t shifted right by vx, down by vy), so flow t→t+1 is exactly v everywhere the
    content stays in view."""
    pad = max(abs(v[0]), abs(v[1])) * frames + 4
    big = texture(rng, h + 2 * pad, w + 2 * pad)
    out = []
    for t in range(frames):
        y0, x0 = pad - v[1] * t, pad - v[0] * t
        out.append(big[y0:y0 + h, x0:x0 + w])
    return np.stack(out)


def make_ucf(root: Path, n_videos=4, frames=35, corrupt=True, seed=0, h=128, w=171):
    """<root>/UCF-101/<Class>/v_<Class>_gNN_c01.avi (PyAV-written MPEG-4 AVIs of moving
    textures) and <root>/ucfTrainTestlist/trainlist01.txt listing them (+ a corrupt one)."""
    from data_prep.synthetic import write_video
    rng = np.random.default_rng(seed)
    names, motions = [], {}
    for i in range(n_videos):
        cls = ("Biking", "Diving")[i % 2]
        n = f"{cls}/v_{cls}_g{i + 1:02d}_c01.avi"
        v = (int(rng.integers(-2, 3)), int(rng.integers(-2, 3)))
        write_video(root / "UCF-101" / n, moving_texture(rng, frames, h, w, v))
        names.append(n)
        motions[n] = v
    if corrupt:
        bad = "Diving/v_Diving_g99_c01.avi"
        (root / "UCF-101" / bad).write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x17" * 4000)
        names.insert(1, bad)
    (root / "ucfTrainTestlist").mkdir(parents=True, exist_ok=True)
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text(
        "".join(f"{n} {1 + i % 2}\n" for i, n in enumerate(names)))
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("".join(f"{n}\n" for n in names[:2]))
    return names, motions


def coord_db(path: Path, task="flow", n=3, L=4, H=16, W=20, classes=8):
    """A database whose content encodes coordinates: frames channel 0 = x, channel 1 = y,
    channel 2 = 10·t + 50·record; flow u = 1 + x/100, v = 0.5 + y/100; seg label = (x + y) %
    classes with void (255) on the first row. Lets tests check crops, mirrors and flow signs."""
    from data_prep.db import ClipWriter
    t, y, x = np.meshgrid(np.arange(L), np.arange(H), np.arange(W), indexing="ij")
    fields = {"frames": ((3, L, H, W), np.uint8)}
    if task == "flow":
        fields["flow"] = ((2, L, H, W), np.float32)
    if task == "seg":
        fields["label"] = ((1, L, H, W), np.uint8)
    w = ClipWriter(path, fields)
    for r in range(n):
        rec = {"frames": np.stack([x, y, 10 * t + 50 * r]).astype(np.uint8)}
        if task == "flow":
            rec["flow"] = np.stack([1 + x / 100, 0.5 + y / 100]).astype(np.float32)
        if task == "seg":
            lab = ((x + y) % classes).astype(np.uint8)
            lab[:, 0] = 255
            rec["label"] = lab[None]
        w.put_unit(r, f"rec{r}", [(0, rec)])
    man = w.finalize({"dataset": "test", "split": "train", "task": task, "command": [], "params": {}})
    w.close()
    return man


def data_net(tmp: Path, params: dict, name="net.prototxt") -> Path:
    """A net holding only the ClipDataLayer with the given param_str."""
    p = tmp / name
    p.write_text('name: "d"\nlayer { name: "data" type: "Python" top: "data" top: "label"\n'
                 '  python_param { module: "data_prep.layers" layer: "ClipDataLayer"\n'
                 f"    param_str: '{json.dumps(params)}' }} }}\n")
    return p


def sintel_tree(root, seqs=("alley_1", "bamboo_1", "cave_2", "market_5"), frames=18, h=24, w=40):
    """An MPI-Sintel-like training tree: clean/final PNG frames and constant .flo flows."""
    from PIL import Image

    from data_prep.flo import write_flo
    rng = np.random.default_rng(0)
    for s in seqs:
        for pas in ("clean", "final"):
            (root / "training" / pas / s).mkdir(parents=True, exist_ok=True)
        (root / "training" / "flow" / s).mkdir(parents=True, exist_ok=True)
        for t in range(1, frames + 1):
            im = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            for pas in ("clean", "final"):
                Image.fromarray(im).save(root / "training" / pas / s / f"frame_{t:04d}.png")
            if t < frames:
                f = np.stack([np.full((h, w), 2.0), np.full((h, w), -1.0)], -1).astype(np.float32)
                write_flo(root / "training" / "flow" / s / f"frame_{t:04d}.flo", f)


def write_tiny_db(path, task, L=16, H=128, W=171, n=1):
    """A finished clip database (data_prep.db) of ``n`` random clips for ``task``."""
    from data_prep.db import ClipWriter

    rng = np.random.default_rng(11)
    fields = {"frames": ((3, L, H, W), "uint8")}
    if task == "seg":
        fields["label"] = ((1, L, H, W), "uint8")
    if task == "flow":
        fields["flow"] = ((2, L, H, W), "float32")
    w = ClipWriter(path, fields)
    for u in range(n):
        rec = {"frames": rng.integers(0, 256, (3, L, H, W)).astype(np.uint8)}
        if task == "seg":
            lab = rng.integers(0, 8, (1, L, H, W)).astype(np.uint8)
            lab[:, :, :4] = 255
            rec["label"] = lab
        if task == "flow":
            rec["flow"] = rng.normal(0, 3, (2, L, H, W)).astype(np.float32)
        w.put_unit(u, f"video{u}", [(0, rec)])
    w.finalize({"dataset": "tiny", "split": "train", "task": task})
    w.close()


# A tiny C3D-v1.1-dialect net: conv3d / pool3d / deconv3d / concat, voxel softmax loss.
TINY_NET = """
name: "tiny3d"
layer { name: "data" type: "Python" top: "data" top: "label"
  python_param { module: "tiny_data" layer: "TinyClips" param_str: '{"shape": [2, 3, 8, 16, 16], "k": 4}' } }
layer { name: "conv1a" type: "Convolution3D" bottom: "data" top: "conv1a"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution3d_param { num_output: 8 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1
    weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu1a" type: "ReLU" bottom: "conv1a" top: "conv1a" }
layer { name: "pool1" type: "Pooling3D" bottom: "conv1a" top: "pool1"
  pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
layer { name: "conv2a" type: "Convolution3D" bottom: "pool1" top: "conv2a"
  convolution3d_param { num_output: 8 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1
    weight_filler { type: "xavier" } } }
layer { name: "relu2a" type: "ReLU" bottom: "conv2a" top: "conv2a" }
layer { name: "deconv" type: "Deconvolution3D" bottom: "conv2a" top: "deconv"
  convolution3d_param { num_output: 8 kernel_size: 4 kernel_depth: 4 stride: 2 temporal_stride: 2
    pad: 1 temporal_pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "concat" type: "Concat" bottom: "deconv" bottom: "conv1a" top: "concat" }
layer { name: "predict" type: "Convolution3D" bottom: "concat" top: "predict"
  convolution3d_param { num_output: 4 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1
    weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalization: FULL } softmax_param { axis: 1 } }
"""

# A tiny Python data layer: a fixed random "clip" whose label is a function of its colour,
# so that a few SGD steps must lower the loss.
TINY_DATA = '''
import json
import numpy as np
import caffe


class TinyClips(caffe.Layer):
    def setup(self, bottom, top):
        p = json.loads(self.param_str)
        self.shape, self.k = p["shape"], p["k"]
        rng = np.random.default_rng(0)
        n, c, l, h, w = self.shape
        self.label = rng.integers(0, self.k, size=(n, 1, l, h, w)).astype(np.float32)
        centres = rng.standard_normal((self.k, c)).astype(np.float32) * 2
        self.data = centres[self.label[:, 0].astype(int)].transpose(0, 4, 1, 2, 3).copy()
        self.label[:, :, 0, 0, 0] = 255  # one ignored voxel per clip

    def reshape(self, bottom, top):
        top[0].reshape(*self.shape)
        top[1].reshape(self.shape[0], 1, *self.shape[2:])

    def forward(self, bottom, top):
        top[0].data[...] = self.data
        top[1].data[...] = self.label

    def backward(self, top, propagate_down, bottom):
        pass
'''
