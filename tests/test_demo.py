"""A shortened `make demo`: the real pipeline (synthetic downloads → dataset tools → full-width
V2V trained with real Caffe → evaluation), asserting that the trained nets beat the simple
baselines: the majority class by a clear margin and the training mean flow (zero flow is
reported: the short flow schedule beats it in most runs, not all)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_shortened_demo_beats_baselines(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "tools.demo", "--quick", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    seg, flow, base = res["seg_v2v_0"]["eval"], res["flow_v2v"]["eval"], res["baselines"]
    print(f"\n[demo] seg pixel acc {seg['pixel_accuracy']:.1f} % vs majority "
          f"{base['majority_pixel_accuracy']:.1f} %; flow EPE {flow['epe']:.3f} vs zero "
          f"{base['zero_flow_epe']:.3f} / mean {base['mean_flow_epe']:.3f}")
    assert seg["pixel_accuracy"] > base["majority_pixel_accuracy"] + 10
    # Flow beats the training-mean predictor in every run seen; against zero flow the short
    # schedule is not reliable (EPE 0.848 in three runs, 0.927 and 0.932 vs 0.922 in two more: 2-thread
    # BLAS sums make runs differ), so zero flow is reported, not asserted.
    assert flow["epe"] < base["mean_flow_epe"]
    report = (out / "README.md").read_text()
    assert "Table 1" in report and "Table 2" in report and "majority class" in report
    for f in ("seg_v2v_0/curve.png", "flow_v2v/curve.png", "seg_v2v_0/eval/clip0000.png",
              "flow_v2v/eval/clip0000.gif"):
        assert (out / f).stat().st_size > 1000, f
    assert str(out) in r.stdout  # the path is printed
