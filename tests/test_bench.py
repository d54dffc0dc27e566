"""`make bench` runs end to end (a smoke run on a small shape; speed itself is not tested)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from models.paths import PROTOTXT


@pytest.mark.slow
def test_bench_writes_table(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.bench", "--net", str(PROTOTXT / "flow_v2v_deploy.prototxt"),
                        "--shape", "1,3,8,32,32", "--iters", "1", "--no-data", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    md = (tmp_path / "bench.md").read_text()
    assert "V2V forward, Caffe CPU" in md and "Brox teacher" in md and "deconv3" in md
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["caffe_cpu"]["fps"] > 0 and res["teacher"]["fps"] > 0
    assert res["torch"].get("cpu_fps", 0) > 0


def test_bench_refuses_bad_shape(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.bench", "--shape", "1,3,12,32,32", "--no-data",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "multiple of 8" in r.stderr
