"""Three of engine/build_caffe.py's mends to the sdist, checked on the built engine:

- snapshots are written to ``<name>.part`` and renamed, so a snapshot file under its final
  name is always complete, even when the process is killed while writing it;
- a snapshot that cannot be written (a full disk mid-run) is an exception naming the file:
  pycaffe's RuntimeError, one "error:" line from the caffe tool and tools.train;
- the CPU Adam update is one pass (as the GPU kernel) and still Caffe's Adam: it matches
  Adam's formulas in NumPy step by step.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.paths import REPO

# ~84 MB of weights: a snapshot takes long enough to be seen (or killed) half written.
BIG_NET = """
name: "big"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4096 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 1 dim: 5120 } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc"
  inner_product_param { num_output: 5120 weight_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "y" top: "loss" }
"""

SNAPSHOT_CHILD = """
import sys
from models.engine import caffe
cf = caffe()
cf.set_mode_cpu()
solver = cf.get_solver(sys.argv[1])
solver.step(1)
print("ready", flush=True)
solver.snapshot()
print("done", flush=True)
"""


def write_solver(d: Path, net: str, **fields) -> Path:
    (d / "net.prototxt").write_text(net)
    body = {"net": f'"{d / "net.prototxt"}"', "base_lr": 0.01, "lr_policy": '"fixed"', "momentum": 0.9,
            "max_iter": 100, "snapshot_prefix": f'"{d / "snaps" / "big"}"', "solver_mode": "CPU",
            **fields}
    (d / "snaps").mkdir(exist_ok=True)
    (d / "solver.prototxt").write_text("".join(f"{k}: {v}\n" for k, v in body.items()))
    return d / "solver.prototxt"


def start_snapshot(d: Path) -> subprocess.Popen:
    sol = write_solver(d, BIG_NET)
    p = subprocess.Popen([sys.executable, "-c", SNAPSHOT_CHILD, str(sol)], cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert p.stdout.readline().strip() == "ready"
    return p


def sizes_while(p: subprocess.Popen, snaps: Path, until) -> dict[str, set[int]]:
    """The sizes seen of every file in ``snaps`` (polled) until ``until(seen)`` or ``p`` ends."""
    seen: dict[str, set[int]] = {}
    deadline = time.time() + 120
    while time.time() < deadline and not until(seen):
        for e in os.scandir(snaps):
            try:
                seen.setdefault(e.name, set()).add(e.stat().st_size)
            except FileNotFoundError:  # renamed between scandir and stat
                pass
        if p.poll() is not None:
            break
    return seen


def complete(path: Path) -> bool:
    from models.engine import pb2
    msg = pb2().NetParameter() if path.suffix == ".caffemodel" else pb2().SolverState()
    try:
        msg.ParseFromString(path.read_bytes())
    except Exception:  # noqa: BLE001 - a partial protobuf fails to parse in various ways
        return False
    if path.suffix != ".caffemodel":
        return True
    fc = [layer for layer in msg.layer if layer.name == "fc"]
    return len(fc) == 1 and len(fc[0].blobs[0].data) == 5120 * 4096


def test_snapshot_files_never_appear_half_written(tmp_path):
    p = start_snapshot(tmp_path)
    snaps = tmp_path / "snaps"
    seen = sizes_while(p, snaps, lambda s: False)
    assert p.wait(timeout=120) == 0
    final = {f.name: f.stat().st_size for f in snaps.iterdir()}
    assert set(final) == {"big_iter_1.caffemodel", "big_iter_1.solverstate"}
    for name, size in final.items():
        assert seen.get(name, {size}) == {size}, f"{name} was seen at {len(seen[name]) - 1} partial sizes"
        assert complete(snaps / name)
    assert any(n.endswith(".part") for n in seen), "the writer never used a temporary name"


def test_killed_snapshot_leaves_no_partial_file_under_its_name(tmp_path):
    p = start_snapshot(tmp_path)
    snaps = tmp_path / "snaps"
    sizes_while(p, snaps, lambda s: any(n.endswith(".part") and max(v) > 0 for n, v in s.items()))
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    names = sorted(f.name for f in snaps.iterdir())
    assert any(n.endswith(".part") for n in names), names
    for f in snaps.iterdir():
        if not f.name.endswith(".part"):
            assert complete(f), f"{f.name} is under its final name but incomplete"


SMALL_NET = """
name: "small"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 5 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "y" top: "loss" }
"""


def test_cpu_adam_is_adam(tmp_path, caffe):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    sol = write_solver(tmp_path, SMALL_NET, type='"Adam"', base_lr=lr, momentum=b1,
                       momentum2=b2, delta=eps)
    caffe.set_mode_cpu()
    s = caffe.get_solver(str(sol))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    s.net.blobs["x"].data[...], s.net.blobs["y"].data[...] = x, y
    w, b = (s.net.params["fc"][i].data.astype(np.float64) for i in (0, 1))
    m, v = [np.zeros_like(w), np.zeros_like(b)], [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, 6):
        d = (x @ w.T + b - y) / 4                      # EuclideanLoss: Σ(p − y)² / 2N
        params = [w, b]
        for i, g in enumerate((d.T @ x, d.sum(0))):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            params[i] = params[i] - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m[i] / (np.sqrt(v[i]) + eps)
        w, b = params
        s.step(1)
        np.testing.assert_allclose(s.net.params["fc"][0].data, w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(s.net.params["fc"][1].data, b, rtol=1e-5, atol=1e-7)


def unwritable_snapshot(d: Path, name: str) -> Path:
    """A folder where the writer's ``<name>.part`` goes: opening it fails (EISDIR), as a
    full disk or a vanished folder would fail the write."""
    (d / f"{name}.part").mkdir(parents=True)
    return d / f"{name}.part"


def test_a_failed_snapshot_write_is_an_exception_naming_the_file(tmp_path, caffe):
    (tmp_path / "net.prototxt").write_text(SMALL_NET)
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    part = unwritable_snapshot(tmp_path, "w.caffemodel")
    with pytest.raises(RuntimeError) as e:
        net.save(str(tmp_path / "w.caffemodel"))
    assert str(e.value) == f"cannot write {part}: Is a directory"
    assert not (tmp_path / "w.caffemodel").exists() and part.is_dir()  # what it did not open stays
    part.rmdir()
    net.save(str(tmp_path / "w.caffemodel"))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["net.prototxt", "w.caffemodel"]


def test_caffe_train_reports_a_failed_snapshot_in_one_line(tmp_path):
    """Mid-run (the wrapper's room check passed): Caffe's own writer fails; one line, exit 2."""
    sol = write_solver(tmp_path, SMALL_NET, max_iter=2, snapshot=1)
    part = unwritable_snapshot(tmp_path / "snaps", "big_iter_1.caffemodel")
    r = subprocess.run([REPO / ".venv" / "bin" / "caffe", "train", "-solver", sol], cwd=tmp_path,
                       capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == f"error: cannot write {part}: Is a directory"
    assert "Check failed" not in r.stderr and "terminate called" not in r.stderr


def test_tools_train_reports_a_failed_snapshot_in_one_line(tmp_path, capsys):
    from tools.train import main
    sol = write_solver(tmp_path, SMALL_NET, max_iter=1)
    part = unwritable_snapshot(tmp_path / "run" / "snapshots", "big_iter_1.caffemodel")
    assert main(["--solver", str(sol), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: cannot write {part}: Is a directory"


@pytest.mark.parametrize("text, rel", [("ADAM_CPU_NEW", "src/caffe/solvers/adam_solver.cpp"),
                                       ("ATOMIC_PROTO_WRITE", "src/caffe/util/io.cpp"),
                                       ("CAFFE_MAIN_CATCH_NEW", "tools/caffe.cpp")])
def test_the_built_engine_has_the_mend(text, rel):
    """The installed engine was built from the mended source (the tests above then test it)."""
    sys.path.insert(0, str(REPO / "engine"))
    import build_caffe
    from models.engine import engine_dir
    built = (Path(engine_dir()) / rel).read_text()
    missing = [line for line in getattr(build_caffe, text).splitlines() if line.strip() not in built]
    assert not missing, missing
