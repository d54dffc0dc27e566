"""C3D-v1.0 → our format: a caffemodel and a mean written here by hand in protobuf wire
format (tests/wire.py), converted, loaded by the real engine by name."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.c3d_convert import C3DFormatError, convert_mean, convert_model
from models.paths import PROTOTXT, REPO
from tests.wire import C3D_LAYERS, ld, v10_blob, v10_net, vi


C3D = C3D_LAYERS


@pytest.fixture(scope="module")
def c3d_model(tmp_path_factory):
    """A C3D-v1.0 sport1m-like model: C3D's names and shapes, random weights, pools and
    relus without blobs, and a (small) fc8."""
    rng = np.random.default_rng(5)
    weights, layers = {}, [("data", 32, [])]
    for name, cin, cout in C3D:
        w = rng.normal(0, 0.01, (cout, cin, 3, 3, 3)).astype(np.float32)
        b = rng.normal(0, 1, (1, 1, 1, 1, cout)).astype(np.float32)
        weights[name] = (w, b)
        layers += [(name, 30, [w, b]), ("relu" + name[4:], 18, [])]
        if name in ("conv1a", "conv2a", "conv3b", "conv4b", "conv5b"):
            layers.append(("pool" + name[4], 31, []))
    fc = rng.normal(size=(1, 1, 1, 10, 20)).astype(np.float32)
    layers += [("fc8", 14, [fc, np.ones((1, 1, 1, 1, 10), np.float32)]), ("loss", 21, [])]
    p = tmp_path_factory.mktemp("c3d") / "conv3d_deepnetA_sport1m_iter_1900000"
    p.write_bytes(v10_net(layers))
    return p, weights, fc


def test_round_trip_into_v2v_by_name(caffe, c3d_model, tmp_path):
    src, weights, _ = c3d_model
    out = tmp_path / "c3d.caffemodel"
    reports = convert_model(src, out, net=PROTOTXT / "seg_v2v_deploy.prototxt")
    by = {r.name: r for r in reports}
    assert [r.name for r in reports if r.action == "copied"] == [c[0] for c in C3D]
    assert by["fc8"].action == "skipped" and "fc8" in by["fc8"].note
    assert by["conv3a"].shapes == [(256, 128, 3, 3, 3), (1, 1, 1, 1, 256)]
    net = caffe.Net(str(PROTOTXT / "seg_v2v_deploy.prototxt"), str(out), caffe.TEST)
    for name, (w, b) in weights.items():
        np.testing.assert_array_equal(net.params[name][0].data, w)
        np.testing.assert_array_equal(net.params[name][1].data, b)
    # the validator accepts it for the paper's solver net
    from models.validate import load_net, validate_weights
    validate_weights(out, load_net(PROTOTXT / "seg_v2v_deploy.prototxt"), "seg_v2v_deploy")


def test_mismatched_layers_reported_and_left_out(caffe, c3d_model, tmp_path):
    """Colour nets take 1 gray channel: conv1a (64×3×…) does not fit and is left out."""
    src, weights, _ = c3d_model
    out = tmp_path / "c3d_gray.caffemodel"
    reports = convert_model(src, out, net=PROTOTXT / "color_v2v_deploy.prototxt")
    by = {r.name: r.action for r in reports}
    assert by["conv1a"] == "mismatched"
    assert all(by[c[0]] == "copied" for c in C3D[1:])
    net = caffe.Net(str(PROTOTXT / "color_v2v_deploy.prototxt"), str(out), caffe.TEST)
    np.testing.assert_array_equal(net.params["conv5b"][0].data, weights["conv5b"][0])


def test_without_net_and_keep_all(c3d_model, tmp_path):
    from models.engine import pb2
    src, _, fc = c3d_model
    out = tmp_path / "all.caffemodel"
    reports = convert_model(src, out, net=None, keep_all=True)
    assert sum(r.action == "copied" for r in reports) == 9
    m = pb2().NetParameter()
    m.ParseFromString(out.read_bytes())
    by = {layer.name: layer for layer in m.layer}
    assert by["conv1a"].type == "Convolution3D"
    assert tuple(by["fc8"].blobs[0].shape.dim) == (10, 20)
    assert tuple(by["fc8"].blobs[1].shape.dim) == (10,)
    np.testing.assert_array_equal(np.array(by["fc8"].blobs[0].data).reshape(10, 20), fc[0, 0, 0])


@pytest.mark.parametrize("shape", [(1, 3, 16, 128, 171), (1, 3, 16, 128, 128), (1, 1, 8, 32, 48)])
def test_mean_round_trip(tmp_path, shape):
    m = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    src = tmp_path / "mean.binaryproto"
    src.write_bytes(v10_blob(m))
    out = tmp_path / "mean.npy"
    got = convert_mean(src, out)
    assert got.shape == shape[1:]
    np.testing.assert_array_equal(np.load(out), m[0])


# --------------------------------------------------------------------------- refusals
def mainline_new_model(tmp_path):
    from models.engine import pb2
    m = pb2().NetParameter()
    layer = m.layer.add(name="conv1", type="Convolution")
    b = layer.blobs.add()
    b.shape.dim.extend([2, 1, 3, 3])
    b.data.extend([0.5] * 18)
    p = tmp_path / "new.caffemodel"
    p.write_bytes(m.SerializeToString())
    return p


def test_foreign_files_refused_clearly(tmp_path):
    with pytest.raises(C3DFormatError, match="new-format caffemodel"):
        convert_model(mainline_new_model(tmp_path), tmp_path / "o.caffemodel")
    # BVLC V1 caffemodel: `layers`, but 4D blobs with data in field 5
    blob4 = vi(1, 2) + vi(2, 1) + vi(3, 3) + vi(4, 3) + ld(5, np.zeros(18, "<f4").tobytes())
    v1 = tmp_path / "bvlc_v1.caffemodel"
    v1.write_bytes(ld(1, b"alexnet") + ld(2, ld(4, b"conv1") + vi(5, 4) + ld(6, blob4)))
    with pytest.raises(C3DFormatError, match="mainline BlobProto.*not C3D-v1.0"):
        convert_model(v1, tmp_path / "o.caffemodel")
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(bytes(range(7, 255)) * 3)
    with pytest.raises(C3DFormatError, match="not a Caffe model|not a C3D-v1.0"):
        convert_model(junk, tmp_path / "o.caffemodel")
    txt = tmp_path / "net.prototxt"
    txt.write_text('name: "x"\nlayer { name: "a" type: "ReLU" }\n')
    with pytest.raises(C3DFormatError):
        convert_model(txt, tmp_path / "o.caffemodel")
    with pytest.raises(C3DFormatError, match="not found"):
        convert_model(tmp_path / "missing", tmp_path / "o.caffemodel")
    assert not (tmp_path / "o.caffemodel").exists()


def test_foreign_mean_refused(tmp_path):
    from models.engine import pb2
    b = pb2().BlobProto(num=1, channels=3, height=4, width=5)
    b.data.extend([1.0] * 60)
    p = tmp_path / "imagenet_mean.binaryproto"
    p.write_bytes(b.SerializeToString())
    with pytest.raises(C3DFormatError, match="5D mean"):
        convert_mean(p, tmp_path / "m.npy")
    bad = tmp_path / "short.binaryproto"
    bad.write_bytes(vi(1, 1) + vi(2, 3) + vi(3, 16) + vi(4, 8) + vi(5, 8) + ld(6, np.zeros(5, "<f4").tobytes()))
    with pytest.raises(C3DFormatError, match="hold 3072 values but the data has 5"):
        convert_mean(bad, tmp_path / "m.npy")


def test_cli(c3d_model, tmp_path):
    src, _, _ = c3d_model
    mean = tmp_path / "sport1m_train16_128_mean.binaryproto"
    mean.write_bytes(v10_blob(np.ones((1, 3, 16, 128, 171), np.float32)))
    out, mout = tmp_path / "w.caffemodel", tmp_path / "m.npy"
    r = subprocess.run([sys.executable, "-m", "tools.convert_c3d", str(src), "--mean", str(mean),
                        "-o", str(out), "--mean-out", str(mout)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "copied     conv5b" in r.stdout and "8 layers copied, 1 skipped, 0 mismatched" in r.stdout
    assert "3×16×128×171" in r.stdout
    assert out.exists() and np.load(mout).shape == (3, 16, 128, 171)
    r = subprocess.run([sys.executable, "-m", "tools.convert_c3d", str(mainline_new_model(tmp_path)),
                        "-o", str(tmp_path / "x.caffemodel")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "new-format caffemodel" in r.stderr and "Traceback" not in r.stderr


def test_validator_points_unconverted_models_to_the_converter(c3d_model, tmp_path):
    from models.validate import ValidationError, load_net, validate_weights
    net = load_net(PROTOTXT / "seg_v2v_deploy.prototxt")
    with pytest.raises(ValidationError, match="convert_c3d"):
        validate_weights(c3d_model[0], net, "seg_v2v_deploy")
    with pytest.raises(ValidationError, match="not found"):
        validate_weights(tmp_path / "nope.caffemodel", net, "seg_v2v_deploy")
