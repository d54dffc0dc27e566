"""tools.export: deploy prototxt + caffemodel -> ONNX through the torch runtime (dynamo
exporter, opset 18, dynamic batch), checked with onnxruntime against Caffe's own forward.

Relative difference throughout: max |onnxruntime - Caffe| / max |Caffe| over an output blob
(tests.test_gpu.rel). Weights: He-scaled random values written by Caffe
(tests.test_gpu.he_weights; not all-zero, activations O(1) through the whole net). The CLI
runs as a user runs it: a subprocess started from another directory than the repo root.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.paths import PROTOTXT
from tests.test_gpu import he_weights, rel

NETS = ["seg_v2v", "flow_v2v", "color_v2v"]
FULL = "seg_v2v"       # exported at its deploy shape (16×112×112); the others at SMALL
SMALL = (8, 32, 32)
TOL = 1e-4


def export_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tools.export", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def deploy(key):
    return PROTOTXT / f"{key}_deploy.prototxt"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A directory that is not the repo root, the CLI's cwd."""
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def caffemodel(work, caffe):
    """caffemodel(key) -> (path, x, Caffe's outputs on x): He-scaled random weights for the
    net, written by Caffe, and Caffe's own forward of one random clip x (1,C,L,H,W) at the
    size the net is exported at (made once per net)."""
    made = {}

    def get(key):
        if key not in made:
            net = caffe.Net(str(deploy(key)), caffe.TEST)
            he_weights(net, NETS.index(key))
            path = work / f"{key}.caffemodel"
            net.save(str(path))
            shape = net.blobs["data"].data.shape           # the deploy net's own (1,C,16,112,112)
            x = np.random.default_rng(7).standard_normal(shape if key == FULL else (*shape[:2], *SMALL))
            if net.blobs["data"].data.shape != x.shape:
                net.blobs["data"].reshape(*x.shape)
                net.reshape()
            net.blobs["data"].data[...] = x
            made[key] = (path, x.astype(np.float32), {k: v.copy() for k, v in net.forward().items()})
        return made[key]
    return get


@pytest.fixture(scope="module")
def exported(work, caffemodel):
    """exported(key) -> (onnx path, clip size L,H,W, completed CLI run), made once per net."""
    made = {}

    def get(key):
        if key not in made:
            out = f"onnx/{key}.onnx"     # relative: written under the CLI's cwd
            args = ["--net", key, "--weights", caffemodel(key)[0].name, "--onnx", out]
            if key == FULL:   # the deploy shape; the test compares with Caffe, skip the CLI's own runs
                args += ["--check-clips", "0"]
            else:
                args += ["--shape", ",".join(map(str, SMALL))]
            r = export_cli(*args, cwd=work)
            assert r.returncode == 0, r.stdout + r.stderr
            made[key] = (work / out, caffemodel(key)[1].shape[2:], r)
        return made[key]
    return get


@pytest.mark.parametrize("key", NETS)
def test_onnxruntime_matches_caffe(caffemodel, exported, key):
    import onnx

    from tools.export import run_onnx
    path, size, r = exported(key)
    model = onnx.load(str(path), load_external_data=False)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    c = 1 if key.startswith("color") else 3
    assert inp.name == "data" and dims == ["batch", c, *size]
    assert key != FULL or size == (16, 112, 112)
    assert not path.with_name(path.name + ".data").exists()   # one self-contained file
    assert "opset 18" in r.stdout and "onnx.checker ok" in r.stdout
    assert ("max relative difference" in r.stdout) == (key != FULL), r.stdout

    _, x, ref = caffemodel(key)
    got = run_onnx(path, x[0])                     # one clip (C,L,H,W) -> (K,L,H,W)
    assert set(got) == set(ref)
    for k in ref:
        assert np.abs(ref[k]).max() > 0
        err = rel(ref[k][0], got[k])
        print(f"{key} {k} {x.shape}: max rel. difference onnxruntime vs Caffe {err:.2e}")
        assert err <= TOL, f"{key} {k}: onnxruntime vs Caffe {err:.2e} > {TOL}"


def test_batch_is_dynamic(exported):
    """A batch of 2 (and 3) in onnxruntime gives what the clips give one at a time."""
    from tools.export import onnx_session, run_onnx
    path, size, _ = exported("flow_v2v")
    sess = onnx_session(path)
    x = np.random.default_rng(3).standard_normal((3, 3, *size)).astype(np.float32)
    one = [run_onnx(sess, x[i:i + 1])["flow"] for i in range(3)]
    for n in (2, 3):
        batch = run_onnx(sess, x[:n])["flow"]
        assert batch.shape == (n, 2, *size)
        for i in range(n):
            assert rel(one[i][0], batch[i]) <= 1e-6
    assert rel(one[0], run_onnx(sess, x[0])["flow"][None]) == 0   # a clip without a batch axis


def test_export_onnx_api_as_the_demo_calls_it(tmp_path, caffe):
    """export_onnx + run_onnx in process, on a narrow flow net (as the demo trains) with a
    non-square clip: one clip (C,L,H,W) in, (2,L,H,W) out, equal to Caffe's."""
    from models.v2v import build
    from tools.export import export_onnx, run_onnx
    d = tmp_path / "flow_small_deploy.prototxt"
    d.write_text(build("flow_v2v", "deploy", input_shape=(1, 3, 8, 32, 48), width=16))
    net = caffe.Net(str(d), caffe.TEST)
    he_weights(net, 5)
    net.save(str(tmp_path / "w.caffemodel"))
    x = np.random.default_rng(1).standard_normal((3, 8, 32, 48)).astype(np.float32)
    net.blobs["data"].data[0] = x
    ref = net.forward()["flow"][0].copy()
    path = export_onnx(d, tmp_path / "w.caffemodel", tmp_path / "out" / "flow.onnx")
    assert path == tmp_path / "out" / "flow.onnx" and path.is_file()
    got = run_onnx(path, x)
    assert list(got) == ["flow"] and got["flow"].shape == (2, 8, 32, 48)
    assert rel(ref, got["flow"]) <= TOL
    with pytest.raises(OSError, match="a folder; name an output file"):   # a rename would replace it
        export_onnx(d, tmp_path / "w.caffemodel", tmp_path / "out")
    assert path.is_file()


def test_help_runs_from_anywhere_and_states_opset_and_batch():
    r = export_cli("--help", cwd="/")
    assert r.returncode == 0 and "usage: python -m tools.export" in r.stdout
    assert "opset 18" in r.stdout and "the batch N is dynamic" in r.stdout


def test_run_onnx_wrong_clip_names_the_file(exported):
    from tools.export import ExportError, run_onnx
    path, size, _ = exported("flow_v2v")
    with pytest.raises(ExportError, match=rf"{path.name}.*input 'data' is batch×3×8×32×32"):
        run_onnx(path, np.zeros((1, 3, 8, 16, 16), np.float32))


def test_weights_of_another_net_are_a_clear_error(work, caffemodel):
    seg = caffemodel("seg_v2v")[0]
    r = export_cli("--net", "flow_v2v", "--weights", seg, "--onnx", "onnx/wrong.onnx", cwd=work)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {seg}: layer 'conv_pre'"), r.stderr
    assert "flow_v2v_deploy.prototxt" in lines[0] and "Traceback" not in r.stderr
    assert not (work / "onnx" / "wrong.onnx").exists()


@pytest.mark.parametrize("args, says", [
    (["--net", "flow_v2v", "--weights", "missing.caffemodel"], "missing.caffemodel: weights file not found"),
    (["--net", "no_such_net", "--weights", "x.caffemodel"], "no_such_net_deploy.prototxt: no deploy net named"),
    (["--net", "missing_deploy.prototxt", "--weights", "x.caffemodel"],
     "missing_deploy.prototxt: net prototxt file not found"),
    (["--net", "flow_v2v", "--weights", "FLOW", "--shape", "7,32,32"], "--shape: clip size 7×32×32"),
])
def test_bad_input_is_one_line_and_exit_2(work, caffemodel, args, says):
    args = [str(caffemodel("flow_v2v")[0]) if a == "FLOW" else a for a in args]
    r = export_cli(*args, cwd=work)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
