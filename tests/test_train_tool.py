"""tools.train on a tiny 3D net: runs from another directory, lowers the loss, writes the
log and curve, resumes after a kill with the same loss curve, stops on NaN clearly."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from models.paths import REPO
from test_engine_cli import TINY_DATA, TINY_NET

SOLVER = """net: "{net}"
base_lr: {lr}
lr_policy: "step"
gamma: 0.5
stepsize: 10
momentum: 0.9
weight_decay: 0.0005
max_iter: {max_iter}
snapshot: {snap}
snapshot_prefix: "ignored/by/tools_train"
random_seed: 1
test_iter: 1
test_interval: 10
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    (tmp_path / "tiny_data.py").write_text(TINY_DATA)
    (tmp_path / "net.prototxt").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))

    def solver(name="solver", lr=0.05, max_iter=20, snap=10):
        p = tmp_path / f"{name}.prototxt"
        p.write_text(SOLVER.format(net=tmp_path / "net.prototxt", lr=lr, max_iter=max_iter, snap=snap))
        return p
    return tmp_path, solver


def rows(path):
    return list(csv.DictReader(open(path)))


def test_train_lowers_loss_and_writes_outputs(tiny):
    from tools.train import train
    d, solver = tiny
    s = train(solver(), out=d / "run", quiet=True)
    assert s["iter"] == 20 and not s["interrupted"]
    r = rows(d / "run" / "train_log.csv")
    assert [int(x["iter"]) for x in r] == list(range(20))
    assert float(r[-1]["loss"]) < 0.7 * float(r[0]["loss"])
    assert float(r[0]["lr"]) == 0.05 and float(r[15]["lr"]) == 0.025  # step policy
    assert (d / "run" / "curve.png").stat().st_size > 5000
    tests = rows(d / "run" / "test_log.csv")  # test passes use the trained weights
    assert [int(x["iter"]) for x in tests] == [10, 20]
    assert float(tests[-1]["loss"]) < 0.7 * float(r[0]["loss"])
    assert (d / "run" / "snapshots" / "solver_iter_20.caffemodel").exists()
    assert (d / "run" / "solver.prototxt").read_text().count(str(d / "net.prototxt")) == 1


def test_resume_continues_the_same_loss_curve(tiny):
    from tools.train import train
    d, solver = tiny
    train(solver("a"), out=d / "full", quiet=True)
    train(solver("b"), out=d / "split", max_iter=10, quiet=True)
    s = train(solver("b"), out=d / "split", quiet=True)  # resumes at 10, runs to 20
    assert s["iter"] == 20
    full = [float(x["loss"]) for x in rows(d / "full" / "train_log.csv")]
    split = [float(x["loss"]) for x in rows(d / "split" / "train_log.csv")]
    assert len(split) == 20
    assert split == pytest.approx(full, rel=1e-4)


def test_sigterm_snapshots_and_second_run_resumes(tiny):
    d, solver = tiny
    sp = solver(max_iter=400, snap=1000)
    env = {**os.environ, "PYTHONPATH": str(d)}
    cmd = [sys.executable, "-m", "tools.train", "--solver", str(sp), "--out", str(d / "k")]
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = d / "k" / "train_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 6):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    states = list((d / "k" / "snapshots").glob("*.solverstate"))
    assert len(states) == 1, out
    done = int(states[0].stem.rsplit("_", 1)[1])
    assert 5 <= done < 400
    r = subprocess.run(cmd + ["--max-iter", str(done + 3)], cwd=d, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed from" in r.stdout and f"at iteration {done}" in r.stdout
    assert [int(x["iter"]) for x in rows(log)] == list(range(done + 3))


def test_nan_loss_stops_with_clear_message(tiny):
    d, solver = tiny
    env = {**os.environ, "PYTHONPATH": str(d)}
    r = subprocess.run([sys.executable, "-m", "tools.train", "--solver", str(solver(lr=1e12)),
                        "--out", str(d / "nan")], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "error: loss is nan" in r.stderr.lower() and "Try a lower base_lr" in r.stderr


def test_missing_solver_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.train", "--solver", "no/such_solver.prototxt"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "such_solver.prototxt: solver prototxt file not found" in r.stderr


DB_NET = """
layer {{ name: "data" type: "Python" top: "data" top: "label" include {{ phase: TRAIN }}
  python_param {{ module: "data_prep.layers" layer: "ClipDataLayer"
    param_str: '{{"db": "{db}", "task": "flow", "crop": 12, "train": true, "mirror": true, "seed": 3}}' }} }}
layer {{ name: "conv" type: "Convolution3D" bottom: "data" top: "pred"
  convolution3d_param {{ num_output: 2 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1
    weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "fp" type: "Flatten" bottom: "pred" top: "fp" }}
layer {{ name: "fl" type: "Flatten" bottom: "label" top: "fl" }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "fp" bottom: "fl" top: "loss" }}
"""


def test_resume_with_random_crops_continues_the_data_stream(tmp_path):
    """ClipDataLayer with random crops and mirrors: 4 + 4 resumed iterations give the same
    losses as 8 straight ones (tools.train tells the layer where to continue)."""
    from data_fixtures import coord_db
    from tools.train import train
    coord_db(tmp_path / "db", task="flow", n=5, L=4, H=16, W=20)
    (tmp_path / "net.prototxt").write_text(DB_NET.format(db=tmp_path / "db"))
    sp = tmp_path / "s.prototxt"
    text = SOLVER.format(net=tmp_path / "net.prototxt", lr=1e-7, max_iter=8, snap=100)
    sp.write_text(text.replace("test_iter: 1\ntest_interval: 10\n", ""))  # TRAIN-only net
    train(sp, out=tmp_path / "full", quiet=True)
    train(sp, out=tmp_path / "split", max_iter=4, quiet=True)
    train(sp, out=tmp_path / "split", quiet=True)
    full = [float(x["loss"]) for x in rows(tmp_path / "full" / "train_log.csv")]
    split = [float(x["loss"]) for x in rows(tmp_path / "split" / "train_log.csv")]
    assert len(set(full)) > 4  # the clips really differ from step to step
    assert split == pytest.approx(full, rel=1e-5)
