"""Convert the authors' C3D-v1.0 model and mean into files this project's Caffe loads.

    python -m tools.convert_c3d conv3d_deepnetA_sport1m_iter_1900000 \\
        --mean sport1m_train16_128_mean.binaryproto

writes data/c3d/c3d_sport1m.caffemodel (conv1a…conv5b, checked against
prototxt/seg_v2v_deploy.prototxt) and data/c3d/sport1m_train16_128_mean.npy (C, L, H, W),
the locations the generated segmentation nets and solvers use. Then:

    caffe train -solver prototxt/seg_solver.prototxt -weights data/c3d/c3d_sport1m.caffemodel

Prints one line per layer: copied / skipped / mismatched. Exits 2 with a clear message
for a file that is not a C3D-v1.0 caffemodel / mean. Options: -o OUT, --mean-out OUT,
--net PROTOTXT (check names and shapes against another net), --no-net (write every conv
layer unchecked), --all (keep fc layers and layers the net does not have).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.c3d_convert import C3DFormatError, convert_mean, convert_model
from models.paths import PROTOTXT, resolve_repo_path
from models.v2v import C3D_DIR, C3D_WEIGHTS
from models import cli


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.convert_c3d",
                                 description="C3D-v1.0 caffemodel / 5D mean binaryproto → our format",
                                 epilog="see the module docstring for an example")
    ap.add_argument("model", nargs="?", help="C3D-v1.0 caffemodel (e.g. conv3d_deepnetA_sport1m_iter_1900000)")
    ap.add_argument("--mean", help="C3D-v1.0 mean binaryproto (e.g. sport1m_train16_128_mean.binaryproto)")
    ap.add_argument("-o", "--out", default=str(resolve_repo_path(C3D_WEIGHTS)),
                    help="output caffemodel (default %(default)s)")
    ap.add_argument("--mean-out", help=f"output .npy (default {C3D_DIR}/<mean name>.npy)")
    ap.add_argument("--net", default=str(PROTOTXT / "seg_v2v_deploy.prototxt"),
                    help="net whose layer names/shapes the weights must fit (default %(default)s)")
    ap.add_argument("--no-net", action="store_true", help="do not check against a net")
    ap.add_argument("--all", action="store_true", help="also keep fc layers and layers the net lacks")
    a = ap.parse_args(argv)
    if not a.model and not a.mean:
        ap.error("give a C3D-v1.0 caffemodel and/or --mean")
    try:
        if a.model:
            net = None if a.no_net else a.net
            reports = convert_model(a.model, a.out, net=net, keep_all=a.all)
            for r in reports:
                print(r.line())
            counts = {k: sum(r.action == k for r in reports) for k in ("copied", "skipped", "mismatched")}
            print(f"{a.out}: {counts['copied']} layers copied, {counts['skipped']} skipped, "
                  f"{counts['mismatched']} mismatched" + (f" (checked against {net})" if net else ""))
        if a.mean:
            out = a.mean_out or str(resolve_repo_path(C3D_DIR) / (Path(a.mean).name.split(".")[0] + ".npy"))
            m = convert_mean(a.mean, out)
            print(f"{out}: mean {'×'.join(map(str, m.shape))} (C×L×H×W), "
                  f"range {float(m.min()):.1f}…{float(m.max()):.1f}")
    except C3DFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    cli.run(main)
