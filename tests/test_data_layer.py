"""ClipDataLayer through pycaffe: crops, mirrors, flow signs, mean, order, shapes, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.data_fixtures import coord_db, data_net


def _net(caffe, tmp_path, params, name="net.prototxt"):
    return caffe.Net(str(data_net(tmp_path, params, name)), caffe.TEST)


def _batches(net, k):
    out = []
    for _ in range(k):
        net.forward()
        out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    return out


def test_train_crop_mirror_and_flow_sign(caffe, tmp_path):
    coord_db(tmp_path / "db", "flow", n=3, L=4, H=16, W=20)
    p = {"db": str(tmp_path / "db"), "task": "flow", "batch_size": 2, "crop": 8, "length": 4,
         "mirror": True, "train": True, "mean": None, "scale": 1.0, "flow_scale": 0.125, "seed": 5}
    net = _net(caffe, tmp_path, p)
    flips, offsets = set(), set()
    for x, y in _batches(net, 12):
        assert x.shape == (2, 3, 4, 8, 8) and y.shape == (2, 2, 4, 8, 8)
        for b in range(2):
            xs, ys = x[b, 0, 0], x[b, 1, 0]
            assert (np.diff(ys, axis=0) == 1).all()                 # rows in order
            dx = np.diff(xs, axis=1)
            flipped = bool((dx == -1).all())
            assert flipped or (dx == 1).all()
            flips.add(flipped)
            offsets.add((int(ys[0, 0]), int(xs[0, -1 if flipped else 0])))
            # the target is the flow of the very pixels shown, u negated when mirrored
            u_true = (1 + x[b, 0] / 100) * 0.125
            v_true = (0.5 + x[b, 1] / 100) * 0.125
            np.testing.assert_allclose(y[b, 0], -u_true if flipped else u_true, rtol=1e-5)
            np.testing.assert_allclose(y[b, 1], v_true, rtol=1e-5)
    assert flips == {True, False}
    assert len(offsets) > 3                                         # random crop positions


def test_test_phase_centre_crop_fixed_order_no_mirror(caffe, tmp_path):
    coord_db(tmp_path / "db", "seg", n=3, L=4, H=16, W=20)
    p = {"db": str(tmp_path / "db"), "task": "seg", "batch_size": 1, "crop": 8, "length": 2,
         "mirror": True, "train": False, "mean": None, "scale": 1.0, "flow_scale": 1.0, "seed": 0}
    net = _net(caffe, tmp_path, p)
    seen = []
    for x, y in _batches(net, 7):
        assert x[0, 1, 0, 0, 0] == (16 - 8) // 2 and x[0, 0, 0, 0, 0] == (20 - 8) // 2
        assert (np.diff(x[0, 0, 0], axis=1) == 1).all()
        lab = (x[0, 0] + x[0, 1]) % 8
        assert np.array_equal(y[0, 0], lab)                         # row 0 (void) is outside the crop
        seen.append(int(x[0, 2, 0, 0, 0]))
    # records 0,1,2 each give two sub-clips of length 2 (t0 = 0, 2), then it cycles
    assert seen == [0, 20, 50, 70, 100, 120, 0]


def test_seg_void_kept_and_mirrored_label(caffe, tmp_path):
    coord_db(tmp_path / "db", "seg", n=2, L=4, H=16, W=20)
    p = {"db": str(tmp_path / "db"), "task": "seg", "crop": None, "mirror": True, "train": True, "seed": 1}
    net = _net(caffe, tmp_path, p)
    for x, y in _batches(net, 6):
        assert x.shape == (1, 3, 4, 16, 20)
        assert (y[0, 0, :, 0] == 255).all()
        np.testing.assert_array_equal(y[0, 0, :, 1:], (x[0, 0, :, 1:] + x[0, 1, :, 1:]) % 8)


def test_mean_and_scale_follow_the_crop(caffe, tmp_path):
    coord_db(tmp_path / "db", "flow", n=2, L=4, H=16, W=20)
    # larger than the frames: centre-cropped
    mean = np.random.default_rng(0).uniform(0, 50, (3, 4, 18, 22)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    p = {"db": str(tmp_path / "db"), "task": "flow", "crop": 8, "mirror": False, "train": True,
         "mean": str(tmp_path / "mean.npy"), "scale": 0.5, "seed": 2}
    net = _net(caffe, tmp_path, p)
    m = mean[:, :, 1:17, 1:21]
    for x, _ in _batches(net, 4):
        # recover the crop offset from the (mean-free) y/x channels: x = (v - mean) * scale
        # → try every offset and keep the one that matches
        ok = False
        for y0 in range(9):
            for x0 in range(13):
                yy, xx = np.mgrid[y0:y0 + 8, x0:x0 + 8]
                e0 = (xx - m[0, :, y0:y0 + 8, x0:x0 + 8]) * 0.5
                e1 = (yy - m[1, :, y0:y0 + 8, x0:x0 + 8]) * 0.5
                if np.allclose(x[0, 0], e0, atol=1e-4) and np.allclose(x[0, 1], e1, atol=1e-4):
                    ok = True
        assert ok


def test_color_task_gray_input_rgb_target(caffe, tmp_path):
    coord_db(tmp_path / "db", "color", n=2, L=4, H=16, W=20)
    p = {"db": str(tmp_path / "db"), "task": "color", "crop": 16, "train": False, "mirror": False}
    net = _net(caffe, tmp_path, p)
    x, y = _batches(net, 1)[0]
    assert x.shape == (1, 1, 4, 16, 16) and y.shape == (1, 3, 4, 16, 16)
    assert 0 <= y.min() and y.max() <= 1
    gray = (0.299 * y[0, 0] + 0.587 * y[0, 1] + 0.114 * y[0, 2]) * 255
    np.testing.assert_allclose(x[0, 0], gray, rtol=1e-5, atol=1e-3)


def test_seed_repeats_and_differs(caffe, tmp_path):
    coord_db(tmp_path / "db", "flow", n=4, L=4, H=16, W=20)
    base = {"db": str(tmp_path / "db"), "task": "flow", "crop": 8, "mirror": True, "train": True}
    a = _batches(_net(caffe, tmp_path, {**base, "seed": 7}, "a.prototxt"), 6)
    b = _batches(_net(caffe, tmp_path, {**base, "seed": 7}, "b.prototxt"), 6)
    c = _batches(_net(caffe, tmp_path, {**base, "seed": 8}, "c.prototxt"), 6)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))


def test_infer_top_shapes_matches_forward(caffe, tmp_path):
    from data_prep.layers import ClipDataLayer
    for task in ("seg", "flow", "color"):
        coord_db(tmp_path / task, task, n=2, L=8, H=16, W=20)
        p = {"db": str(tmp_path / task), "task": task, "batch_size": 3, "crop": 16, "length": 4,
             "train": True}
        shapes = ClipDataLayer.infer_top_shapes(json.dumps(p))
        net = _net(caffe, tmp_path, p, f"{task}.prototxt")
        net.forward()
        assert [tuple(net.blobs[t].data.shape) for t in ("data", "label")] == [tuple(s) for s in shapes]
        assert ClipDataLayer.infer_top_shapes(json.dumps(p), []) == shapes   # the validator's call


def test_errors_name_the_database(tmp_path):
    from data_prep.layers import ClipDataLayer
    # a relative db resolves against the repo root; a split name no real build uses
    with pytest.raises(ValueError, match=r"database .*data/db/gatech/nosuchsplit not found: build it with "
                                         r"python -m data_prep.gatech --root <GATECH folder> "
                                         r"--split nosuchsplit"):
        ClipDataLayer.infer_top_shapes('{"db": "data/db/gatech/nosuchsplit", "task": "seg"}')
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match=r"half is unfinished"):
        ClipDataLayer.infer_top_shapes(json.dumps({"db": str(tmp_path / "half"), "task": "seg"}))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad: manifest.json unreadable"):
        ClipDataLayer.infer_top_shapes(json.dumps({"db": str(tmp_path / "bad"), "task": "seg"}))
    coord_db(tmp_path / "c", "color", n=1, L=4, H=16, W=20)
    with pytest.raises(ValueError, match=r"no label field"):
        ClipDataLayer.infer_top_shapes(json.dumps({"db": str(tmp_path / "c"), "task": "seg"}))
    with pytest.raises(ValueError, match=r"length 3 must divide"):
        ClipDataLayer.infer_top_shapes(json.dumps({"db": str(tmp_path / "c"), "task": "color", "length": 3}))
    with pytest.raises(ValueError, match=r"crop 32 is larger"):
        ClipDataLayer.infer_top_shapes(json.dumps({"db": str(tmp_path / "c"), "task": "color", "crop": 32}))
    with pytest.raises(ValueError, match=r"unknown key"):
        ClipDataLayer.infer_top_shapes(json.dumps({"db": str(tmp_path / "c"), "task": "color", "crops": 3}))


def test_read_clip_and_verify(tmp_path):
    from data_prep.db import ClipDB, read_clip
    man = coord_db(tmp_path / "db", "flow", n=2, L=4, H=16, W=20)
    r = read_clip(tmp_path / "db", 1)
    assert r["frames"].shape == (3, 4, 16, 20) and r["flow"].dtype == np.float32
    assert r["frames"][2, 0, 0, 0] == 50
    assert man["count"] == 2 and ClipDB(tmp_path / "db").verify() == []


def test_caffe_cli_trains_through_the_data_layer(tmp_path):
    """The embedded interpreter of the `caffe` binary runs the layer and its prefetch thread."""
    import subprocess

    from models.paths import REPO
    cli = REPO / ".venv" / "bin" / "caffe"
    if not cli.exists():
        pytest.skip("the caffe command is not built")
    coord_db(tmp_path / "db", "flow", n=3, L=4, H=16, W=20)
    p = {"db": str(tmp_path / "db"), "task": "flow", "crop": 8, "train": True, "mirror": True, "seed": 1}
    (tmp_path / "net.prototxt").write_text(
        data_net(tmp_path, p, "d.prototxt").read_text()
        + 'layer { name: "conv" type: "Convolution" bottom: "data" top: "pred" convolution_param {'
          ' num_output: 2 kernel_size: 1 kernel_size: 3 kernel_size: 3 pad: 0 pad: 1 pad: 1'
          ' weight_filler { type: "constant" value: 0 } } }\n'
          'layer { name: "fp" type: "Flatten" bottom: "pred" top: "fp" }\n'
          'layer { name: "fl" type: "Flatten" bottom: "label" top: "fl" }\n'
          'layer { name: "loss" type: "EuclideanLoss" bottom: "fp" bottom: "fl" top: "loss" }\n')
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path}/net.prototxt"\nbase_lr: 0\nlr_policy: "fixed"\nmax_iter: 4\ndisplay: 1\n'
        f'snapshot_prefix: "{tmp_path}/snap"\n')
    r = subprocess.run([str(cli), "train", "-solver", str(tmp_path / "solver.prototxt")],
                       capture_output=True, text=True, timeout=120, cwd="/",
                       env={**__import__("os").environ, "GLOG_minloglevel": "0"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    # zero prediction: loss = sum(label²)/2 over 2×4×8×8 targets, u = 1 + x/100 ∈ [1, 1.19],
    # v = 0.5 + y/100 ∈ [0.5, 0.65] → between 256·(1 + 0.25)/2 = 160 and 256·(1.42 + 0.43)/2 ≈ 237
    losses = [float(x) for x in __import__("re").findall(r"Iteration \d+, loss = ([0-9.e+-]+)", out)]
    assert len(losses) >= 4 and all(160 <= v <= 237 for v in losses)


def test_clip_source_without_caffe_from_a_plain_dict(tmp_path):
    """Tools (evaluation, torch) use the sampler directly with a prototxt's decoded params."""
    from data_prep.clips import ClipSource
    coord_db(tmp_path / "db", "flow", n=2, L=8, H=16, W=20)
    src = ClipSource({"db": str(tmp_path / "db"), "task": "flow", "crop": None, "length": 4,
                      "train": False, "flow_scale": 1.0, "prefetch": 0})
    assert (src.n, src.sub, src.length, src.h, src.w, src.ch, src.cw) == (4, 2, 4, 16, 20, 16, 20)
    x, y = src.clip(3, None)                                  # record 1, frames 4..7
    assert x.shape == (3, 4, 16, 20) and x[2, 0, 0, 0] == 10 * 4 + 50
    np.testing.assert_allclose(y[0], 1 + x[0] / 100, rtol=1e-6)
