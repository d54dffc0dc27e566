"""One clip preparation: the data layer (pycaffe), tools.evaluate and tools.predict feed a
net bit-identical inputs for the same clip (per-voxel mean, BGR, gray, scale, padding), and
predict refuses a mean it cannot fit with the data layer's error."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.v2v import build
from tests.data_fixtures import coord_db, data_net

L, H, W = 8, 20, 24          # frames not a multiple of 16: evaluate full / predict pad them to 32×32


@pytest.fixture(scope="module")
def deploy_nets(tmp_path_factory, caffe):
    """{key: (deploy, weights)} for a 3-channel (seg) and a 1-channel (colour) V2V, narrow."""
    d = tmp_path_factory.mktemp("nets")
    nets = {}
    for key, c in (("seg_v2v", 3), ("color_v2v", 1)):
        dep = d / f"{key}_deploy.prototxt"
        dep.write_text(build(key, "deploy", input_shape=(1, c, L, 32, 32), width=16))
        w = d / f"{key}.caffemodel"
        caffe.Net(str(dep), caffe.TEST).save(str(w))
        nets[key] = (dep, w)
    return nets


@pytest.fixture
def net_inputs(monkeypatch):
    """The input blobs (after any padding) of every clip a DeployNet runs, in order."""
    from tools import evaluate
    seen, call = [], evaluate.DeployNet.__call__

    def record(self, x):
        y = call(self, x)
        seen.append(self.net.blobs[self.inp].data[0].copy())
        return y
    monkeypatch.setattr(evaluate.DeployNet, "__call__", record)
    return seen


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    assert a.tobytes() == b.tobytes(), f"differ by up to {np.abs(a - b).max()}"


def _layer_input(caffe, tmp_path, params, name):
    """The data layer's data top for the first clip, and the train_val holding the layer."""
    tv = data_net(tmp_path, params, name)
    net = caffe.Net(str(tv), caffe.TEST)
    net.forward()
    return net.blobs["data"].data[0].copy(), tv


def _frames_dir(src_db, d):
    """The database's first clip written as PNG frames (lossless: predict reads the same pixels)."""
    from data_prep.db import ClipDB
    d.mkdir()
    for t, f in enumerate(ClipDB(src_db)[0]["frames"].transpose(1, 2, 3, 0)):
        Image.fromarray(f).save(d / f"{t:03d}.png")
    return d


@pytest.mark.parametrize("task,net_key,channels", [("seg", "seg_v2v", "bgr"), ("color", "color_v2v", "rgb")])
def test_layer_evaluate_predict_same_net_input(caffe, tmp_path, deploy_nets, net_inputs, task, net_key,
                                               channels):
    from tools.evaluate import evaluate
    from tools.predict import predict
    coord_db(tmp_path / "db", task, n=1, L=L, H=H, W=W)
    c = 1 if task == "color" else 3
    mean = tmp_path / "mean.npy"   # per voxel, larger than the frames: centre-cropped
    np.save(mean, np.random.default_rng(3).uniform(0, 60, (c, L, H + 6, W + 4)).astype(np.float32))
    p = {"db": str(tmp_path / "db"), "task": task, "crop": None, "mean": str(mean), "channels": channels,
         "scale": 0.5, "prefetch": 1}
    full, tv = _layer_input(caffe, tmp_path, p, "full.prototxt")
    dep, w = deploy_nets[net_key]
    evaluate(deploy=dep, train_val=tv, weights=w, protocol="full", out=tmp_path / "ev", pictures=0,
             quiet=True)
    predict(deploy=dep, weights=w, train_val=tv, frames=_frames_dir(tmp_path / "db", tmp_path / "fr"),
            out=tmp_path / "pred", length=L, size=(H, W))
    cropped, tv16 = _layer_input(caffe, tmp_path, {**p, "crop": 16}, "crop.prototxt")
    evaluate(deploy=dep, train_val=tv16, weights=w, out=tmp_path / "ev16", pictures=0, quiet=True)

    ev_full, pred_in, ev_crop = net_inputs
    assert full.shape == (c, L, H, W) and ev_full.shape == (c, L, 32, 32)
    _same_bits(ev_full[..., :H, :W], full)
    assert not ev_full[..., H:, :].any() and not ev_full[..., W:].any()   # zero padding after the mean
    _same_bits(pred_in, ev_full)
    assert cropped.shape == (c, L, 16, 16)
    _same_bits(ev_crop, cropped)
    # and it is the data layer's preparation, not just the same numbers three times
    t, y, x = np.meshgrid(np.arange(L), np.arange(H), np.arange(W), indexing="ij")
    rgb = np.stack([x, y, 10 * t]).astype(np.float32)              # coord_db's frames
    want = np.tensordot(np.float32([0.299, 0.587, 0.114]), rgb, axes=(0, 0))[None] if task == "color" \
        else rgb[::-1] if channels == "bgr" else rgb
    m = np.load(mean)[:, :, 3:3 + H, 2:2 + W]
    np.testing.assert_allclose(full, (want - m) * 0.5, rtol=1e-5, atol=1e-4)


def test_predict_refuses_a_mean_it_cannot_fit(tmp_path, deploy_nets, capsys):
    from data_prep.clips import ClipSource
    from tools.predict import main
    coord_db(tmp_path / "db", "seg", n=1, L=L, H=H, W=W)
    np.save(tmp_path / "small.npy", np.zeros((3, L, 10, 12), np.float32))
    with pytest.raises(ValueError) as layer_error:
        ClipSource({"db": str(tmp_path / "db"), "task": "seg", "mean": str(tmp_path / "small.npy")})
    assert "10x12 is smaller than the crop 20x24" in str(layer_error.value)
    dep, w = deploy_nets["seg_v2v"]
    frames = _frames_dir(tmp_path / "db", tmp_path / "fr")
    rc = main(["--deploy", str(dep), "--weights", str(w), "--frames", str(frames), "--length", str(L),
               "--size", f"{H}x{W}", "--mean", str(tmp_path / "small.npy")])
    assert rc == 2 and capsys.readouterr().err.strip() == f"error: {layer_error.value}"
