"""tools.torch_run end to end, and the hint without torch. (Training with the torch engine,
DDP included, is tested through tools.train in test_train_tool.py.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch runtime tests need torch==2.13.0 (make setup-torch)")

REPO = Path(__file__).resolve().parent.parent


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
