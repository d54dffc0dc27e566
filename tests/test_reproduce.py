"""Every paper row's own commands, as the README gives them — data tool → train → evaluate —
for one iteration on a tiny dataset laid out exactly like the real downloads, with the
committed prototxt/ files at their real size (16×112×112 clips).

The data go to a temporary $V2V_DATA (prototxt paths data/... resolve there), so the
repo's data/ is never touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.paths import REPO
from test_data_build import _sintel_tree
from test_nets_cli import c3d_v10_model, v10_blob

FRAMES = 17  # one 16-frame clip (+1 frame for the 16th flow)


def run(env, *args, timeout=600):
    r = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"python -m {' '.join(map(str, args))}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Downloads laid out like the real ones, the databases built by the README's
    commands, and converted C3D weights and mean, under a private V2V_DATA."""
    from data_prep.synthetic import make_scene, write_gatech_like, write_video
    base = tmp_path_factory.mktemp("reproduce")
    env = {**os.environ, "V2V_DATA": str(base / "data"), "V2V_RUNS": str(base / "runs")}
    rng = np.random.default_rng(0)
    raw = base / "downloads"
    # GATECH: <root>/<split>/<video>/{frames,labels}/*.png, labels 0..7
    write_gatech_like(raw / "gatech", {
        split: [make_scene(rng, frames=FRAMES if split == "train" else 16, height=64, width=86,
                           classes=8, objects=4)] for split in ("train", "test")})
    # UCF101: <root>/<Class>/v_<Class>_gXX_cYY.avi + ucfTrainTestlist/{train,test}list01.txt
    for split, g in (("train", 8), ("test", 1)):
        s = make_scene(rng, frames=FRAMES, height=120, width=160)
        write_video(raw / "UCF-101" / "ApplyEyeMakeup" / f"v_ApplyEyeMakeup_g{g:02d}_c01.avi", s.frames)
    (raw / "ucfTrainTestlist").mkdir()
    (raw / "ucfTrainTestlist" / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
    (raw / "ucfTrainTestlist" / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    # MPI-Sintel: training/{clean,final,flow}/<seq>/frame_%04d.{png,flo}
    _sintel_tree(raw / "MPI-Sintel-complete", seqs=("alley_1", "bamboo_1", "cave_2"), frames=FRAMES,
                 h=48, w=64)
    # C3D-v1.0 model and mean, converted as the README says
    c3d_v10_model(raw / "conv3d_deepnetA_sport1m_iter_1900000", np.random.default_rng(1))
    (raw / "sport1m_train16_128_mean.binaryproto").write_bytes(
        v10_blob(np.full((1, 3, 16, 128, 171), 100, np.float32)))

    for split in ("train", "test"):
        run(env, "data_prep.gatech", "--root", raw / "gatech", "--split", split)
        for task in ("flow", "color"):
            run(env, "data_prep.ucf101", "--task", task, "--root", raw / "UCF-101",
                "--splits", raw / "ucfTrainTestlist", "--split", split)
    run(env, "data_prep.sintel", "--root", raw / "MPI-Sintel-complete")
    run(env, "tools.convert_c3d", raw / "conv3d_deepnetA_sport1m_iter_1900000",
        "--mean", raw / "sport1m_train16_128_mean.binaryproto")
    for p in ("db/gatech/train", "db/gatech/test", "db/ucf101_flow/train", "db/ucf101_color/test",
              "db/sintel/final", "db/sintel/final_fold0_train", "c3d/c3d_sport1m.caffemodel",
              "c3d/sport1m_train16_128_mean.npy"):
        assert (base / "data" / p).exists(), p
    return env, base


C3D = "data/c3d/c3d_sport1m.caffemodel"
ROWS = [  # (net, solver, fine-tuned from C3D)
    ("seg_v2v", "seg_solver", True),
    ("seg_v2v_release", "seg_v2v_release_solver", True),
    ("seg_v2v_0", "seg_v2v_0_solver", False),
    ("seg_v2v_remove_skip", "seg_v2v_remove_skip_solver", True),
    ("seg_v2v_remove_skip_0", "seg_v2v_remove_skip_0_solver", False),
    ("seg_conv3b_up", "seg_conv3b_up_solver", True),
    ("seg_conv4b_up", "seg_conv4b_up_solver", True),
    ("seg_conv5b_up", "seg_conv5b_up_solver", True),
    ("seg_2d_v2v", "seg_2d_v2v_solver", False),
    ("flow_v2v", "flow_solver", False),
    ("flow_v2v_release", "flow_v2v_release_solver", False),
    ("color_v2v", "color_solver", False),
    ("color_2d_v2v", "color_2d_v2v_solver", False),
]


def train_and_eval(env, base, net, solver, weights=None):
    out = base / "runs" / net
    args = ["tools.train", "--solver", f"prototxt/{solver}.prototxt", "--max-iter", "1", "--out", out]
    if weights:
        args += ["--weights", weights]
    log = run(env, *args)
    if weights == C3D:
        assert "copied" in log and "conv1a" in log  # (convNb+Up nets stop before conv5b)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iter"] == 1 and np.isfinite(summary["final_loss"])
    run(env, "tools.evaluate", "--net", net, "--weights", summary["weights"], "--clips", "1",
        "--out", base / "eval" / net, "--pictures", "1")
    return summary, json.loads((base / "eval" / net / "results.json").read_text())


@pytest.mark.parametrize("net,solver,finetune", ROWS, ids=[r[0] for r in ROWS])
def test_paper_row_commands(world, net, solver, finetune):
    env, base = world
    summary, res = train_and_eval(env, base, net, solver, C3D if finetune else None)
    assert res["clips"] == 1 and res["protocol"] == "release"
    if res["task"] == "seg":
        assert 0 <= res["pixel_accuracy"] <= 100 and res["scored_voxels"] > 0
    elif res["task"] == "flow":
        assert np.isfinite(res["epe"]) and res["truth"].startswith("Brox")
    else:
        assert np.isfinite(res["ade"]) and res["ade"] >= 0
    assert any(p.endswith(".png") for p in res["pictures"])


def test_sintel_rows(world):
    """Table 2 on Sintel: V2V (UCF101 model) on Sintel, the Brox teacher's own row, and the
    3-fold fine-tuning (fold 0) from the UCF101 model."""
    env, base = world
    flow_model = json.loads((base / "runs" / "flow_v2v" / "summary.json").read_text())["weights"] \
        if (base / "runs" / "flow_v2v" / "summary.json").exists() else None
    if flow_model is None:
        flow_model = train_and_eval(env, base, "flow_v2v", "flow_solver")[0]["weights"]
    sintel = str(base / "data" / "db" / "sintel" / "final")
    run(env, "tools.evaluate", "--net", "flow_v2v", "--weights", flow_model, "--db", sintel,
        "--clips", "1", "--out", base / "eval" / "sintel")
    res = json.loads((base / "eval" / "sintel" / "results.json").read_text())
    assert res["truth"].startswith("ground truth") and res["paper"] == 8.86
    run(env, "tools.evaluate", "--net", "flow_v2v", "--teacher", "--db", sintel, "--clips", "1",
        "--out", base / "eval" / "brox")
    brox = json.loads((base / "eval" / "brox" / "results.json").read_text())
    # (the tiny tree's frames are independent noise: the value says nothing; the teacher's
    # accuracy is tested in test_data_teacher.py)
    assert brox["paper"] == 8.89 and np.isfinite(brox["epe"]) and brox["clips"] == 1
    run(env, "tools.train", "--sintel-3fold", "--weights", flow_model, "--max-iter", "1",
        "--out", base / "eval" / "sintel_3fold")
    folds = json.loads((base / "eval" / "sintel_3fold" / "results.json").read_text())
    assert [f["fold"] for f in folds["folds"]] == [0, 1, 2] and np.isfinite(folds["epe"])
    assert folds["paper"] == 8.38
    tables = run(env, "tools.evaluate", "--tables", *(str(p) for p in sorted((base / "eval").glob("*/results.json"))))
    assert "Table 2" in tables and "Sintel 3-fold" in tables and "8.89" in tables
