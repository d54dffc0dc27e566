"""The `caffe` command of .venv (wrapper + validator + real binary) and pycaffe's Net and
Solver on a small C3D-v1.1-dialect net; the validator's clear errors, one per case."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from models import validate
from models.paths import REPO
from tests.data_fixtures import TINY_DATA, TINY_NET

CAFFE = REPO / ".venv" / "bin" / "caffe"

@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "tiny_data.py").write_text(TINY_DATA)
    (tmp_path / "net.prototxt").write_text(TINY_NET)
    (tmp_path / "solver.prototxt").write_text(textwrap.dedent("""\
        net: "net.prototxt"
        base_lr: 0.05
        lr_policy: "step"
        gamma: 0.1
        stepsize: 1000
        momentum: 0.9
        weight_decay: 0.0005
        max_iter: 25
        display: 5
        snapshot: 25
        snapshot_prefix: "snaps/tiny"
        solver_mode: CPU
        random_seed: 1
        """))
    return tmp_path


def run_caffe(args, cwd, extra_path=None, env=None):
    env = {**os.environ, **(env or {})}
    env.pop("GLOG_minloglevel", None)
    if extra_path:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([str(CAFFE), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_caffe_cli_train_runs_and_lowers_loss(tiny):
    r = run_caffe(["train", "-solver", "solver.prototxt"], tiny, extra_path=tiny)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    losses = [float(line.rsplit("=", 1)[1].split()[0]) for line in out.splitlines()
              if "Iteration" in line and ", loss = " in line]
    assert len(losses) >= 5, out[-2000:]
    assert losses[-1] < 0.7 * losses[0], losses
    assert (tiny / "snaps" / "tiny_iter_25.caffemodel").exists()
    assert (tiny / "snaps" / "tiny_iter_25.solverstate").exists()


def test_caffe_cli_time_runs(tiny):
    r = run_caffe(["time", "-model", "net.prototxt", "-iterations", "2"], tiny, extra_path=tiny)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Average Forward pass" in out and "conv1a" in out and "deconv" in out


def test_pycaffe_net_and_solver_run_the_same_net(tiny, caffe, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny))
    monkeypatch.chdir(tiny)
    net = caffe.Net("net.prototxt", caffe.TRAIN)
    assert net.blobs["predict"].data.shape == (2, 4, 8, 16, 16)
    assert net.params["conv1a"][0].data.shape == (8, 3, 3, 3, 3)
    assert net.params["conv1a"][1].data.shape == (1, 1, 1, 1, 8)
    assert net.params["deconv"][0].data.shape == (8, 8, 4, 4, 4)
    validate.ensure_snapshot_dir(validate.validate_solver_file("solver.prototxt"))
    solver = caffe.SGDSolver("solver.prototxt")
    solver.step(1)
    first = float(solver.net.blobs["loss"].data)
    solver.step(20)
    assert float(solver.net.blobs["loss"].data) < 0.7 * first


# ------------------------------------------------------------------ validator errors
def net_with(layers: str) -> str:
    return ('layer { name: "data" type: "Input" top: "data" '
            'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 16 dim: 16 } } }\n' + layers)


CONV = ('layer {{ name: "c" type: "Convolution3D" bottom: "{b}" top: "c" convolution3d_param '
        '{{ num_output: 4 kernel_size: {k} kernel_depth: {kd} pad: 1 temporal_pad: 1 }} }}\n')

BAD_NETS = {
    "unknown_type": (net_with('layer { name: "c" type: "Convolution3d" bottom: "data" top: "c" }'),
                     "unknown layer type 'Convolution3d' (did you mean Convolution3D"),
    "missing_kernel_depth": (net_with('layer { name: "c" type: "Convolution3D" bottom: "data" top: "c" '
                                      'convolution3d_param { num_output: 4 kernel_size: 3 } }'),
                             "layer 'c' (Convolution3D): convolution3d_param.kernel_depth must be > 0"),
    "no_3d_param": (net_with('layer { name: "c" type: "Convolution3D" bottom: "data" top: "c" }'),
                    "needs convolution3d_param"),
    "stochastic_pool": (net_with('layer { name: "p" type: "Pooling3D" bottom: "data" top: "p" '
                                 'pooling3d_param { pool: STOCHASTIC kernel_size: 2 kernel_depth: 2 } }'),
                        "Pooling3D supports MAX and AVE only"),
    "kernel_too_big": (net_with(CONV.format(b="data", k=31, kd=3)),
                       "is too small for kernel 3×31×31"),
    "pool_bigger_than_input": (net_with('layer { name: "p" type: "Pooling3D" bottom: "data" top: "p" '
                                        'pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 9 } }'),
                               "smaller than kernel 9×2×2"),
    "bad_concat_size": (net_with(
        'layer { name: "p" type: "Pooling3D" bottom: "data" top: "p" pooling3d_param '
        '{ pool: MAX kernel_size: 3 kernel_depth: 2 stride: 3 temporal_stride: 2 } }\n'
        'layer { name: "cat" type: "Concat" bottom: "p" bottom: "data" top: "cat" }'),
        "V2V net needs clip length divisible by 8"),
    "4d_input": ('layer { name: "data" type: "Input" top: "data" input_param '
                 '{ shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }\n' + CONV.format(b="data", k=3, kd=3),
                 "needs a 5D input, got 1×3×16×16"),
    "dangling_bottom": (net_with(CONV.format(b="nothing", k=3, kd=3)),
                        "bottom 'nothing' is not produced"),
    "syntax": (net_with('layer { name: "c" type: "ReLU" bottom: "data" top: "c" '),
               "not a valid net prototxt"),
    "v1_syntax": ('layers { name: "c" type: RELU bottom: "data" top: "c" }', "`layers {}` (V1) syntax"),
    "python_module_missing": (net_with('layer { name: "py" type: "Python" bottom: "data" top: "y" '
                                       'python_param { module: "no_such_module_v2v" layer: "X" } }'),
                              "module 'no_such_module_v2v' cannot be imported"),
    "euclidean_5d": (net_with('layer { name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "data" top: "loss" }'),
                     "Flatten both first"),
    "pool_pad_too_big": (net_with('layer { name: "p" type: "Pooling3D" bottom: "data" top: "p" '
                                  'pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 pad: 2 } }'),
                         "pad must be smaller than the kernel"),
}


@pytest.mark.parametrize("case", sorted(BAD_NETS))
def test_bad_net_gets_clear_error_before_caffe(tmp_path, case):
    text, expected = BAD_NETS[case]
    p = tmp_path / "bad.prototxt"
    p.write_text(text)
    r = run_caffe(["time", "-model", str(p), "-iterations", "1"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-2000:]
    assert out.startswith("error: ") and str(p) in out, out
    assert expected in out, out
    assert "Check failed" not in out and "*** " not in out  # never a glog abort


def test_solver_naming_missing_net_hints_repo_root(tmp_path):
    s = tmp_path / "solver.prototxt"
    s.write_text('net: "prototxt/definitely_missing_net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n')
    r = run_caffe(["train", "-solver", str(s)], tmp_path)
    assert r.returncode == 2
    assert "definitely_missing_net.prototxt: net prototxt file not found" in r.stderr


def test_solver_missing_file(tmp_path):
    r = run_caffe(["train", "-solver", "nope_solver.prototxt"], tmp_path)
    assert r.returncode == 2 and "nope_solver.prototxt: solver prototxt file not found" in r.stderr


def test_missing_and_foreign_weights(tiny, caffe):
    r = run_caffe(["train", "-solver", "solver.prototxt", "-weights", "missing.caffemodel"], tiny,
                  extra_path=tiny)
    assert r.returncode == 2 and "missing.caffemodel: weights file not found" in r.stderr
    (tiny / "junk.caffemodel").write_bytes(os.urandom(2000))
    r = run_caffe(["train", "-solver", "solver.prototxt", "-weights", "junk.caffemodel"], tiny,
                  extra_path=tiny)
    assert r.returncode == 2 and "junk.caffemodel: " in r.stderr, r.stderr
    assert ("not a Caffe model" in r.stderr or "holds no layers" in r.stderr)


def test_weights_with_wrong_shape_and_foreign_names(tiny, caffe):
    pb2 = validate.pb2()
    model = pb2.NetParameter()
    layer = model.layer.add(name="conv1a", type="Convolution3D")
    for shape in [(8, 3, 3, 5, 5), (1, 1, 1, 1, 8)]:
        b = layer.blobs.add()
        b.shape.dim.extend(shape)
        b.data.extend(np.zeros(int(np.prod(shape)), np.float32))
    (tiny / "wrong.caffemodel").write_bytes(model.SerializeToString())
    r = run_caffe(["train", "-solver", "solver.prototxt", "-weights", "wrong.caffemodel"], tiny,
                  extra_path=tiny)
    assert r.returncode == 2
    assert "layer 'conv1a' blob 0 is 8×3×3×5×5 but net.prototxt expects 8×?×3×3×3" in r.stderr
    layer.name = "fc6"
    (tiny / "foreign.caffemodel").write_bytes(model.SerializeToString())
    r = run_caffe(["train", "-solver", "solver.prototxt", "-weights", "foreign.caffemodel"], tiny,
                  extra_path=tiny)
    assert r.returncode == 2 and "shares no layer name" in r.stderr


@pytest.mark.parametrize("size,ok", [((16, 112, 112), True), ((8, 32, 32), True),
                                     ((12, 112, 112), False), ((16, 100, 112), False)])
def test_v2v_input_size_rule(size, ok):
    if ok:
        validate.check_input_size(*size)
    else:
        with pytest.raises(validate.ValidationError, match="multiple of 8"):
            validate.check_input_size(*size)


def test_validate_module_cli_reports_ok(tiny):
    r = subprocess.run([sys.executable, "-m", "models.validate", "net.prototxt"], cwd=tiny,
                       env={**os.environ, "PYTHONPATH": str(tiny)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "net.prototxt: ok" in r.stdout


def test_caffe_cli_honours_v2v_runs_data_and_max_iter(tiny, tmp_path_factory):
    """The wrapper relocates runs/ (snapshots) and data/ (-weights) like our tools, and
    V2V_MAX_ITER caps a solver's max_iter; the solver file itself is left alone."""
    text = (tiny / "solver.prototxt").read_text().replace('"snaps/tiny"', '"runs/tiny/snapshots/tiny"')
    (tiny / "solver_runs.prototxt").write_text(text)
    runs, data = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("data")
    env = {"V2V_RUNS": str(runs), "V2V_MAX_ITER": "3"}
    r = run_caffe(["train", "-solver", "solver_runs.prototxt"], tiny, extra_path=tiny, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    snap = runs / "tiny" / "snapshots" / "tiny_iter_3.caffemodel"
    assert snap.exists() and not (tiny / "runs").exists()
    assert "max_iter: 25" in (tiny / "solver_runs.prototxt").read_text()
    (data / "c3d").mkdir()
    (data / "c3d" / "w.caffemodel").write_bytes(snap.read_bytes())
    env.update(V2V_DATA=str(data), V2V_MAX_ITER="1")
    r = run_caffe(["train", "-solver", "solver_runs.prototxt", "-weights", "data/c3d/w.caffemodel"],
                  tiny, extra_path=tiny, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = run_caffe(["train", "-solver", "solver_runs.prototxt"], tiny, extra_path=tiny,
                  env=dict(env, V2V_MAX_ITER="zero"))
    assert r.returncode == 2 and "V2V_MAX_ITER must be a positive integer" in r.stderr


def test_solver_without_lr_policy_is_refused(tmp_path):
    """Caffe aborts at the first step on an empty lr_policy; the validator says so first."""
    s = tmp_path / "solver.prototxt"
    s.write_text('net: "net.prototxt"\nbase_lr: 0.1\nmax_iter: 1\n')
    r = run_caffe(["train", "-solver", str(s)], tmp_path)
    assert r.returncode == 2 and "unknown lr_policy ''" in r.stderr


@pytest.mark.parametrize("field,message", [
    ('regularization_type: "L3"', "unknown regularization_type 'L3' (L1 or L2)"),
    ('type: "Adam"\nsolver_type: SGD', "sets both `type` and the old `solver_type`"),
    ("average_loss: 0", "average_loss must be > 0 (it is 0)"),
    ("iter_size: 0", "iter_size must be > 0 (it is 0)"),
    ("test_iter: 2\ntest_interval: 0", "sets test_iter with test_interval: 0"),
])
def test_solver_fields_caffe_would_abort_on(tiny, field, message):
    """Fields Caffe CHECKs at start (or, for iter_size 0, trains nothing with): one line, exit 2."""
    (tiny / "bad_solver.prototxt").write_text((tiny / "solver.prototxt").read_text() + field + "\n")
    r = run_caffe(["train", "-solver", "bad_solver.prototxt"], tiny, extra_path=tiny)
    assert r.returncode == 2 and f"bad_solver.prototxt: {message}" in r.stderr, r.stderr[-2000:]
    assert "Check failed" not in r.stderr


def test_snapshot_needs_a_prefix(tiny):
    text = "\n".join(x for x in (tiny / "solver.prototxt").read_text().splitlines() if "snapshot_prefix" not in x)
    (tiny / "bad_solver.prototxt").write_text(text + "\n")
    with pytest.raises(validate.ValidationError, match="sets `snapshot` but no `snapshot_prefix`"):
        validate.validate_solver_file(tiny / "bad_solver.prototxt", check_nets=False)
