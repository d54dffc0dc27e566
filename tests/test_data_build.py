"""The dataset tools end to end on data made here: UCF101-like AVIs (PyAV), a GATECH-like
tree, a Sintel-like tree. Bad items, kill-and-resume, shards, --help."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data_prep import db as cdb
from models.paths import REPO
from tests.data_fixtures import make_ucf, run_tool, sintel_tree

TOOLS = ["data_prep.ucf101", "data_prep.gatech", "data_prep.sintel", "data_prep.mean",
         "data_prep.teacher", "data_prep.db", "data_prep.bench"]


@pytest.mark.parametrize("module", TOOLS)
def test_help_runs_from_anywhere(module):
    r = run_tool(module, "--help", cwd="/")
    assert "usage: python -m " + module in r.stdout
    assert "example" in r.stdout


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    names, motions = make_ucf(root, n_videos=4, frames=35)
    return root, names, motions


def test_ucf101_flow_db_with_a_corrupt_video(ucf, tmp_path):
    root, names, motions = ucf
    out = tmp_path / "flow"
    r = run_tool("data_prep.ucf101", "--task", "flow", "--root", root / "UCF-101",
                 "--splits", root / "ucfTrainTestlist", "--split", "train", "--out", out, "--workers", "2")
    bad = "v_Diving_g99_c01.avi"
    assert bad in r.stderr and "cannot decode video" in r.stderr
    tail = r.stderr[r.stderr.index("bad item(s) skipped"):]      # listed at the end
    assert bad in tail
    man = cdb.manifest(out)
    assert man["count"] == 4 * 2                                  # 35 frames: clips at 0 and 16 (17 frames each)
    assert [b["item"] for b in man["bad"]] == [f"Diving/{bad}"]
    assert man["fields"]["flow"] == {"shape": [2, 16, 128, 171], "dtype": "float16"}
    assert man["teacher"]["method"].startswith("brox2004")
    d = cdb.ClipDB(out)
    for i in range(len(d)):
        info = d.info(i)
        vx, vy = motions[info["item"]]
        f = d[i]["flow"].astype(np.float32)[:, :, 24:-24, 24:-24]   # away from the borders
        assert np.median(f[0]) == pytest.approx(vx, abs=0.15), info
        assert np.median(f[1]) == pytest.approx(vy, abs=0.15), info
    assert d.verify() == []


def test_ucf101_color_db(ucf, tmp_path):
    root, names, _ = ucf
    out = tmp_path / "color"
    run_tool("data_prep.ucf101", "--task", "color", "--root", root / "UCF-101",
             "--list", root / "ucfTrainTestlist" / "testlist01.txt", "--out", out, "--stride", "8")
    man = cdb.manifest(out)
    assert set(man["fields"]) == {"frames"}
    assert man["count"] == 3  # one good video of 35 frames, 16-frame clips every 8: 0, 8, 16
    assert [r["start"] for r in man["records"]] == [0, 8, 16]


def _ucf_cmd(root, out, *extra):
    return [sys.executable, "-m", "data_prep.ucf101", "--task", "flow", "--root", str(root / "UCF-101"),
            "--splits", str(root / "ucfTrainTestlist"), "--out", str(out), *extra]


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_records(tmp_path):
    root = tmp_path / "src"
    make_ucf(root, n_videos=6, frames=35, corrupt=True, seed=3)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    full = tmp_path / "full"
    subprocess.run(_ucf_cmd(root, full), check=True, capture_output=True, env=env, cwd="/")
    part = tmp_path / "part"
    # interrupted run with 2 worker processes (finishing out of order), killed with its workers
    p = subprocess.Popen(_ucf_cmd(root, part, "--workers", "2"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env, cwd="/", start_new_session=True)
    t0 = time.time()
    while cdb.progress(part) < 2 and time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = cdb.progress(part)
    assert 2 <= done < 7, f"kill landed after {done} of 7 videos"
    assert not (part / "manifest.json").exists()
    r = subprocess.run(_ucf_cmd(root, part), capture_output=True, text=True, env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    assert f"resuming {part}" in r.stdout
    a, b = cdb.manifest(full), cdb.manifest(part)
    assert a["count"] == b["count"] == 12
    assert a["checksum"] == b["checksum"]
    assert [x["sha256"] for x in a["records"]] == [x["sha256"] for x in b["records"]]
    assert a["bad"] == b["bad"] and len(a["bad"]) == 1


def test_shards_merge_to_the_unsharded_db(ucf, tmp_path):
    root, _, _ = ucf
    base = [*("--task", "color", "--root", root / "UCF-101", "--splits", root / "ucfTrainTestlist")]
    run_tool("data_prep.ucf101", *base, "--out", tmp_path / "all")
    for k in range(3):
        run_tool("data_prep.ucf101", *base, "--out", tmp_path / "m", "--shard", f"{k}/3")
    run_tool("data_prep.db", "merge", tmp_path / "m", *[tmp_path / f"m.shard-{k}-of-3" for k in range(3)])
    a, b = cdb.manifest(tmp_path / "all"), cdb.manifest(tmp_path / "m")
    assert a["count"] == b["count"] > 0 and a["checksum"] == b["checksum"] and a["bad"] == b["bad"]
    r = run_tool("data_prep.db", "verify", tmp_path / "m")
    assert f"{b['count']}/{b['count']} records match" in r.stdout


def _gatech_tree(root, n_train=3, n_test=2, frames=20):
    from data_prep.synthetic import make_scene, write_gatech_like
    rng = np.random.default_rng(0)
    write_gatech_like(root, {
        "train": [make_scene(rng, frames=frames, height=48, width=64, classes=8) for _ in range(n_train)],
        "test": [make_scene(rng, frames=frames + 14, height=48, width=64, classes=8) for _ in range(n_test)]})


def test_gatech_tree_strides_and_out_of_range_label(tmp_path):
    from PIL import Image
    root = tmp_path / "gatech"
    _gatech_tree(root)
    lab = root / "train" / "video001" / "labels" / "000007.png"
    a = np.array(Image.open(lab))
    a[3, 3] = 42
    Image.fromarray(a).save(lab)
    r = run_tool("data_prep.gatech", "--root", root, "--split", "train", "--out", tmp_path / "train")
    assert "000007.png" in r.stderr and "[42] out of range" in r.stderr
    assert "train/video001" in r.stderr[r.stderr.index("bad item(s) skipped"):]
    man = cdb.manifest(tmp_path / "train")
    assert man["count"] == 2 * (20 - 16 + 1)                  # stride 1, two good videos
    assert man["classes"][0] == "sky" and man["void"] == 255
    run_tool("data_prep.gatech", "--root", root, "--split", "test", "--out", tmp_path / "test")
    man = cdb.manifest(tmp_path / "test")
    assert man["count"] == 2 * 2 and [r["start"] for r in man["records"]] == [0, 16, 0, 16]
    rec = cdb.read_clip(tmp_path / "test", 0)
    assert rec["frames"].shape == (3, 16, 128, 171) and rec["label"].shape == (1, 16, 128, 171)
    assert set(np.unique(rec["label"])) <= set(range(8))


def test_gatech_list_file_and_label_map(tmp_path):
    from PIL import Image
    root = tmp_path / "g"
    _gatech_tree(root, n_train=1, n_test=0, frames=17)
    lines = []
    for t in range(1, 18):
        lab = root / "train" / "video000" / "labels" / f"{t:06d}.png"
        a = np.array(Image.open(lab)).astype(np.uint8) + 1      # 1-based, 0 = unlabelled
        a[0] = 0
        Image.fromarray(a).save(root / f"lab{t}.png")
        lines.append(f"train/video000/frames/{t:06d}.png lab{t}.png clipA")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    lm = "0:255," + ",".join(f"{k + 1}:{k}" for k in range(8))
    run_tool("data_prep.gatech", "--list", root / "pairs.txt", "--split", "train", "--out", tmp_path / "db",
             "--label-map", lm)
    man = cdb.manifest(tmp_path / "db")
    assert man["count"] == 2 and man["records"][0]["item"] == "clipA"
    rec = cdb.read_clip(tmp_path / "db", 0)
    assert (rec["label"][0, :, 0] == 255).all()               # row 0 was unlabelled
    assert set(np.unique(rec["label"])) <= set(range(8)) | {255}


def test_sintel_folds_and_truncated_flo(tmp_path):
    root = tmp_path / "sintel"
    sintel_tree(root)
    bad = root / "training" / "flow" / "cave_2" / "frame_0005.flo"
    bad.write_bytes(bad.read_bytes()[:100])
    out = tmp_path / "db"
    r = run_tool("data_prep.sintel", "--root", root, "--pass", "clean", "--out", out, "--height", "32",
                 "--width", "48", check=False)
    assert r.returncode == 1          # fold 2's test database is empty: its only sequence is bad
    assert "frame_0005.flo" in r.stderr and "truncated" in r.stderr
    assert "cave_2" in r.stderr[r.stderr.rindex("bad item(s) skipped"):]
    man = cdb.manifest(out / "clean")
    assert man["count"] == 3 and [b["item"] for b in man["bad"]] == ["cave_2"]
    folds = man["params"]["folds"]
    assert folds == {"alley_1": 0, "bamboo_1": 1, "cave_2": 2, "market_5": 0}
    for k in range(3):
        tr, te = cdb.manifest(out / f"clean_fold{k}_train") if k != 2 else None, None
        try:
            te = cdb.manifest(out / f"clean_fold{k}_test")
        except cdb.DBError:
            te = None            # fold 2 holds only the bad sequence
        if te:
            assert {x["item"] for x in te["records"]} == {s for s, f in folds.items() if f == k}
        if tr:
            assert {x["item"] for x in tr["records"]} == {s for s, f in folds.items() if f != k and s != "cave_2"}
    fl = cdb.read_clip(out / "clean", 0)["flow"]
    np.testing.assert_allclose(fl[0], 2.0 * 48 / 40, rtol=1e-5)   # u scaled with the width
    np.testing.assert_allclose(fl[1], -1.0 * 32 / 24, rtol=1e-5)


def test_mean_tool(tmp_path):
    from tests.data_fixtures import coord_db
    coord_db(tmp_path / "db", "color", n=3, L=4, H=16, W=20)
    run_tool("data_prep.mean", "--db", tmp_path / "db", "--out", tmp_path / "m.npy")
    m = np.load(tmp_path / "m.npy")
    assert m.shape == (3, 4, 16, 20)
    assert m[2, 1, 0, 0] == pytest.approx(10 + 50)           # mean over records of 10·t + 50·r
    run_tool("data_prep.mean", "--db", tmp_path / "db", "--out", tmp_path / "g.npy", "--gray")
    assert np.load(tmp_path / "g.npy").shape == (1, 4, 16, 20)
    r = run_tool("data_prep.mean", "--db", tmp_path / "nope", "--out", tmp_path / "x.npy", check=False)
    assert r.returncode != 0 and "nope not found" in r.stderr


def test_resume_with_other_parameters_is_refused(ucf, tmp_path):
    root, _, _ = ucf
    base = [*("--task", "color", "--root", root / "UCF-101", "--splits", root / "ucfTrainTestlist",
              "--out", tmp_path / "db")]
    run_tool("data_prep.ucf101", *base)
    again = run_tool("data_prep.ucf101", *base)                 # same command: nothing to do, same db
    assert "already done" in again.stdout
    r = run_tool("data_prep.ucf101", *base, "--stride", "8", check=False)
    assert r.returncode != 0 and "was started with other parameters" in r.stderr and str(tmp_path / "db") in r.stderr
    assert cdb.manifest(tmp_path / "db")["params"]["stride"] == 16


def test_gatech_from_c3d_bins_with_a_truncated_one(tmp_path):
    from data_prep.c3dbin import read_c3d_bin, write_c3d_bin
    rng = np.random.default_rng(0)
    vols = []
    for i in range(3):
        v = rng.integers(0, 255, (1, 4, 16, 32, 40), dtype=np.uint8)
        v[0, 3] = rng.integers(0, 10, (16, 32, 40))              # 8, 9 → void
        vols.append(v)
        write_c3d_bin(tmp_path / f"c{i}.bin", v)
    assert np.array_equal(read_c3d_bin(tmp_path / "c0.bin"), vols[0])
    (tmp_path / "c1.bin").write_bytes((tmp_path / "c1.bin").read_bytes()[:5000])
    (tmp_path / "list.txt").write_text("c0.bin 0 0\nc1.bin 0 0\nc2.bin 0 0\n")
    r = run_tool("data_prep.gatech", "--c3d-bins", tmp_path / "list.txt", "--split", "train",
                 "--out", tmp_path / "db", "--bin-channels", "bgr", "--height", "32", "--width", "40")
    assert "c1.bin: truncated" in r.stderr
    man = cdb.manifest(tmp_path / "db")
    assert man["count"] == 2 and [b["item"] for b in man["bad"]] == ["c1.bin"]
    rec = cdb.read_clip(tmp_path / "db", 1)
    assert np.array_equal(rec["frames"], vols[2][0, 2::-1])      # BGR → RGB
    lab = vols[2][0, 3].copy()
    lab[lab >= 8] = 255
    assert np.array_equal(rec["label"][0], lab)


def test_a_repaired_bad_item_is_retried_on_the_next_run(tmp_path):
    from PIL import Image
    root = tmp_path / "gatech"
    _gatech_tree(root, n_train=2, n_test=0, frames=17)
    lab = root / "train" / "video000" / "labels" / "000003.png"
    good = np.array(Image.open(lab))
    bad = good.copy()
    bad[0, 0] = 200
    Image.fromarray(bad).save(lab)
    args = ("--root", root, "--split", "train", "--out", tmp_path / "db")
    run_tool("data_prep.gatech", *args)
    assert cdb.manifest(tmp_path / "db")["count"] == 2 and len(cdb.manifest(tmp_path / "db")["bad"]) == 1
    Image.fromarray(good).save(lab)
    run_tool("data_prep.gatech", *args)
    man = cdb.manifest(tmp_path / "db")
    assert man["count"] == 4 and man["bad"] == []
    fresh = tmp_path / "fresh"
    run_tool("data_prep.gatech", "--root", root, "--split", "train", "--out", fresh)
    assert cdb.manifest(fresh)["checksum"] == man["checksum"]
