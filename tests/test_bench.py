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
    assert ("rows" in res["gpu"]) != ("not_run" in res["gpu"])  # a GPU table, or one line why not
    assert ("No GPU table: " in md) == ("not_run" in res["gpu"])


@pytest.mark.gpu(torch=True)
def test_bench_gpu_table(tmp_path):
    """A smoke run of the GPU table (batch 1, one iteration, small clips)."""
    r = subprocess.run([sys.executable, "-m", "tools.bench", "--gpu-batches", "1", "--iters", "1",
                        "--shape", "1,3,8,32,32", "--no-data", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    md = (tmp_path / "bench.md").read_text()
    assert "## GPU: " in md and "Caffe GPU (this engine)" in md and "PyTorch bf16 + channels_last_3d" in md
    assert "on a K40" in md and "Goal: PyTorch bf16 inference" in md and "Goal: Caffe GPU forward" in md
    g = json.loads((tmp_path / "bench.json").read_text())["gpu"]
    assert {"device", "clip", "gflop_per_clip", "rows", "k40_fps", "teacher_fps", "goals"} <= set(g)
    assert g["clip"] == [3, 8, 32, 32] and g["gflop_per_clip"] > 0
    assert {row["engine"] for row in g["rows"]} == {"Caffe GPU (this engine)", "PyTorch fp32", "PyTorch TF32",
                                                    "PyTorch bf16 + channels_last_3d",
                                                    "PyTorch bf16 + channels_last_3d + torch.compile"}
    for row in g["rows"]:
        assert row["batch"] == 1 and row["fwd_fps"] > 0 and row["fwdbwd_fps"] > 0, row
        assert set(row["peak_mib"]) == {"fwd", "fwdbwd"} and set(row["tflops"]) == {"fwd", "fwdbwd"}
    assert set(g["goals"]) == {"torch_bf16_inference", "caffe_gpu_vs_k40"}
    assert all(isinstance(x["pass"], bool) for x in g["goals"].values())


def test_bench_refuses_bad_shape(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.bench", "--shape", "1,3,12,32,32", "--no-data",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "multiple of 8" in r.stderr
