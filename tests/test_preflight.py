"""The catch-all behind the validator (models/preflight.py): what Caffe would abort on gets
one line naming the file, the layer and the failed check in words — through the caffe
wrapper, tools.train and tools.predict — never a glog abort or a "Check failed" line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from models import preflight
from models.paths import REPO
from tests.data_fixtures import TINY_DATA, TINY_NET

CAFFE = REPO / ".venv" / "bin" / "caffe"
DEPLOY = """name: "d"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 16 dim: 16 } } }
layer { name: "conv" type: "Convolution3D" bottom: "data" top: "conv"
  convolution3d_param { num_output: 4 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }
layer { name: "flat" type: "Reshape" bottom: "conv" top: "flat" reshape_param { shape { dim: 1 dim: 4 dim: -1 } } }
"""
# (what is appended to DEPLOY, the layer named in the error, words from Caffe's message).
# The validator passes each of these (its layer rules do not cover these types' fields).
CASES = [
    ('layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" softmax_param { axis: 7 } }',
     "prob", "axis 7 out of range for 5-D Blob"),
    ('layer { name: "am" type: "ArgMax" bottom: "flat" top: "am" argmax_param { top_k: 9 axis: 1 } }',
     "am", "top_k must be less than or equal to the dimension of the axis"),
    ('layer { name: "sl" type: "Slice" bottom: "flat" top: "a" top: "b" slice_param { axis: 1 slice_point: 9 } }',
     "sl", "requires"),
]


def caffe_time(model, cwd):
    env = {**os.environ}
    env.pop("GLOG_minloglevel", None)
    return subprocess.run([str(CAFFE), "time", "-model", str(model), "-iterations", "1"], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("extra,layer,words", CASES, ids=[c[1] for c in CASES])
def test_caffe_wrapper_turns_aborts_into_one_line(tmp_path, extra, layer, words):
    net = tmp_path / "bad.prototxt"
    net.write_text(DEPLOY + extra + "\n")
    r = caffe_time(net, tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {net}: Caffe cannot set up layer '{layer}' ("), r.stderr
    assert words in lines[0] and "Check failed" not in r.stderr


def test_a_good_net_passes_and_runs(tmp_path):
    net = tmp_path / "good.prototxt"
    net.write_text(DEPLOY)
    preflight.net(net)
    r = caffe_time(net, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


def test_weights_caffe_cannot_copy(tmp_path, caffe):
    """Weights whose blob shapes fit the net's layer by count but not by shape."""
    net = tmp_path / "good.prototxt"
    net.write_text(DEPLOY)
    other = tmp_path / "other.prototxt"
    other.write_text(DEPLOY.replace("num_output: 4", "num_output: 2"))
    caffe.Net(str(other), caffe.TEST).save(str(tmp_path / "w.caffemodel"))
    with pytest.raises(preflight.PreflightError, match=r"w.caffemodel: Caffe cannot copy these weights into"):
        preflight.net(net, "TEST", [tmp_path / "w.caffemodel"])


def test_tools_train_reports_the_layer(tmp_path):
    """A train net the validator cannot fully check (its Python data layer has no shape
    inference) with a concat of mismatched blobs: tools.train stops with the layer's name,
    exit 2, before Caffe aborts."""
    (tmp_path / "tiny_data.py").write_text(TINY_DATA)
    wide = TINY_NET.replace("kernel_size: 4 kernel_depth: 4", "kernel_size: 40 kernel_depth: 4")  # deconv too wide
    (tmp_path / "net.prototxt").write_text(wide)
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                                              "max_iter: 2\n")
    r = subprocess.run([sys.executable, "-m", "tools.train", "--solver", str(tmp_path / "solver.prototxt"),
                        "--out", str(tmp_path / "run"), "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Caffe cannot set up layer 'concat' (Concat): requires" in r.stderr, r.stderr[-3000:]
    assert "All inputs must have the same shape" in r.stderr and "Check failed" not in r.stderr


def test_explain_words():
    log = ("WARNING: Logging before InitGoogleLogging() is written to STDERR\n"
           "F20261202 04:27:48.341583 10587 blob.hpp:122] Check failed: axis_index < num_axes() (7 vs. 5) "
           "axis 7 out of range\n*** Check failure stack trace: ***\n")
    assert preflight.explain(log, 6, "n.prototxt", "'prob' (Softmax)") == (
        "n.prototxt: Caffe cannot set up layer 'prob' (Softmax): requires `axis_index < num_axes()` (7 vs. 5): "
        "axis 7 out of range [blob.hpp:122]")
    crashed = preflight.explain("", 11, "n.prototxt", None)
    assert crashed == "n.prototxt: Caffe cannot set up the net: it crashed (SIGSEGV)"
