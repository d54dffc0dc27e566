"""Data readers refuse what would pass silently into a database: NaN or absurd flow in .flo
files, a .bin whose bytes are another dtype, floating-point label images, and clips that
would be stitched across a missing label."""
from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
import pytest
from PIL import Image

from data_prep import db as cdb
from data_prep.c3dbin import BinError, read_c3d_bin, write_c3d_bin
from data_prep.flo import FloError, read_flo, write_flo
from data_prep.gatech import load_label, parse_label_map
from models import cli, validate
from tests.data_fixtures import run_tool


def _flo(tmp_path, value, at=(3, 5, 0)):
    f = np.zeros((30, 40, 2), np.float32)
    f[at] = value
    p = tmp_path / "f.flo"
    write_flo(p, f)
    raw = bytearray(p.read_bytes())        # write_flo stores NaN as unknown: put the value in by hand
    off = 12 + 4 * (2 * (at[0] * 40 + at[1]) + at[2])
    raw[off:off + 4] = np.array([value], "<f4").tobytes()
    p.write_bytes(bytes(raw))
    return p


@pytest.mark.parametrize("value,words", [(np.nan, "1 NaN/inf values"), (np.inf, "1 NaN/inf values"),
                                         (3e38, "1 values marked unknown"),
                                         (5e5, "1 values beyond ±400 px (largest 500000)")])
def test_flo_values_that_are_damage(tmp_path, value, words):
    p = _flo(tmp_path, value)
    with pytest.raises(FloError, match=re.escape(f"{p}: {words}")):
        read_flo(p)


def test_unknown_flow_where_the_reader_asks_for_it(tmp_path):
    g = read_flo(_flo(tmp_path, 1e10), unknown_as_nan=True)
    assert np.isnan(g[3, 5, 0]) and np.isfinite(g).sum() == g.size - 1


def test_bin_of_float32_asked_as_uint8(tmp_path):
    p = write_c3d_bin(tmp_path / "f.bin", np.zeros((1, 4, 2, 3, 5), np.float32))
    assert read_c3d_bin(p).dtype == np.float32                      # guessed from the size
    with pytest.raises(BinError, match=r"480 data bytes are float32 values for \(1, 4, 2, 3, 5\), expected uint8"):
        read_c3d_bin(p, np.uint8)
    p.write_bytes(p.read_bytes() + b"\0" * 7)
    with pytest.raises(BinError, match="7 bytes after the"):
        read_c3d_bin(p, np.float32)


def test_float_label_images_are_refused(tmp_path):
    p = tmp_path / "lab.tif"
    Image.fromarray(np.full((6, 8), 2.0, np.float32)).save(p)
    with pytest.raises(ValueError, match=r"holds floating-point values \(F\)"):
        load_label(p, parse_label_map(None), None)


def test_no_clip_spans_a_missing_label(tmp_path):
    from data_prep.synthetic import make_scene, write_gatech_like
    root = tmp_path / "g"
    write_gatech_like(root, {"train": [make_scene(np.random.default_rng(0), frames=40, height=48, width=64,
                                                  classes=8)]})
    (root / "train" / "video000" / "labels" / "000021.png").unlink()   # frame index 20
    run_tool("data_prep.gatech", "--root", root, "--split", "train", "--stride", "4", "--out", tmp_path / "db")
    starts = [r["start"] for r in cdb.manifest(tmp_path / "db")["records"]]
    assert starts == [0, 4, 21]           # frames 0..19, then 21..39: none of 8..20, 12..24, 16..28 (the gap)
    (root / "train" / "video000" / "labels" / "000031.png").unlink()   # now no 16 consecutive after 20
    r = run_tool("data_prep.gatech", "--root", root, "--split", "train", "--stride", "4", "--out", tmp_path / "db2",
                 check=False)
    assert [r["start"] for r in cdb.manifest(tmp_path / "db2")["records"]] == [0, 4]
    (root / "train" / "video000" / "labels" / "000011.png").unlink()
    r = run_tool("data_prep.gatech", "--root", root, "--split", "train", "--out", tmp_path / "db3", check=False)
    assert r.returncode != 0 and "no 16 consecutive labelled frames" in r.stderr


def test_unwritable_outputs_are_one_line(tmp_path):
    """A file where the output folder should be: one line naming it, exit 2 (models/cli.py, every tool)."""
    from tests.data_fixtures import coord_db
    coord_db(tmp_path / "db", "color", n=2, L=4, H=16, W=20)
    (tmp_path / "afile").write_text("x")
    r = run_tool("data_prep.mean", "--db", tmp_path / "db", "--out", tmp_path / "afile" / "m.npy", check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'afile'}: File exists"
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------ class ids the net does not predict
SEG_NET = """name: "seg"
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "data_prep.layers" layer: "ClipDataLayer" param_str: '{{"db": "{db}", "task": "seg"}}' }} }}
layer {{ name: "pred" type: "Convolution3D" bottom: "data" top: "pred"
  convolution3d_param {{ num_output: 8 kernel_size: 1 kernel_depth: 1 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "pred" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 }} softmax_param {{ axis: 1 }} }}
"""
SEG_DEPLOY = """name: "seg"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 16 dim: 16 } } }
layer { name: "pred" type: "Convolution3D" bottom: "data" top: "pred"
  convolution3d_param { num_output: 8 kernel_size: 1 kernel_depth: 1 } }
layer { name: "prob" type: "Softmax" bottom: "pred" top: "prob" softmax_param { axis: 1 } }
"""


@pytest.fixture
def seg_run(tmp_path):
    """seg_run(classes): a label database with ids 0..classes-1 (+ void) and the solver of an
    8-class net reading it; returns (db, net, solver)."""
    from tests.data_fixtures import coord_db

    def make(classes: int):
        db, net, solver = tmp_path / f"db{classes}", tmp_path / f"net{classes}.prototxt", tmp_path / "s.prototxt"
        coord_db(db, "seg", n=2, L=8, H=16, W=16, classes=classes)
        net.write_text(SEG_NET.format(db=db))
        solver.write_text(f'net: "{net}"\nbase_lr: 0.001\nlr_policy: "fixed"\nmax_iter: 1\n'
                          f'snapshot_prefix: "{tmp_path / "snap"}"\n')
        return db, net, solver
    return make


def label_error(db, net) -> str:
    return f"error: {db}: labels go up to 9 but the net {net} predicts 8 classes (0..7; 255 = void)"


@pytest.mark.parametrize("engine", ["caffe", pytest.param("torch", marks=pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="the torch engine needs torch"))])
def test_training_refuses_labels_beyond_the_classes(seg_run, tmp_path, capsys, engine):
    from tools.train import main
    db, net, solver = seg_run(10)
    assert cdb.manifest(db)["label_values"] == [*range(10), 255]
    assert main(["--solver", str(solver), "--out", str(tmp_path / "run"), "--engine", engine, "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == label_error(db, net)
    assert not list((tmp_path / "run" / "snapshots").iterdir())
    db, net, solver = seg_run(8)
    assert main(["--solver", str(solver), "--out", str(tmp_path / "ok"), "--engine", engine, "--quiet"]) == 0


def test_the_caffe_command_refuses_labels_beyond_the_classes(seg_run, tmp_path):
    """.venv/bin/caffe (train, time) checks the labels as tools.train does."""
    import subprocess

    from models.paths import REPO
    db, net, solver = seg_run(10)
    for args in (["train", "-solver", solver], ["time", "-model", net, "-iterations", "1"]):
        r = subprocess.run([REPO / ".venv" / "bin" / "caffe", *args], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == label_error(db, net), args
    db, net, solver = seg_run(8)
    r = subprocess.run([REPO / ".venv" / "bin" / "caffe", "train", "-solver", solver], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "snap_iter_1.caffemodel").is_file(), r.stderr[-2000:]


def test_a_manifest_without_label_values_is_scanned(seg_run, tmp_path, capsys):
    """Databases finalized before label_values existed: their records are read instead."""
    import json

    from tools.train import main
    db, net, solver = seg_run(10)
    man = json.loads((db / "manifest.json").read_text())
    del man["label_values"]
    (db / "manifest.json").write_text(json.dumps(man))
    assert main(["--solver", str(solver), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"note: {db}: its manifest.json predates label_values" in err
    assert err.strip().splitlines()[-1] == label_error(db, net)


def test_evaluation_refuses_labels_beyond_the_classes(seg_run, tmp_path, capsys, caffe):
    from tools.evaluate import main
    (tmp_path / "deploy.prototxt").write_text(SEG_DEPLOY)
    caffe.Net(str(tmp_path / "deploy.prototxt"), caffe.TEST).save(str(tmp_path / "w.caffemodel"))

    def evaluate(net):
        return main(["--deploy", str(tmp_path / "deploy.prototxt"), "--train-val", str(net), "--weights",
                     str(tmp_path / "w.caffemodel"), "--out", str(tmp_path / "eval"), "--pictures", "0"])
    db, net, _ = seg_run(10)
    assert evaluate(net) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == label_error(db, tmp_path / "deploy.prototxt")
    assert evaluate(seg_run(8)[1]) == 0


# ------------------------------------------------------------------ full disks: one line naming the path
def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    """/dev/full takes no byte (ENOSPC, raised without a file name by numpy's and Python's
    writes): the tool names the file it was writing."""
    from tests.data_fixtures import coord_db
    from tests.wire import v10_net
    coord_db(tmp_path / "db", "color", n=2, L=4, H=16, W=20)
    (tmp_path / "c3d").write_bytes(v10_net([("conv1a", 30, [np.ones((2, 3, 3, 3, 3), np.float32)])]))
    for f in ("m.npy", "w.caffemodel.part"):
        (tmp_path / f).symlink_to("/dev/full")
    for tool, args, written in [("data_prep.mean", ["--db", tmp_path / "db", "--out", tmp_path / "m.npy"], "m.npy"),
                                ("tools.convert_c3d", [tmp_path / "c3d", "--no-net", "-o", tmp_path / "w.caffemodel"],
                                 "w.caffemodel.part")]:
        r = run_tool(tool, *args, check=False)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
            f"error: {tmp_path / written}: No space left on device", r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(tmp_path):
    from data_prep.synthetic import make_scene, write_gatech_like
    from tests.data_fixtures import coord_db
    coord_db(tmp_path / "db", "color", n=2, L=4, H=16, W=20)
    root = write_gatech_like(tmp_path / "g", {"train": [make_scene(np.random.default_rng(0), frames=16, height=24,
                                                                   width=32, classes=8)]})
    ro = tmp_path / "ro"
    ro.mkdir(0o555)
    for tool, args, named in [("data_prep.mean", ["--db", tmp_path / "db", "--out", ro / "m.npy"], ro / "m.npy"),
                              ("data_prep.gatech", ["--root", root, "--split", "train", "--out", ro / "db"],
                               ro / "db")]:
        r = run_tool(tool, *args, check=False)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {named}: Permission denied", \
            r.stderr


def test_a_database_build_on_a_full_disk_names_data_mdb_and_resumes(tmp_path):
    """LMDB reports a failed write as its own error: one line naming data.mdb; the same command
    with room again finishes the build. (A file-size limit stands in for a full disk.)"""
    import subprocess
    import sys

    from data_prep.synthetic import make_scene, write_gatech_like
    from models.paths import REPO
    root = write_gatech_like(tmp_path / "g", {"train": [make_scene(np.random.default_rng(0), frames=16, height=24,
                                                                   width=32, classes=8)]})
    cmd = [sys.executable, "-m", "data_prep.gatech", "--root", str(root), "--split", "train", "--out",
           str(tmp_path / "db"), "--height", "24", "--width", "32"]
    r = subprocess.run(["bash", "-c", 'ulimit -f 60 && exec "$@"', "bash", *cmd], cwd=REPO, capture_output=True,
                       text=True)   # files of at most 60 KiB
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert last.startswith(f"error: {tmp_path / 'db' / 'data.mdb'}: mdb_") and "(a full or read-only disk?)" in last
    run_tool("data_prep.gatech", *cmd[3:])
    assert cdb.manifest(tmp_path / "db")["count"] == 1


def test_a_failed_write_names_the_run_or_evaluation_folder(seg_run, tmp_path, monkeypatch, capsys, caffe):
    """A write raising ENOSPC without a file name (as numpy, Pillow and LMDB do) inside
    tools.train and tools.evaluate: one line naming the run or evaluation folder."""
    import errno
    from pathlib import Path

    from tools import evaluate, train

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    db, net, solver = seg_run(8)
    monkeypatch.setattr(train, "plot_curve", full)
    assert train.main(["--solver", str(solver), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {tmp_path / 'run'}: No space left on device"
    (tmp_path / "deploy.prototxt").write_text(SEG_DEPLOY)
    caffe.Net(str(tmp_path / "deploy.prototxt"), caffe.TEST).save(str(tmp_path / "w.caffemodel"))
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(SystemExit) as e:
        cli.run(lambda: evaluate.main(["--deploy", str(tmp_path / "deploy.prototxt"), "--train-val", str(net),
                                       "--weights", str(tmp_path / "w.caffemodel"), "--out", str(tmp_path / "ev")]))
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {tmp_path / 'ev'}: No space left on device"


def test_caffe_snapshots_are_not_tried_without_room(seg_run, tmp_path, monkeypatch, capsys):
    """Caffe aborts when it cannot write a snapshot: tools.train stops before, with one line."""
    import shutil

    from tools import train
    _, _, solver = seg_run(8)
    monkeypatch.setattr(validate.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 0))
    assert train.main(["--solver", str(solver), "--out", str(tmp_path / "run"), "--quiet", "--snapshot", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {tmp_path / 'run' / 'snapshots'}: No space left on device for a snapshot"), err
    assert not list((tmp_path / "run" / "snapshots").iterdir())


def test_caffe_wrapper_checks_snapshot_room_first(seg_run, tmp_path, monkeypatch):
    """`caffe train` through the wrapper: no room for a snapshot is one OSError naming the
    snapshot folder (cli.run prints it as one line), before Caffe could abort on it."""
    import shutil

    from models import caffe_cli
    _, _, solver = seg_run(8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(validate.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 0))
    with pytest.raises(OSError) as e:
        caffe_cli.prepare(["train", "-solver", str(solver)])
    assert e.value.filename and "No space left on device for a snapshot" in cli.os_error(e.value)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert caffe_cli.prepare(["train", "-solver", str(solver)])[0] == "train"


# ------------------------------------------------------------------ found by an independent campaign
@pytest.mark.parametrize("args, flag", [
    (["tools.train", "--solver", "s.prototxt", "--log-every", "0"], "--log-every"),
    (["tools.predict", "--video", "v.avi", "--fps", "-5"], "--fps"),
    (["tools.evaluate", "--clips", "0"], "--clips"),
    (["data_prep.mean", "--db", "db", "--max-clips", "-1"], "--max-clips"),
    (["data_prep.sintel", "--root", "r", "--length", "0"], "--length"),
    (["data_prep.ucf101", "--task", "flow", "--root", "r", "--stride", "x"], "--stride")])
def test_counts_below_one_are_refused(args, flag, tmp_path):
    r = run_tool(*args, check=False)
    assert r.returncode == 2 and f"argument {flag}: must be a whole number >= 1" in r.stderr, r.stderr[-800:]


def test_outputs_that_are_not_files_are_refused(tmp_path):
    """Export's rename onto /dev/full would replace the device; np.save would add ".npy"."""
    from tests.data_fixtures import coord_db
    for bad, kind in (("/dev/null", "not a regular file"), (tmp_path, "a folder")):
        with pytest.raises(OSError) as e:
            cli.output_file(bad)
        assert cli.os_error(e.value) == f"error: {bad}: {kind}; name an output file"
    coord_db(tmp_path / "db", "color", n=2, L=4, H=16, W=20)
    r = run_tool("data_prep.mean", "--db", tmp_path / "db", "--out", tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.strip().endswith(f"error: {tmp_path}: Is a directory")
    run_tool("data_prep.mean", "--db", tmp_path / "db", "--out", tmp_path / "m.bin")
    assert np.load(tmp_path / "m.bin").shape[0] == 3 and not (tmp_path / "m.bin.npy").exists()


def test_a_sintel_sequence_with_a_missing_frame_is_not_stitched(tmp_path):
    from tests.data_fixtures import sintel_tree
    sintel_tree(tmp_path / "s", seqs=("alley_1", "bamboo_1"))
    (tmp_path / "s" / "training" / "clean" / "alley_1" / "frame_0007.png").unlink()
    r = run_tool("data_prep.sintel", "--root", tmp_path / "s", "--pass", "clean", "--no-folds", "--length", "8",
                 "--height", "16", "--width", "24", "--out", tmp_path / "db", check=False)
    assert "frame_0007.png is missing (frames 1..18); a clip would be stitched across the gap" in r.stderr
    assert [b["item"] for b in cdb.manifest(tmp_path / "db" / "clean")["bad"]] == ["alley_1"]


def test_caffe_refuses_an_unknown_command_and_a_cut_snapshot(tmp_path):
    import subprocess

    from models.paths import REPO
    caffe_bin = REPO / ".venv" / "bin" / "caffe"
    r = subprocess.run([caffe_bin, "frobnicate"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown caffe command 'frobnicate': use train, test, time, device_query"
    from tests.data_fixtures import coord_db
    coord_db(tmp_path / "db", "seg", n=2, L=8, H=16, W=16, classes=8)
    (tmp_path / "net.prototxt").write_text(SEG_NET.format(db=tmp_path / "db"))
    sol = tmp_path / "s.prototxt"
    sol.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.001\nlr_policy: "fixed"\nmax_iter: 2\n'
                   f'momentum: 0.9\nsnapshot: 1\nsnapshot_prefix: "{tmp_path / "snap"}"\n')
    assert subprocess.run([caffe_bin, "train", "-solver", sol], capture_output=True, cwd=tmp_path).returncode == 0
    state = tmp_path / "snap_iter_1.solverstate"
    state.write_bytes(state.read_bytes()[:-20])
    for snap in (state, tmp_path / "snap_iter_1.caffemodel"):
        r = subprocess.run([caffe_bin, "train", "-solver", sol, "-snapshot", snap], capture_output=True, text=True,
                           cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: -snapshot: {snap}"), \
            r.stderr[-1500:]


def test_non_finite_solver_fields_and_data_parameters_are_refused(seg_run, tmp_path):
    """Each of these trained to all-NaN weights, exit 0."""
    from data_prep.clips import ClipPrep, complete_params
    db, net, solver = seg_run(8)
    text = solver.read_text()
    solver.write_text(text + "weight_decay: inf\n")
    with pytest.raises(validate.ValidationError, match="weight_decay is inf: it must be a finite number"):
        validate.validate_solver_file(solver)
    with pytest.raises(ValueError, match="scale must be a finite number, got nan"):
        complete_params({"task": "seg", "scale": float("nan")})
    np.save(tmp_path / "nan_mean.npy", np.full(3, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"nan_mean.npy: 3 NaN/inf values"):
        ClipPrep(complete_params({"task": "seg", "mean": str(tmp_path / "nan_mean.npy")}), 8, (16, 16))


def test_merge_into_a_shard_binary_split_lists_and_foreign_tables_are_refused(tmp_path):
    from tests.data_fixtures import coord_db
    coord_db(tmp_path / "db", "color", n=2, L=4, H=16, W=20)
    r = run_tool("data_prep.db", "merge", tmp_path / "db", tmp_path / "db", check=False)
    assert r.returncode == 2
    assert r.stderr.strip().endswith(f"merge: the target {tmp_path / 'db'} is also one of the shards")
    assert cdb.manifest(tmp_path / "db")["count"] == 2
    (tmp_path / "list.txt").write_bytes(bytes(range(256)))
    r = run_tool("data_prep.ucf101", "--task", "color", "--root", tmp_path, "--list", tmp_path / "list.txt",
                 "--out", tmp_path / "u", check=False)
    assert r.returncode != 0 and r.stderr.strip() == f"error: split list {tmp_path / 'list.txt'} is not a text file"
    for name, text, why in (("a.json", "{not json", "not JSON"), ("b.json", "[1, 2]", "not a results.json"),
                            ("c.json", '{"foo": 1}', "not a results.json")):
        (tmp_path / name).write_text(text)
        r = run_tool("tools.evaluate", "--tables", tmp_path / name, check=False)
        assert r.returncode == 2 and r.stderr.strip().startswith(f"error: {tmp_path / name}: {why}"), r.stderr
