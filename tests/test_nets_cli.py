"""The user's command form: `caffe train -solver <copy of prototxt/seg_solver.prototxt>
-weights data/c3d/c3d_sport1m.caffemodel` (C3D-v1.0 files converted by tools.convert_c3d into a
private $V2V_DATA), run from the repo root through
the .venv wrapper; the copied C3D weights are found in the trained net. Clear errors for
a missing or unconverted weights file."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from models.paths import PROTOTXT, REPO
from models.v2v import C3D_MEAN, C3D_WEIGHTS
from tests.data_fixtures import write_tiny_db
from tests.wire import c3d_v10_model, v10_blob

CAFFE = REPO / ".venv" / "bin" / "caffe"

def run_caffe(args, data):
    """The wrapper from the repo root, with data/ (databases, weights, mean) in ``data``."""
    env = {**os.environ, "V2V_DATA": str(data)}
    env.pop("GLOG_minloglevel", None)
    return subprocess.run([str(CAFFE), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A private data/ for the committed seg nets: tiny GATECH databases, and C3D's weights
    and mean converted by tools.convert_c3d to their default places, from C3D-v1.0 files
    written by hand. Returns (data folder, C3D-v1.0 model path, its conv weights)."""
    d = tmp_path_factory.mktemp("data")
    for split in ("train", "test"):
        write_tiny_db(d / "db" / "gatech" / split, "seg")
    src = tmp_path_factory.mktemp("c3d")
    weights = c3d_v10_model(src / "conv3d_deepnetA_sport1m_iter_1900000", np.random.default_rng(9))
    (src / "sport1m_train16_128_mean.binaryproto").write_bytes(
        v10_blob(np.full((1, 3, 16, 128, 171), 100, np.float32)))
    r = subprocess.run([sys.executable, "-m", "tools.convert_c3d", "conv3d_deepnetA_sport1m_iter_1900000",
                        "--mean", "sport1m_train16_128_mean.binaryproto"], cwd=src, capture_output=True,
                       text=True, env={**os.environ, "V2V_DATA": str(d)})
    assert r.returncode == 0, r.stderr
    assert (d / "c3d" / "c3d_sport1m.caffemodel").exists() and (d / C3D_MEAN.removeprefix("data/")).exists()
    return d, src / "conv3d_deepnetA_sport1m_iter_1900000", weights


def seg_solver_copy(tmp_path, max_iter=1):
    """prototxt/seg_solver.prototxt with only max_iter / snapshot changed."""
    s = (PROTOTXT / "seg_solver.prototxt").read_text()
    s = re.sub(r"max_iter: \d+", f"max_iter: {max_iter}", s)
    s = re.sub(r'snapshot_prefix: ".*"', f'snapshot_prefix: "{tmp_path}/snap/seg"', s)
    s = re.sub(r"snapshot: \d+", f"snapshot: {max_iter}", s)
    p = tmp_path / "seg_solver.prototxt"
    p.write_text(s)
    return p


@pytest.mark.slow
def test_user_command_trains_from_converted_c3d(caffe, data, tmp_path):
    d, _, weights = data
    solver = seg_solver_copy(tmp_path)
    r = run_caffe(["train", "-solver", str(solver), "-weights", C3D_WEIGHTS], d)
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


def test_missing_and_unconverted_weights_are_clear_errors(data, tmp_path):
    d, v10, _ = data
    solver = seg_solver_copy(tmp_path)
    r = run_caffe(["train", "-solver", str(solver), "-weights", str(tmp_path / "nope.caffemodel")], d)
    assert r.returncode != 0 and "not found" in r.stderr and "Check failed" not in r.stderr
    r = run_caffe(["train", "-solver", str(solver), "-weights", str(v10)], d)
    assert r.returncode != 0 and "convert_c3d" in r.stderr and "Check failed" not in r.stderr
