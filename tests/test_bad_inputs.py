"""Data readers refuse what would pass silently into a database: NaN or absurd flow in .flo
files, a .bin whose bytes are another dtype, floating-point label images, and clips that
would be stitched across a missing label."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from data_prep import db as cdb
from data_prep.c3dbin import BinError, read_c3d_bin, write_c3d_bin
from data_prep.flo import FloError, read_flo, write_flo
from data_prep.gatech import load_label, parse_label_map
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
