"""What the `caffe` wrapper (.venv/bin/caffe) runs before the real binary.

    python -m tools.caffe_checks train -solver prototxt/seg_solver.prototxt -weights ...

1. models.caffe_cli: data/ and runs/ paths relocated, V2V_MAX_ITER applied, the solver,
   nets and weights validated and pre-flighted (Caffe's own setup in a child process);
2. the checks that read the data (data_prep, above models/): the label values of every
   segmentation database a net reads against the classes that net predicts, as
   `tools.train` and `tools.evaluate` check them (Caffe's SoftmaxWithLoss would read past
   its prediction without a word); and a ``-snapshot`` state, complete and of this net, as
   `tools.train` checks the states it resumes from (Caffe CHECK-aborts on a cut one).

Prints the arguments for the real binary, one per line (exit 0), or an error (exit 2).
"""
from __future__ import annotations

import sys
from pathlib import Path

from data_prep.clips import check_net_labels
from models import caffe_cli, cli, validate
from tools.train import snapshot_problem


def check_resume(argv: list[str]) -> None:
    """`caffe train -snapshot S`: S a complete solver state of this net (as tools.train resumes)."""
    cmd, f = validate.parse_caffe_args(argv)
    if cmd == "train" and "snapshot" in f:
        (net, _), *_ = caffe_cli.command_nets(argv)
        problem = snapshot_problem(Path(f["snapshot"]), net)
        if problem:
            raise ValueError(f"-snapshot: {problem}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        out = caffe_cli.prepare(argv)
        for net, phase in caffe_cli.command_nets(out):
            check_net_labels(net, phase)
        check_resume(out)
    except ValueError as e:  # the validator's, the pre-flight's, a database's or a label error
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    cli.run(main)
