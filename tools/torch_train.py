"""Train a Caffe solver prototxt with the PyTorch runtime (CPU, one GPU, or many via torchrun).

    python -m tools.torch_train --solver prototxt/seg_solver.prototxt --weights data/c3d/c3d.caffemodel
    python -m tools.torch_train --solver prototxt/flow_solver.prototxt --gpus 4    # DDP, 4 GPUs
    torchrun --nproc_per_node 4 -m tools.torch_train --solver prototxt/flow_solver.prototxt   # same

Same solver, same nets, same data layers as `caffe train` / `python -m tools.train`, with
Caffe's SGD semantics (torch_runtime/solver.py). Snapshots are Caffe files
(<prefix>_iter_N.caffemodel + .solverstate) written by rank 0; `--resume` takes a
.solverstate from either engine. On GPUs the default is bf16 autocast + channels_last_3d
(+ TF32); `--precision fp32` gives plain float32. With N ranks the effective batch is
N × batch × iter_size (gradients averaged, as Caffe's multi-GPU solver): scale the solver
(e.g. fewer iterations) yourself if you want the single-GPU schedule.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from tools.train import resolve  # a solver's paths: current directory, then the repo root


def effective_solver(solver_path: Path, out: Path | None, max_iter: int | None):
    from torch_runtime.solver import read_solver_param  # noqa: PLC0415
    sp = read_solver_param(solver_path)
    if sp.net:
        sp.net = str(resolve(sp.net, solver_path))
    if sp.train_net:
        sp.train_net = str(resolve(sp.train_net, solver_path))
    for i, t in enumerate(sp.test_net):
        sp.test_net[i] = str(resolve(t, solver_path))
    if out is not None:
        name = Path(sp.snapshot_prefix).name if sp.snapshot_prefix else solver_path.stem
        sp.snapshot_prefix = str(out / name)
    if max_iter:
        sp.max_iter = max_iter
    if sp.snapshot_prefix:
        Path(sp.snapshot_prefix).parent.mkdir(parents=True, exist_ok=True)
    return sp


def launch(n: int, args: list[str]) -> int:
    """Re-run this command under torchrun with n processes (one per GPU)."""
    rest, skip = [], False
    for x in args:
        if skip:
            skip = False
            continue
        if x == "--gpus":
            skip = True
            continue
        if x.startswith("--gpus="):
            continue
        rest.append(x)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "tools.torch_train"] + rest
    print("[torch_train] " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.torch_train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solver", required=True, type=Path)
    ap.add_argument("--weights", help="caffemodel(s) to start from, comma-separated (copied by layer name)")
    ap.add_argument("--resume", type=Path, help=".solverstate to resume from (Caffe's or ours)")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when visible)")
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                    help="default bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--no-channels-last", action="store_true", help="keep NCDHW on CUDA")
    ap.add_argument("--compile", action="store_true", help="torch.compile the net")
    ap.add_argument("--max-iter", type=int, help="override the solver's max_iter")
    ap.add_argument("--out", type=Path, help="folder for snapshots and torch_train_log.csv "
                    "(default: the solver's snapshot_prefix, no CSV)")
    ap.add_argument("--gpus", type=int, default=1,
                    help="N > 1: start N ranks on this machine through torchrun (DDP); with "
                         "--device cpu, N CPU ranks (gloo)")
    a = ap.parse_args(argv)
    if a.gpus > 1 and "WORLD_SIZE" not in os.environ:
        return launch(a.gpus, sys.argv[1:] if argv is None else list(argv))
    try:
        import torch_runtime  # noqa: F401, PLC0415  (clear error without torch)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch  # noqa: PLC0415

    from torch_runtime.runtime import RunOptions  # noqa: PLC0415
    from torch_runtime.train import Trainer  # noqa: PLC0415
    if not a.solver.exists():
        print(f"error: solver {a.solver} not found", file=sys.stderr)
        return 2
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    try:
        opts = RunOptions(device=device, precision=a.precision or ("bf16" if cuda else "fp32"),
                          channels_last=cuda and not a.no_channels_last, compile=a.compile)
        sp = effective_solver(a.solver, a.out, a.max_iter)
        csv_log = None
        if a.out is not None:
            a.out.mkdir(parents=True, exist_ok=True)
            csv_log = a.out / "torch_train_log.csv"
            if not csv_log.exists():
                csv_log.write_text("iter,loss,smoothed_loss,lr\n")
        tr = Trainer(sp, weights=a.weights, opts=opts, resume=a.resume, csv_log=csv_log)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tr.log(f"[torch_train] {a.solver} on {opts.device} ×{tr.world}, {opts.precision}"
           f"{', channels_last' if opts.channels_last else ''}{', compiled' if opts.compile else ''}")
    def _term(signum, frame):   # SIGTERM (a scheduler's stop): snapshot like Ctrl-C
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    try:
        tr.run()
    except KeyboardInterrupt:
        tr.log(f"[torch_train] interrupted at iter {tr.iter}: writing a snapshot")
        tr.snapshot()
        return 130
    except FloatingPointError as e:
        tr.log(f"error: {e}; try a lower base_lr or check the data")
        return 1
    finally:
        import torch.distributed as dist  # noqa: PLC0415
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _exit(rc: int) -> None:
    """A DDP rank ends with os._exit after its process group is destroyed: on a loaded
    machine the interpreter's teardown of gloo's C++ threads sometimes aborted the rank
    ("terminate called without an active exception") after all work was done."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    _exit(main())
