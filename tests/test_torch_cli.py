"""tools.torch_train / tools.torch_run end to end: one process, and DDP with 2 CPU ranks
through torchrun (gloo); snapshots load in Caffe."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch runtime tests need torch==2.13.0 (make setup-torch)")

from test_torch_solver import DATA_LAYER, write_solver  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def env_with(path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def solver(tmp_path, monkeypatch):
    (tmp_path / "torch_solver_data.py").write_text(DATA_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield write_solver(tmp_path, "step", extra="display: 2")
    sys.modules.pop("torch_solver_data", None)


def test_torch_train_cli_writes_caffe_snapshot(solver, tmp_path, caffe):
    r = subprocess.run([sys.executable, "-m", "tools.torch_train", "--solver", str(solver),
                        "--max-iter", "4", "--device", "cpu", "--out", str(tmp_path / "out")],
                       cwd=REPO, env=env_with(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "iter 2 loss" in r.stdout
    model = tmp_path / "out" / "snap_iter_4.caffemodel"
    assert model.exists() and (tmp_path / "out" / "snap_iter_4.solverstate").exists()
    log = (tmp_path / "out" / "torch_train_log.csv").read_text().splitlines()
    assert log[0] == "iter,loss,smoothed_loss,lr" and len(log) == 5
    caffe.Net(str(tmp_path / "net.prototxt"), str(model), caffe.TEST)


def test_torch_train_ddp_two_cpu_ranks(solver, tmp_path):
    # --gpus 2 re-runs the command under torchrun (here 2 CPU ranks, gloo)
    r = subprocess.run([sys.executable, "-m", "tools.torch_train", "--solver", str(solver), "--gpus", "2",
                        "--max-iter", "3", "--device", "cpu", "--out", str(tmp_path / "ddp")],
                       cwd=REPO, env=env_with(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 ranks, weights in sync: max checksum difference 0" in r.stdout, r.stdout
    assert (tmp_path / "ddp" / "snap_iter_3.caffemodel").exists()


def test_torch_run_cli(tmp_path):
    net = REPO / "prototxt" / "flow_v2v_deploy.prototxt"
    if not net.exists():
        pytest.skip("no generated nets")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-m", "tools.torch_run", "--net", str(net), "--input",
                        str(tmp_path / "x.npy"), "--out", str(tmp_path / "o.npz"), "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = np.load(tmp_path / "o.npz")
    assert out["flow"].shape == (2, 2, 8, 16, 16)


def test_missing_solver_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.torch_train", "--solver", str(tmp_path / "nope.prototxt")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr


def test_bad_clip_size_is_a_clear_error(tmp_path):
    net = REPO / "prototxt" / "flow_v2v_deploy.prototxt"
    if not net.exists():
        pytest.skip("no generated nets")
    r = subprocess.run([sys.executable, "-m", "tools.torch_run", "--net", str(net), "--shape", "1,3,8,20,16"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "multiples of 16" in r.stderr, r.stderr


def test_without_torch_the_error_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import torch_runtime\nexcept ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "make setup-torch" in r.stdout and "torch==2.13.0" in r.stdout, r.stdout + r.stderr
