"""Damaged and contended clip databases: clear errors, never a signal or silent use.
A truncated data.mdb, a flipped byte in a record, a manifest that does not add up, two
writers at once, and a merge into a database built with other parameters."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from data_prep import db as cdb
from tests.data_fixtures import coord_db, make_ucf, run_tool


@pytest.fixture
def small(tmp_path):
    coord_db(tmp_path / "db", "flow", n=6, L=4, H=32, W=40)
    return tmp_path / "db"


def test_truncated_data_file_is_an_error_not_sigbus(small):
    size = (small / "data.mdb").stat().st_size
    with open(small / "data.mdb", "r+b") as f:
        f.truncate(size // 2)
    for args in (["verify", small], ["info", small]):
        r = run_tool("data_prep.db", *args, check=False)
        if args[0] == "info":   # info reads the manifest only
            assert r.returncode == 0, r.stderr
            continue
        assert r.returncode == 2 and r.returncode != -7, r.stderr
        assert f"database {small}: data.mdb is truncated ({size // 2} bytes" in r.stderr
    r = subprocess.run([sys.executable, "-c", f"from data_prep.db import read_clip; read_clip({str(small)!r}, 0)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "DBError" in r.stderr and "is truncated" in r.stderr   # an exception, not SIGBUS


def test_a_file_that_is_not_lmdb(small):
    (small / "data.mdb").write_bytes(b"\0" * 9000)
    with pytest.raises(cdb.DBError, match="data.mdb is not an LMDB file"):
        cdb.ClipDB(small)[0]


def test_flipped_byte_in_a_record_is_caught_when_read(small):
    d = cdb.ClipDB(small)
    good = d.raw(3)
    data = bytearray((small / "data.mdb").read_bytes())
    at = data.find(good[10240:10304])          # frames channel 2 = 10·t + 50·record: record 3's own
    assert at > 0
    data[at] ^= 0x40
    (small / "data.mdb").write_bytes(bytes(data))
    cdb._READERS.clear()
    d = cdb.ClipDB(small)
    assert d[2]["flow"].shape == (2, 4, 32, 40)                  # the others still read
    with pytest.raises(cdb.DBError, match=r"record 0000003/00000 is damaged \(its sha256 differs"):
        d[3]
    r = run_tool("data_prep.db", "verify", small, check=False)
    assert r.returncode == 1 and "5/6 records match" in r.stdout


def test_manifest_that_does_not_add_up(small):
    import json
    m = json.loads((small / "manifest.json").read_text())
    m["records"] = m["records"][:2]
    (small / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(cdb.DBError, match="says 6 clips but lists 2"):
        cdb.ClipDB(small)
    m["records"], m["count"] = [], 0
    (small / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(cdb.DBError, match="holds no clips"):
        cdb.ClipDB(small)


def test_one_writer_per_database(tmp_path):
    """A second writer is refused while the first lives; the lock goes with its process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, numpy as np; from data_prep.db import ClipWriter;"
         f"w = ClipWriter({str(tmp_path / 'db')!r}, {{'a': ((2,), np.uint8)}}); print('ready', flush=True);"
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        busy = f"{tmp_path / 'db'}: pid {holder.pid} on .* is writing this database now"
        with pytest.raises(cdb.DBError, match=busy):
            cdb.ClipWriter(tmp_path / "db", {"a": ((2,), np.uint8)})
    finally:
        holder.kill()
        holder.wait()
    cdb.ClipWriter(tmp_path / "db", {"a": ((2,), np.uint8)}).close()   # a dead holder leaves no lock


def test_merge_refuses_a_target_built_with_other_parameters(tmp_path):
    """The reported data loss: merging colour shards into a flow database overwrote it."""
    root = tmp_path / "ucf"
    make_ucf(root, n_videos=3, frames=17)    # plus one undecodable video: builds exit 1
    src = [*("--root", root / "UCF-101", "--splits", root / "ucfTrainTestlist", "--split", "train")]
    run_tool("data_prep.ucf101", "--task", "flow", *src, "--out", tmp_path / "flow", check=False)
    for k in range(2):
        run_tool("data_prep.ucf101", "--task", "color", *src, "--out", tmp_path / "c", "--shard", f"{k}/2", check=False)
    before = cdb.manifest(tmp_path / "flow")
    r = run_tool("data_prep.db", "merge", tmp_path / "flow", tmp_path / "c.shard-0-of-2", tmp_path / "c.shard-1-of-2",
                 check=False)
    assert r.returncode == 2 and "was started with other parameters" in r.stderr, r.stderr
    after = cdb.manifest(tmp_path / "flow")
    assert after == before and cdb.ClipDB(tmp_path / "flow").verify() == []
