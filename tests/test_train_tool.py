"""tools.train, the one training front-end, on a tiny 3D net with both engines (pycaffe and
the PyTorch runtime) through the same command line: runs from another directory, lowers the
loss, writes the same files, resumes (after V2V_MAX_ITER or a SIGTERM) on the same loss
curve, stops on NaN with exit status 3."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from models.paths import PROTOTXT, REPO
from models.validate import load_solver
from tests.data_fixtures import TINY_DATA, TINY_NET, coord_db
from tools.train import main, net_name, train

SOLVER = """net: "{net}"
base_lr: {lr}
lr_policy: "step"
gamma: 0.5
stepsize: 10
momentum: 0.9
weight_decay: 0.0005
max_iter: {max_iter}
snapshot: {snap}
snapshot_prefix: "runs/tiny/snapshots/tiny"
random_seed: 1
test_iter: 1
test_interval: 10
"""

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="the torch engine needs torch==2.13.0 (make setup-torch)")
ENGINES = ["caffe", pytest.param("torch", marks=needs_torch)]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A folder with the tiny net, its data layer (importable) and solver(...) to write
    solvers; the current directory is another one."""
    (tmp_path / "tiny_data.py").write_text(TINY_DATA)
    (tmp_path / "net.prototxt").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("V2V_MAX_ITER", raising=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    def solver(name="solver", lr=0.05, max_iter=20, snap=10):
        p = tmp_path / f"{name}.prototxt"
        p.write_text(SOLVER.format(net=tmp_path / "net.prototxt", lr=lr, max_iter=max_iter, snap=snap))
        return p
    yield tmp_path, solver
    sys.modules.pop("tiny_data", None)


def rows(path):
    return list(csv.DictReader(open(path)))


def losses(path):
    return [float(x["loss"]) for x in rows(path)]


def train_cli(solver, out, engine, *extra):
    return main(["--solver", str(solver), "--out", str(out), "--engine", engine, "--quiet", *extra])


@pytest.mark.parametrize("engine", ENGINES)
def test_train_lowers_loss_and_writes_outputs(tiny, engine, caffe):
    d, solver = tiny
    assert train_cli(solver(), d / "run", engine) == 0
    run = d / "run"
    r = rows(run / "train_log.csv")
    assert list(r[0]) == ["iter", "loss", "lr", "seconds"]
    assert [int(x["iter"]) for x in r] == list(range(20))
    assert float(r[-1]["loss"]) < 0.7 * float(r[0]["loss"])
    assert float(r[0]["lr"]) == 0.05 and float(r[15]["lr"]) == 0.025  # step policy
    assert (run / "curve.png").stat().st_size > 5000
    tests = rows(run / "test_log.csv")  # test passes use the trained weights
    assert [int(x["iter"]) for x in tests] == [10, 20]
    assert float(tests[-1]["loss"]) < 0.7 * float(r[0]["loss"])
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        f"tiny_iter_{n}.{ext}" for n in (10, 20) for ext in ("caffemodel", "solverstate")]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights"] == str(run / "snapshots" / "tiny_iter_20.caffemodel") and summary["iter"] == 20
    assert (run / "solver.prototxt").read_text().count(str(d / "net.prototxt")) == 1
    caffe.Net(str(d / "net.prototxt"), summary["weights"], caffe.TEST)  # either engine's file loads


@pytest.mark.parametrize("first,second", [("caffe", "caffe"),
                                          pytest.param("torch", "torch", marks=needs_torch),
                                          pytest.param("caffe", "torch", marks=needs_torch)])
def test_resume_continues_the_same_loss_curve(tiny, monkeypatch, first, second):
    """V2V_MAX_ITER=10 stops a run at 10 (with a snapshot); the same command without it
    resumes there, with either engine, and the loss curve is the uninterrupted one."""
    d, solver = tiny
    sp = solver()
    assert train_cli(sp, d / "full", first) == 0
    monkeypatch.setenv("V2V_MAX_ITER", "10")
    assert train_cli(sp, d / "split", first) == 0
    assert [int(x["iter"]) for x in rows(d / "split" / "train_log.csv")] == list(range(10))
    monkeypatch.delenv("V2V_MAX_ITER")
    assert train_cli(sp, d / "split", second) == 0
    assert "resumed from" in (d / "split" / "train.log").read_text()
    split = losses(d / "split" / "train_log.csv")
    assert len(split) == 20
    # the same engine repeats itself; across engines, Caffe and torch arithmetic differ slightly
    assert split == pytest.approx(losses(d / "full" / "train_log.csv"), rel=1e-4 if first == second else 1e-3)


def test_sigterm_snapshots_and_second_run_resumes(tiny):
    """The stop on a signal is the front-end's, the same for both engines (the torch
    engine's resume is tested above)."""
    d, solver = tiny
    sp = solver(max_iter=100000, snap=100000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(d), str(REPO)])}
    cmd = [sys.executable, "-m", "tools.train", "--solver", str(sp), "--out", str(d / "k")]
    p = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = d / "k" / "train_log.csv"
    while p.poll() is None and (not log.exists() or len(log.read_text().splitlines()) < 6):
        time.sleep(0.1)  # waits on the log's rows (progress), not on a time
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 130, out
    states = list((d / "k" / "snapshots").glob("*.solverstate"))
    assert len(states) == 1, out
    done = int(states[0].stem.rsplit("_", 1)[1])
    assert done >= 5
    r = subprocess.run(cmd + ["--max-iter", str(done + 3)], cwd=d, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"at iteration {done}" in r.stdout
    assert [int(x["iter"]) for x in rows(log)] == list(range(done + 3))


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_loss_stops_with_clear_message(tiny, engine, capsys):
    d, solver = tiny
    assert train_cli(solver(lr=1e12), d / "nan", engine) == 3
    err = capsys.readouterr().err
    assert "error: loss is nan" in err.lower() and "Try a lower base_lr" in err
    assert not list((d / "nan" / "snapshots").glob("*.caffemodel"))  # no spoilt snapshot


def test_default_run_folder_and_iteration_cap(tiny):
    """The README way: no --out, V2V_MAX_ITER caps the solver's 20 iterations at 2; the
    run folder is the snapshot_prefix's net under $V2V_RUNS."""
    d, solver = tiny
    sp = solver()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(d), str(REPO)]), "V2V_RUNS": str(d / "runs"),
           "V2V_MAX_ITER": "2"}
    r = subprocess.run([sys.executable, "-m", "tools.train", "--solver", str(sp)], cwd=d, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(rows(d / "runs" / "tiny" / "train_log.csv")) == 2
    assert (d / "runs" / "tiny" / "snapshots" / "tiny_iter_2.caffemodel").exists()


def test_generated_solvers_name_their_run_folder():
    """runs/<net>/snapshots/<net>_iter_N: where `caffe train` from the repo root and
    tools.train (runs/<net> by default) both write."""
    for path in PROTOTXT.glob("*_solver.prototxt"):
        sp = load_solver(path)
        name = net_name(sp, path)
        assert sp.snapshot_prefix == f"runs/{name}/snapshots/{name}", path
    seg = PROTOTXT / "seg_solver.prototxt"
    assert net_name(load_solver(seg), seg) == "seg_v2v"


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    r = subprocess.run([sys.executable, "-m", "tools.train", "--solver", "no/such_solver.prototxt"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "such_solver.prototxt: solver prototxt file not found" in r.stderr
    with pytest.raises(SystemExit) as e:
        main(["--solver", "x.prototxt", "--gpus", "2"])
    assert e.value.code == 2 and "for --engine torch" in capsys.readouterr().err


@needs_torch
@pytest.mark.slow
def test_torch_engine_ddp_two_cpu_ranks(tiny):
    """--gpus 2 re-runs the command as 2 ranks through torchrun (here CPU ranks, gloo):
    rank 0 alone writes the log and snapshots; the replicas end identical."""
    d, solver = tiny
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(d), str(REPO)]), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "tools.train", "--solver", str(solver(max_iter=3)), "--engine",
                        "torch", "--gpus", "2", "--device", "cpu", "--out", str(d / "ddp")],
                       cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 ranks, weights in sync: max checksum difference 0" in r.stdout, r.stdout
    assert [int(x["iter"]) for x in rows(d / "ddp" / "train_log.csv")] == [0, 1, 2]
    assert (d / "ddp" / "snapshots" / "tiny_iter_3.caffemodel").exists()


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
    coord_db(tmp_path / "db", task="flow", n=5, L=4, H=16, W=20)
    (tmp_path / "net.prototxt").write_text(DB_NET.format(db=tmp_path / "db"))
    sp = tmp_path / "s.prototxt"
    text = SOLVER.format(net=tmp_path / "net.prototxt", lr=1e-7, max_iter=8, snap=100)
    sp.write_text(text.replace("test_iter: 1\ntest_interval: 10\n", ""))  # TRAIN-only net
    train(sp, out=tmp_path / "full", quiet=True)
    train(sp, out=tmp_path / "split", max_iter=4, quiet=True)
    train(sp, out=tmp_path / "split", quiet=True)
    full = losses(tmp_path / "full" / "train_log.csv")
    split = losses(tmp_path / "split" / "train_log.csv")
    assert len(set(full)) > 4  # the clips really differ from step to step
    assert split == pytest.approx(full, rel=1e-5)


def test_one_run_per_folder(tiny, capsys):
    """A second training into a folder another process trains in is refused before it
    writes anything there (two runs used to interleave one log)."""
    d, solver = tiny
    out = d / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from models.lock import hold;"
                               f"h = hold({str(out)!r}, 'run folder'); print('ready', flush=True); sys.stdin.read()"],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert train_cli(solver(), out, "caffe") == 2
        assert f"{out}: pid {holder.pid} on " in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".writer.lock"]
    finally:
        holder.kill()
        holder.wait()
    assert train_cli(solver(max_iter=2), out, "caffe") == 0       # the lock died with its holder


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("damage", ["caffemodel cut short", "solverstate cut short"])
def test_resume_skips_a_damaged_newest_snapshot(tiny, engine, damage):
    """A kill or a full disk while a snapshot is written leaves a partial file: the next
    run names it, skips it and resumes from the newest complete snapshot."""
    d, solver = tiny
    assert train_cli(solver(max_iter=20, snap=10), d / "run", engine) == 0
    f = d / "run" / "snapshots" / f"tiny_iter_20.{damage.split()[0]}"
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) * 2 // 3])
    assert train_cli(solver(max_iter=30, snap=10), d / "run", engine) == 0
    log = (d / "run" / "train.log").read_text()
    assert "warning: skipping snapshot tiny_iter_20.solverstate" in log
    assert f"resumed from {d / 'run' / 'snapshots' / 'tiny_iter_10.solverstate'} at iteration 10" in log
    assert json.loads((d / "run" / "summary.json").read_text())["iter"] == 30


def test_a_moved_run_folder_resumes(tiny):
    """Caffe's .solverstate names its .caffemodel by absolute path; resume uses the one
    beside it, so a run folder can be moved or copied (e.g. off a cluster's scratch)."""
    d, solver = tiny
    assert train_cli(solver(max_iter=10, snap=10), d / "here", "caffe") == 0
    (d / "here").rename(d / "there")
    assert train_cli(solver(max_iter=20, snap=10), d / "there", "caffe") == 0
    assert "resumed from" in (d / "there" / "train.log").read_text()
    assert [p.name for p in (d / "there" / "snapshots").glob(".*")] == []


def test_hdf5_snapshots_are_refused_up_front(tiny, capsys):
    """tools.train resumes from binary .solverstate files; an HDF5 run would start over."""
    d, solver = tiny
    sp = solver()
    sp.write_text(sp.read_text() + "snapshot_format: HDF5\n")
    assert train_cli(sp, d / "run", "caffe") == 2
    assert "snapshot_format: HDF5: tools.train writes and resumes Caffe's binary" in capsys.readouterr().err
    assert not (d / "run").exists()
