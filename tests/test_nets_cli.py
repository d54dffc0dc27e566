"""The user's command form: `caffe train -solver <copy of prototxt/seg_solver.prototxt>
-weights <C3D-v1.0 model converted by tools.convert_c3d>`, run from the repo root through
the .venv wrapper; the copied C3D weights are found in the trained net. Clear errors for
a missing or unconverted weights file."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from models.paths import PROTOTXT, REPO
from models.v2v import C3D_MEAN
from tests.wire import c3d_v10_model, v10_blob

CAFFE = REPO / ".venv" / "bin" / "caffe"

def run_caffe(args):
    env = dict(os.environ)
    env.pop("GLOG_minloglevel", None)
    return subprocess.run([str(CAFFE), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("c3d")
    weights = c3d_v10_model(d / "conv3d_deepnetA_sport1m_iter_1900000", np.random.default_rng(9))
    r = subprocess.run([sys.executable, "-m", "tools.convert_c3d", str(d / "conv3d_deepnetA_sport1m_iter_1900000"),
                        "-o", str(d / "c3d.caffemodel")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d, weights


def _made(path, make):
    """Create ``path`` with ``make(path)`` unless it exists; return what to remove after
    (the top-most folder we created), or None when the path was already there."""
    if path.exists():
        return None
    top = path
    while not top.parent.exists():
        top = top.parent
    make(path)
    return top


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    """GATECH databases and the C3D mean at the default locations the committed nets read
    (data/db/gatech/{train,test}, data/c3d/...mean.npy). Real ones are used as they are;
    missing ones are made tiny here (the mean through tools.convert_c3d from a C3D-v1.0
    binaryproto) and removed afterwards."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_nets import write_tiny_db
    created = []
    for split in ("train", "test"):
        created.append(_made(REPO / "data" / "db" / "gatech" / split, lambda p: write_tiny_db(p, "seg")))

    def mean(p):
        src = tmp_path_factory.mktemp("mean") / "sport1m_train16_128_mean.binaryproto"
        src.write_bytes(v10_blob(np.full((1, 3, 16, 128, 171), 100, np.float32)))
        r = subprocess.run([sys.executable, "-m", "tools.convert_c3d", "--mean", str(src)],
                           cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0 and p.exists(), r.stderr
    created.append(_made(REPO / C3D_MEAN, mean))
    yield created
    for top in reversed(created):
        if top is not None and top.exists():
            shutil.rmtree(top) if top.is_dir() else top.unlink()


def seg_solver_copy(tmp_path, max_iter=1):
    """prototxt/seg_solver.prototxt with only max_iter / snapshot changed."""
    s = (PROTOTXT / "seg_solver.prototxt").read_text()
    s = re.sub(r"max_iter: \d+", f"max_iter: {max_iter}", s)
    s = re.sub(r'snapshot_prefix: ".*"', f'snapshot_prefix: "{tmp_path}/snap/seg"', s)
    s = re.sub(r"snapshot: \d+", f"snapshot: {max_iter}", s)
    p = tmp_path / "seg_solver.prototxt"
    p.write_text(s)
    return p


def test_user_command_trains_from_converted_c3d(caffe, converted, default_data, tmp_path):
    d, weights = converted
    solver = seg_solver_copy(tmp_path)
    r = run_caffe(["train", "-solver", str(solver), "-weights", str(d / "c3d.caffemodel")])
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"Iteration 0.*loss = [0-9.]+", out), out[-2000:]
    assert "Finetuning from" in out, out[-2000:]
    snap = tmp_path / "snap" / "seg_iter_1.caffemodel"
    assert snap.exists()
    net = caffe.Net(str(PROTOTXT / "seg_v2v_deploy.prototxt"), str(snap), caffe.TEST)
    for name, w in weights.items():
        got = net.params[name][0].data
        # one SGD step at lr 1e-4 from the copied C3D weights: still those weights
        assert np.corrcoef(got.ravel(), w.ravel())[0, 1] > 0.999, name
        assert np.abs(got - w).max() < 1e-3, name
    assert not np.allclose(net.params["deconv5"][0].data, 0)


def test_missing_and_unconverted_weights_are_clear_errors(converted, default_data, tmp_path):
    d, _ = converted
    solver = seg_solver_copy(tmp_path)
    r = run_caffe(["train", "-solver", str(solver), "-weights", str(tmp_path / "nope.caffemodel")])
    assert r.returncode != 0 and "not found" in r.stderr and "Check failed" not in r.stderr
    r = run_caffe(["train", "-solver", str(solver), "-weights",
                   str(d / "conv3d_deepnetA_sport1m_iter_1900000")])
    assert r.returncode != 0 and "convert_c3d" in r.stderr and "Check failed" not in r.stderr
