"""Print a net's layers with output shape, parameters and FLOPs (from models.shapes).

    python -m tools.net_summary prototxt/seg_v2v_deploy.prototxt
    python -m tools.net_summary prototxt/seg_v2v_train_val.prototxt --phase TRAIN
    python -m tools.net_summary NET --input 1,3,8,32,32      (override the data blob shape)

FLOPs count a multiply-add as 2. Shapes that cannot be known statically print as "?".
Exits 2 with the validator's message for a net that cannot be set up.
"""
from __future__ import annotations

import argparse
import sys

from models import cli, shapes
from models.validate import ValidationError, validate_net


def _shape_arg(s: str) -> tuple:
    try:
        dims = tuple(int(x) for x in s.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be integers like 1,3,16,112,112, got {s!r}") from None
    if len(dims) < 2 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"shape must be positive integers, got {s!r}")
    return dims


def summarize(net_path, phase="TEST", input_shapes=None) -> str:
    from models.validate import load_net
    net = load_net(net_path)
    from models.v2v import BY_KEY
    v2v_net = net.name in BY_KEY and not BY_KEY[net.name].arch.endswith("_up")
    for v in (input_shapes or {}).values():
        if v2v_net and len(v) == 5:  # our V2V nets: L % 8, H, W % 16 (decoder must meet skips)
            from models.validate import check_input_size
            check_input_size(*v[2:], where=f"{net_path}: --input {shapes.fmt(v)}")
    infos = validate_net(net, net_path, phase, input_shapes)
    rows = [("layer", "type", "output", "params", "MFLOPs")]
    tot_p, tot_f = 0, 0
    for i in infos:
        out = ", ".join(shapes.fmt(s) if s != () else "scalar" for s in i.top_shapes) or "-"
        p = i.params
        tot_p += p or 0
        tot_f += i.flops
        rows.append((i.name, i.type, out, "?" if p is None else (f"{p:,}" if p else ""),
                     f"{i.flops / 1e6:,.1f}" if i.flops else ""))
    rows.append(("total", "", "", f"{tot_p:,}", f"{tot_f / 1e6:,.1f}"))
    w = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(x.ljust(w[c]) if c < 3 else x.rjust(w[c]) for c, x in enumerate(r)))
        if j == 0 or j == len(rows) - 2:
            lines.append("-" * len(lines[-1]))
    lines.append(f"{tot_p:,} parameters, {tot_f / 1e9:,.1f} GFLOP per forward pass")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.net_summary", description=__doc__.split("\n")[0])
    ap.add_argument("net", help="net prototxt (train_val or deploy)")
    ap.add_argument("--phase", default="TEST", choices=["TRAIN", "TEST"])
    ap.add_argument("--input", type=_shape_arg, help="shape of the 'data' blob, e.g. 1,3,16,112,112")
    a = ap.parse_args(argv)
    try:
        print(summarize(a.net, a.phase, {"data": a.input} if a.input else None))
    except (ValidationError, shapes.ShapeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    cli.run(main)
