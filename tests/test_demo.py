"""A shortened `make demo`: the real pipeline (synthetic downloads → dataset tools → full-width
V2V trained with real Caffe → evaluation), asserting the margins the report states, with
the shortened run's flow margin (0.85× zero flow; a full run claims 0.75×)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools import demo_report


@pytest.mark.slow
def test_shortened_demo_beats_baselines(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "tools.demo", "--quick", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    print("\n" + "\n".join(demo_report.baseline_rows(res)))
    failed = [claim for claim, ok in demo_report.checks(res, flow_ratio=0.85) if not ok]
    assert not failed, failed
    flow = res["flow_v2v"]
    # the demo's own prediction loop and tools.evaluate score the same clips the same way
    assert flow["scores"]["v2v_vs_teacher"] == pytest.approx(flow["eval"]["epe"], rel=1e-6)
    assert res["color_v2v"]["scores"]["v2v_ade"] <= res["color_v2v"]["eval"]["ade"] + 1e-9
    assert flow["onnx"]["max_rel_diff_vs_caffe"] <= 1e-4
    assert flow["speed"]["v2v_ms_per_frame"] > 0 and flow["speed"]["brox_ms_per_frame"] > 0
    report = (out / "README.md").read_text()
    for text in ("Table 1", "Table 2", "Colorization", "majority class", "zero flow",
                 "mean colour per luma", "ms per frame", "onnxruntime", "| stage | seconds |"):
        assert text in report, text
    for key in ("seg_v2v_0", "flow_v2v", "color_v2v"):
        for f in ("curve.png", "pictures.png", "pictures.gif"):
            assert (out / key / f).stat().st_size > 1000, f"{key}/{f}"
            assert f"{key}/{f}" in report
    assert str(out) in r.stdout  # the path is printed
