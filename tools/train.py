"""Train any of our solvers through pycaffe — one tool for every net and table row.

    python -m tools.train --solver prototxt/seg_solver.prototxt --weights data/c3d.caffemodel
    python -m tools.train --solver prototxt/flow_solver.prototxt --out runs/flow --max-iter 2000

What it adds to `caffe train` (which keeps working unchanged):
- runs from any directory: the solver's net paths are resolved (current directory first,
  then the repo root) and an effective solver with absolute paths is written to the
  output folder (``runs/<solver name>`` by default) — the exact file that was trained;
- validates the solver, nets and weights first (models/validate.py): clear errors;
- ``--weights`` (e.g. converted C3D weights) copied by layer name, with a report of what
  was copied; nets trained from scratch in the paper (flow, colour, "-0" rows) need none;
- a progress bar with loss and learning rate; a CSV log; a training-curve PNG;
- snapshots at the solver's ``snapshot`` interval, on Ctrl-C / SIGTERM and at the end; a
  second run with the same output folder resumes from the newest ``.solverstate``
  (data layers are told the iteration through V2V_START_ITER, so the loss curve
  continues as if never stopped);
- stops on a NaN/inf loss with a message saying where and what to try;
- its own test passes every ``test_interval`` (Caffe's are silent with glog quiet),
  logged to test_log.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from google.protobuf import text_format

from models import validate
from models.engine import caffe, pb2
from models.paths import RUNS, resolve_repo_path


class TrainError(RuntimeError):
    pass


# ------------------------------------------------------------------ solver helpers
def lr_at(sp, it: int) -> float:
    """Caffe's SGDSolver::GetLearningRate for iteration ``it``."""
    p, base = sp.lr_policy or "fixed", sp.base_lr
    if p == "fixed":
        return base
    if p == "step":
        return base * sp.gamma ** (it // sp.stepsize)
    if p == "exp":
        return base * sp.gamma ** it
    if p == "inv":
        return base * (1 + sp.gamma * it) ** (-sp.power)
    if p == "multistep":
        return base * sp.gamma ** sum(1 for v in sp.stepvalue if it >= v)
    if p == "poly":
        return base * (1 - it / sp.max_iter) ** sp.power
    if p == "sigmoid":
        return base / (1 + math.exp(-sp.gamma * (it - sp.stepsize)))
    raise TrainError(f"unknown lr_policy {p}")


def resolve(path: str, solver_path: Path) -> Path:
    """A path named in a solver or on the command line: the current directory, then the
    repo root (data/... under $V2V_DATA when set), then the solver's folder."""
    p = Path(path)
    if p.is_absolute():
        return p
    for cand in (Path.cwd() / p, resolve_repo_path(p), solver_path.parent / p):
        if cand.exists():
            return cand.resolve()
    return resolve_repo_path(p).resolve()


def effective_solver(solver_path: Path, out: Path, max_iter: int | None, snapshot: int | None):
    """Read the solver, make its paths absolute, move snapshots into ``out``; write it."""
    sp = validate.load_solver(solver_path)
    orig = pb2().SolverParameter()
    orig.CopyFrom(sp)
    for f in ("net", "train_net"):
        if getattr(sp, f):
            setattr(sp, f, str(resolve(getattr(sp, f), solver_path)))
    tn = [str(resolve(t, solver_path)) for t in sp.test_net]
    del sp.test_net[:]
    sp.test_net.extend(tn)
    sp.snapshot_prefix = str(out / "snapshots" / solver_path.stem.replace("_solver", ""))
    if max_iter is not None:
        sp.max_iter = max_iter
    if snapshot is not None:
        sp.snapshot = snapshot
    # We run the test passes ourselves (Caffe's go to a silenced glog).
    sp.test_interval = sp.max_iter + 1
    sp.test_initialization = False
    sp.display = 0
    sp.solver_mode = pb2().SolverParameter.CPU
    eff = out / "solver.prototxt"
    eff.write_text(f"# effective solver written by tools.train from {solver_path}\n"
                   + text_format.MessageToString(sp))
    return sp, orig, eff


def latest_state(out: Path) -> Path | None:
    states = list((out / "snapshots").glob("*.solverstate"))
    if not states:
        return None

    def it(p):
        try:
            return int(p.stem.rsplit("_iter_", 1)[1])
        except (IndexError, ValueError):
            return -1
    return max(states, key=it)


def state_iter(path: Path) -> int:
    st = pb2().SolverState()
    st.ParseFromString(path.read_bytes())
    return st.iter


def copy_weights(net, weights: list[str], net_path: str, log) -> None:
    net_param = validate.load_net(net_path)
    for w in weights:
        validate.validate_weights(w, net_param, net_path)
        model = pb2().NetParameter()
        model.ParseFromString(Path(w).read_bytes())
        src = {layer.name for layer in model.layer if len(layer.blobs)}
        have = set(net.params.keys())
        net.copy_from(str(w))
        copied = sorted(have & src)
        log(f"weights {w}: copied {len(copied)} layers ({', '.join(copied)}); "
            f"{len(have - src)} layers keep their fillers"
            + (f"; {len(src - have)} layers in the file are not in the net" if src - have else ""))


def loss_of(net) -> float:
    return float(sum(float(net.blobs[b].data.sum()) for b in net.outputs
                     if net.blobs[b].data.size == 1))


def run_test(solver, iters: int) -> dict:
    net = solver.test_nets[0]
    net.share_with(solver.net)  # as Caffe's Solver::Test: the test net uses the current weights
    acc: dict[str, float] = {}
    for _ in range(iters):
        net.forward()
        for b in net.outputs:
            acc[b] = acc.get(b, 0.0) + float(net.blobs[b].data.mean())
    return {k: v / iters for k, v in acc.items()}


def plot_curve(log_csv: Path, test_csv: Path, png: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    rows = list(csv.DictReader(open(log_csv)))
    if not rows:
        return
    it = [int(r["iter"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(it, loss, lw=0.8, alpha=0.5, label="train loss")
    k = max(1, len(loss) // 50)
    if k > 1:
        sm = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1])
              for i in range(len(loss))]
        ax.plot(it, sm, lw=1.5, label=f"train loss (mean of {k})")
    if test_csv.exists():
        trows = list(csv.DictReader(open(test_csv)))
        for key in [k for k in (trows[0].keys() if trows else []) if k != "iter"]:
            ax.plot([int(r["iter"]) for r in trows], [float(r[key]) for r in trows], "o-",
                    ms=3, label=f"test {key}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


# ------------------------------------------------------------------ the loop
def train(solver_path, weights=None, out=None, max_iter=None, snapshot=None, fresh=False,
          log_every=20, quiet=False) -> dict:
    """Train; returns a summary dict. Raises TrainError / ValidationError on bad input."""
    solver_path = Path(solver_path).resolve() if Path(solver_path).exists() else \
        resolve(str(solver_path), Path.cwd())
    if not solver_path.exists():
        raise validate.ValidationError(f"{solver_path}: solver prototxt file not found")
    out = Path(out) if out else RUNS / solver_path.stem.replace("_solver", "")
    out = out.resolve()
    (out / "snapshots").mkdir(parents=True, exist_ok=True)

    def log(msg):
        if not quiet:
            print(f"[train] {msg}", flush=True)
        with open(out / "train.log", "a") as f:
            f.write(time.strftime("%H:%M:%S ") + msg + "\n")

    sp, orig, eff = effective_solver(solver_path, out, max_iter, snapshot)
    validate.validate_solver_file(eff)
    state = None if fresh else latest_state(out)
    if fresh:
        for p in list((out / "snapshots").glob("*")) + [out / "train_log.csv", out / "test_log.csv"]:
            p.unlink(missing_ok=True)
    start = state_iter(state) if state else 0
    os.environ["V2V_START_ITER"] = str(start * max(sp.iter_size, 1))
    cf = caffe()
    if sp.random_seed >= 0:
        cf.set_random_seed(sp.random_seed)
    try:
        solver = cf.get_solver(str(eff))
    finally:
        os.environ.pop("V2V_START_ITER", None)  # read once by the data layers' setup
    net_path = sp.net or sp.train_net
    if state:
        solver.restore(str(state))
        log(f"resumed from {state} at iteration {solver.iter}")
    elif weights:
        copy_weights(solver.net, [str(resolve(w, solver_path)) for ws in weights for w in ws.split(",")],
                     net_path, log)
    else:
        log("training from scratch (no --weights)")

    log_csv, test_csv = out / "train_log.csv", out / "test_log.csv"
    if not log_csv.exists():
        log_csv.write_text("iter,loss,lr,seconds\n")
    else:  # drop rows past the restored iteration (a kill after the last snapshot)
        rows = log_csv.read_text().splitlines()
        log_csv.write_text("\n".join([rows[0]] + [r for r in rows[1:]
                                                  if int(r.split(",")[0]) < solver.iter]) + "\n")

    stop = {"sig": None}

    def on_signal(signum, frame):
        stop["sig"] = signum
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    from tqdm import tqdm  # noqa: PLC0415
    bar = tqdm(total=sp.max_iter, initial=solver.iter, desc=solver_path.stem, unit="it",
               disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)
    t0 = time.time()
    last_loss = float("nan")
    test_every = orig.test_interval if orig.test_interval > 0 and len(solver.test_nets) else 0
    test_iters = orig.test_iter[0] if len(orig.test_iter) else 0
    try:
        with open(log_csv, "a") as lf:
            while solver.iter < sp.max_iter:
                it = solver.iter
                solver.step(1)
                last_loss = loss_of(solver.net)
                lr = lr_at(sp, it)
                lf.write(f"{it},{last_loss:.6g},{lr:.6g},{time.time() - t0:.2f}\n")
                lf.flush()
                if not math.isfinite(last_loss):
                    prev = latest_state(out)
                    raise TrainError(
                        f"loss is {last_loss} at iteration {it} (lr {lr:g}): training stopped. "
                        f"Last good snapshot: {prev or 'none'}. Try a lower base_lr in "
                        f"{solver_path}, or check the data (labels, flow scale, mean).")
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4g}", lr=f"{lr:.2g}")
                if bar.disable and not quiet and (it % log_every == 0 or it + 1 == sp.max_iter):
                    print(f"[train] iter {it:6d}  loss {last_loss:.5g}  lr {lr:.3g}  "
                          f"{time.time() - t0:.0f}s", flush=True)
                if test_every and test_iters and solver.iter % test_every == 0:
                    res = run_test(solver, test_iters)
                    new = not test_csv.exists()
                    with open(test_csv, "a") as tf:
                        if new:
                            tf.write("iter," + ",".join(res) + "\n")
                        tf.write(f"{solver.iter}," + ",".join(f"{v:.6g}" for v in res.values()) + "\n")
                    log(f"test at {solver.iter}: " + ", ".join(f"{k}={v:.5g}" for k, v in res.items()))
                if stop["sig"] is not None:
                    break
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
    if math.isfinite(last_loss) or solver.iter == start:
        solver.snapshot()
    final = Path(f"{sp.snapshot_prefix}_iter_{solver.iter}.caffemodel")
    plot_curve(log_csv, test_csv, out / "curve.png", solver_path.stem)
    summary = {"solver": str(solver_path), "effective_solver": str(eff), "iter": solver.iter,
               "max_iter": sp.max_iter, "final_loss": last_loss, "weights": str(final),
               "seconds": round(time.time() - t0, 1), "interrupted": stop["sig"] is not None,
               "curve": str(out / "curve.png"), "log": str(log_csv)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if stop["sig"] is not None:
        log(f"stopped by signal {stop['sig']} at iteration {solver.iter}; snapshot written; "
            f"run the same command again to resume")
    else:
        log(f"done: {solver.iter} iterations, final loss {last_loss:.5g}, weights {final}")
    return summary


def sintel_3fold(weights, out=None, max_iter=None, clips=None, quiet=False) -> dict:
    """The paper's Sintel fine-tuning (Table 2, 8.38): for each fold k, fine-tune the UCF101
    flow model on the other folds (prototxt/flow_v2v_sintel_fold{k}_solver.prototxt) and
    evaluate on fold k (data/db/sintel/final_fold{k}_test); the EPE is averaged over all
    scored pixels of the three folds."""
    from models.paths import PROTOTXT  # noqa: PLC0415
    from tools.evaluate import evaluate  # noqa: PLC0415
    out = Path(out) if out else RUNS / "sintel_3fold"
    folds, err, pix = [], 0.0, 0
    for k in range(3):
        s = train(PROTOTXT / f"flow_v2v_sintel_fold{k}_solver.prototxt", weights, out / f"fold{k}",
                  max_iter, quiet=quiet)
        r = evaluate("flow_v2v", s["weights"], db=resolve_repo_path(f"data/db/sintel/final_fold{k}_test"),
                     clips=clips, out=out / f"fold{k}" / "eval", quiet=True)
        folds.append({"fold": k, "epe": r["epe"], "pixels": r["pixels"], "clips": r["clips"],
                      "weights": s["weights"]})
        err, pix = err + r["epe"] * r["pixels"], pix + r["pixels"]
    res = {"net": "flow_v2v (Sintel 3-fold fine-tuned)", "task": "flow", "protocol": "release",
           "db": "sintel final, 3 folds", "clips": sum(f["clips"] for f in folds),
           "truth": "ground truth (Sintel)",
           "epe": err / max(pix, 1), "pixels": pix, "paper": 8.38, "folds": folds}
    (out / "results.json").write_text(json.dumps(res, indent=2))
    if not quiet:
        print(f"[train] Sintel 3-fold: EPE {res['epe']:.3f} (paper 8.38); per fold "
              + ", ".join(f"{f['epe']:.3f}" for f in folds))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solver", help="solver prototxt (e.g. prototxt/seg_solver.prototxt)")
    ap.add_argument("--sintel-3fold", action="store_true",
                    help="the paper's Sintel fine-tuning: the three fold solvers from --weights (the "
                         "UCF101 flow model), each evaluated on its held-out fold; results in --out")
    ap.add_argument("--weights", action="append", help="caffemodel(s) to copy by layer name "
                    "(e.g. converted C3D weights); repeat or comma-separate")
    ap.add_argument("--out", help="output folder (default runs/<solver name>)")
    ap.add_argument("--max-iter", type=int, help="override the solver's max_iter")
    ap.add_argument("--snapshot", type=int, help="override the solver's snapshot interval")
    ap.add_argument("--fresh", action="store_true", help="ignore and delete earlier snapshots in --out")
    ap.add_argument("--log-every", type=int, default=20, help="log interval without a terminal")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not a.sintel_3fold and not a.solver:
        ap.error("--solver is required (or --sintel-3fold)")
    try:
        if a.sintel_3fold:
            if not a.weights:
                raise TrainError("--sintel-3fold fine-tunes a trained UCF101 flow model: give --weights")
            sintel_3fold(a.weights, a.out, a.max_iter, quiet=a.quiet)
            return 0
        s = train(a.solver, a.weights, a.out, a.max_iter, a.snapshot, a.fresh, a.log_every, a.quiet)
    except (validate.ValidationError, TrainError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, TrainError) else 2
    return 130 if s["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
