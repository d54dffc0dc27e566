"""tools.predict: a video through a deploy net with sliding clips → .flo + wheels, label
PNGs + overlays, a GIF; clear errors for short videos and missing files."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.flo import read_flo
from data_prep.synthetic import make_scene, write_video
from models.v2v import build


@pytest.fixture
def video(tmp_path):
    s = make_scene(np.random.default_rng(2), frames=12, height=40, width=56)
    return write_video(tmp_path / "clip.avi", s.frames)


def deploy_with_weights(tmp_path, caffe, key):
    d = tmp_path / f"{key}_deploy.prototxt"
    d.write_text(build(key, "deploy", input_shape=(1, 3, 8, 32, 48), width=16))
    w = tmp_path / f"{key}.caffemodel"
    caffe.Net(str(d), caffe.TEST).save(str(w))
    return d, w


def predict(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tools.predict", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_flow_prediction_files(tmp_path, caffe, video):
    d, w = deploy_with_weights(tmp_path, caffe, "flow_v2v")
    out = tmp_path / "pred"
    r = predict("--deploy", d, "--weights", w, "--video", video, "--length", "8", "--stride", "3",
                "--size", "32x48", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    flos = sorted((out / "flow").glob("*.flo"))
    assert len(flos) == 12  # every frame, the last clip aligned to the video's end
    assert read_flo(flos[0]).shape == (32, 48, 2)
    assert len(list((out / "flow").glob("*.png"))) == 12
    assert Image.open(out / "preview.gif").n_frames == 12


def test_segmentation_prediction_files(tmp_path, caffe, video):
    d, w = deploy_with_weights(tmp_path, caffe, "seg_v2v")
    out = tmp_path / "seg"
    r = predict("--deploy", d, "--weights", w, "--video", video, "--length", "8", "--size", "32x48",
                "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    labels = sorted((out / "labels").glob("*.png"))
    assert len(labels) == 12 and np.asarray(Image.open(labels[0])).max() < 8
    assert len(list((out / "overlay").glob("*.png"))) == 12


def test_predict_errors_are_clear(tmp_path, caffe, video):
    d, w = deploy_with_weights(tmp_path, caffe, "flow_v2v")
    r = predict("--deploy", d, "--weights", w, "--video", video, "--length", "16", "--size", "32x48",
                cwd=tmp_path)
    assert r.returncode == 2 and "the video has 12 frames; a clip needs 16" in r.stderr
    r = predict("--deploy", d, "--weights", tmp_path / "nope.caffemodel", "--video", video, cwd=tmp_path)
    assert r.returncode == 2 and "nope.caffemodel: weights file not found" in r.stderr
    r = predict("--deploy", d, "--weights", w, "--video", video, "--length", "6", cwd=tmp_path)
    assert r.returncode == 2 and "multiple" in r.stderr


def _edit_weights(src, dst, caffe_pb2, edit):
    model = caffe_pb2.NetParameter()
    model.ParseFromString(src.read_bytes())
    edit(model)
    dst.write_bytes(model.SerializeToString())
    return dst


@pytest.mark.parametrize("damage,message", [
    ("missing", "has no weights for layer(s) conv_pre of"),
    ("short", "layer 'conv1a' blob 0 holds 323 values but its shape 4×3×3×3×3 needs 324: the file is damaged"),
    ("nan", "layer 'conv1a' blob 1 has 1 NaN/inf values (of 4)"),
])
def test_damaged_or_incomplete_weights_are_refused(tmp_path, caffe, video, damage, message):
    """Weights missing a layer (it would run from random fillers), with a value too few
    (Caffe aborts) or a NaN (NaN outputs that look like results): one line, exit 2."""
    from models.engine import pb2
    d, w = deploy_with_weights(tmp_path, caffe, "flow_v2v")

    def edit(model):
        layers = {x.name: x for x in model.layer}
        if damage == "missing":
            model.layer.remove(layers["conv_pre"])
        elif damage == "short":
            del layers["conv1a"].blobs[0].data[-1]
        else:
            layers["conv1a"].blobs[1].data[3] = float("nan")
    bad = _edit_weights(w, tmp_path / f"{damage}.caffemodel", pb2(), edit)
    args = ("--deploy", d, "--weights", bad, "--video", video, "--length", "8", "--size", "32x48",
            "--out", tmp_path / "out")
    r = predict(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{bad}: {message}" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    if damage == "missing":   # named on purpose, it runs
        r = predict(*args, "--allow-missing", "conv_pre", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
