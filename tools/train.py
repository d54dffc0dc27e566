"""Train any of our solvers, with Caffe (pycaffe) or the PyTorch runtime — one tool, one
behaviour for both engines.

    python -m tools.train --solver prototxt/seg_solver.prototxt --weights data/c3d/c3d_sport1m.caffemodel
    python -m tools.train --solver prototxt/flow_solver.prototxt --engine torch --gpus 4
    V2V_MAX_ITER=2 python -m tools.train --solver prototxt/flow_solver.prototxt    # a smoke run

What it adds to `caffe train` (which keeps working unchanged, from the repo root):
- runs from any directory: the solver's net paths are resolved (current directory first,
  then the repo root, data/ and runs/ relocated by $V2V_DATA / $V2V_RUNS) and an
  effective solver with absolute paths is written to the output folder — the exact file
  that was trained;
- the output folder is the run folder named by the solver's ``snapshot_prefix``
  (``runs/<net>`` under $V2V_RUNS when set; ``--out`` to change it); snapshots go to
  ``<out>/snapshots/<net>_iter_N.caffemodel`` (+ ``.solverstate``), the files
  `caffe train` writes from the repo root;
- validates the solver, nets and weights first (models/validate.py): clear errors;
- ``--weights`` (e.g. converted C3D weights, or a run folder: its newest snapshot) copied
  by layer name, with a report of what was copied; nets trained from scratch in the paper
  (flow, colour, "-0" rows) need none: both engines start from the prototxt's fillers;
- a progress bar (or a line every ``--log-every`` iterations without a terminal),
  ``train_log.csv`` (iter,loss,lr,seconds), ``test_log.csv``, ``curve.png``, ``train.log``
  and ``summary.json`` in the output folder;
- snapshots at the solver's ``snapshot`` interval, on Ctrl-C / SIGTERM and at the end; a
  second run with the same output folder resumes from the newest ``.solverstate`` (of
  either engine; ``--fresh`` starts over): the data layers continue their stream, so the
  loss curve continues as if never stopped;
- stops on a NaN/inf loss with a message saying where and what to try;
- its own test passes every ``test_interval`` (test_iter batches), logged to test_log.csv.

Engines: ``--engine caffe`` (default) steps pycaffe's solver, on GPU N with ``--device cuda:N``
(the default when the engine is the CUDA build and a GPU is usable), else on the CPU;
a GPU that cannot be used is a clear error (models/gpu.py). ``--engine torch``
steps torch_runtime's Trainer (Caffe's SGD semantics; GPU when visible, bf16 autocast and
channels_last_3d there unless ``--precision fp32`` / ``--no-channels-last``) and with
``--gpus N`` starts N DDP ranks through torchrun (``torchrun ... -m tools.train --engine
torch`` works too); the effective batch is then N × batch × iter_size.

Environment: ``V2V_MAX_ITER=N`` caps max_iter (and the snapshot interval) at N without
editing the solver, for smoke runs of the real commands.

Exit status: 0 done, 2 bad input, 3 NaN/inf loss, 130 interrupted (snapshot written).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from data_prep.clips import check_net_labels
from models import cli, preflight, validate
from models.engine import caffe, gpu_unavailable_reason, pb2, use_gpu
from models.gpu import GpuUnavailable
from models.lock import hold
from models.paper import SINTEL_3FOLD
from models.caffe_cli import max_iter_cap
from models.paths import RUNS, resolve_repo_path, resolve_weights, snapshot_iter, user_path
from models.schedule import learning_rate

TORCH_OPTIONS = ("device", "precision", "no_channels_last", "compile")


class TrainError(ValueError):
    """Bad input found by this tool (exit status 2)."""


class LossNotFinite(RuntimeError):
    """The training loss became NaN or infinite (exit status 3)."""


# ------------------------------------------------------------------ the run folder
def resolve(path: str, solver_path: Path) -> Path:
    """A net path named in a solver: the current directory, then the repo root (data/ and
    runs/ relocated), then the solver's folder."""
    p, beside = user_path(path), solver_path.parent / path
    return beside.resolve() if not p.exists() and beside.exists() else p


def net_name(sp, solver_path: Path) -> str:
    """The run's name: the last part of the solver's snapshot_prefix (runs/<net>/snapshots/<net>)."""
    return Path(sp.snapshot_prefix).name if sp.snapshot_prefix else solver_path.stem.removesuffix("_solver")


def apply_limits(sp, max_iter: int | None, snapshot: int | None) -> None:
    if max_iter is not None:
        sp.max_iter = max_iter
    if snapshot is not None:
        sp.snapshot = snapshot
    cap = max_iter_cap()  # V2V_MAX_ITER, as the caffe wrapper reads it
    if cap is not None:
        sp.max_iter = min(sp.max_iter, cap)
        sp.snapshot = min(sp.snapshot, cap) if sp.snapshot else 0


@dataclass
class Run:
    """One training run: the solver as given, the effective one, and where things go."""
    solver_path: Path
    out: Path
    name: str
    sp: object          # the effective SolverParameter
    eff: Path           # ... written here (by rank 0)
    test_every: int     # the solver's test_interval (0: no test passes)
    main: bool          # rank 0 (always, except for the other DDP ranks)
    lock: object = None  # rank 0's hold on the run folder (models.lock)

    def weights_file(self, it: int) -> Path:
        return Path(f"{self.sp.snapshot_prefix}_iter_{it}.caffemodel")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def prepare(solver_path: Path, out, max_iter=None, snapshot=None) -> Run:
    """Read and validate the solver; make its paths absolute, snapshots under ``out``."""
    sp = validate.load_solver(solver_path)
    if sp.snapshot_format == pb2().SolverParameter.HDF5:
        raise TrainError(f"{solver_path}: snapshot_format: HDF5: tools.train writes and resumes Caffe's binary "
                         "snapshots (the default); remove the line, or run caffe train for HDF5 snapshots")
    name = net_name(sp, solver_path)
    out = (Path(out) if out else RUNS / name).resolve()
    test_every = sp.test_interval if len(sp.test_iter) else 0
    for f in ("net", "train_net"):
        if getattr(sp, f):
            setattr(sp, f, str(resolve(getattr(sp, f), solver_path)))
    tn = [str(resolve(t, solver_path)) for t in sp.test_net]
    del sp.test_net[:]
    sp.test_net.extend(tn)
    sp.snapshot_prefix = str(out / "snapshots" / name)
    apply_limits(sp, max_iter, snapshot)
    # The test passes and the display are ours, the same for both engines.
    sp.test_interval = sp.max_iter + 1
    sp.test_initialization = False
    sp.display = 0
    sp.solver_mode = pb2().SolverParameter.CPU
    run = Run(solver_path, out, name, sp, out / "solver.prototxt", test_every,
              int(os.environ.get("RANK", "0")) == 0)
    if run.main:
        run.lock = hold(out, "run folder")   # before anything is written: one run per folder
        with cli.writing(out):
            (out / "snapshots").mkdir(parents=True, exist_ok=True)
            run.eff.write_text(f"# effective solver written by tools.train from {solver_path}\n"
                               + text_format.MessageToString(sp))
        validate.validate_solver_file(run.eff)
    for net_path, phase in validate.solver_nets(sp):
        check_net_labels(net_path, phase)   # class ids the net does not predict: before any step
    return run


def latest_state(out: Path) -> Path | None:
    """The newest .solverstate in ``out``/snapshots (by iteration)."""
    return max((out / "snapshots").glob("*.solverstate"), key=snapshot_iter, default=None)


def snapshot_problem(state: Path, net_path: str) -> str | None:
    """Why a snapshot (a .solverstate and the .caffemodel beside it) cannot be resumed from
    — unreadable, cut short by a kill or a full disk, not of this net — or None."""
    st = pb2().SolverState()
    try:
        st.ParseFromString(state.read_bytes())
        model = validate.validate_weights(state.with_suffix(".caffemodel"), validate.load_net(net_path), net_path,
                                          missing_ok=set())
    except DecodeError:
        return f"{state}: unreadable (cut short?)"
    except (OSError, ValueError) as e:  # ValidationError is a ValueError
        return str(e).splitlines()[0]
    blobs = sum(len(layer.blobs) for layer in model.layer)
    if len(st.history) not in (blobs, 2 * blobs) or any(
            len(h.data) != validate.shapes.math.prod(h.shape.dim) for h in st.history):
        return f"{state}: the solver state is incomplete ({len(st.history)} history blobs for {blobs} weights)"
    return None


def resume_state(run: Run, log) -> Path | None:
    """The newest snapshot that can be resumed from; damaged newer ones are named and skipped."""
    states = sorted((run.out / "snapshots").glob("*.solverstate"), key=snapshot_iter, reverse=True)
    for state in states:
        problem = snapshot_problem(state, run.sp.net or run.sp.train_net)
        if problem is None:
            return state
        log(f"warning: skipping snapshot {state.name}: {problem}")
    return None


def state_iter(path: Path) -> int:
    st = pb2().SolverState()
    st.ParseFromString(path.read_bytes())
    return st.iter


def start_over(out: Path) -> None:
    """--fresh: delete the snapshots and logs of an earlier run in ``out``."""
    for p in list((out / "snapshots").glob("*")) + [out / "train_log.csv", out / "test_log.csv"]:
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------ the two engines
def caffe_gpu(device: str | None) -> int | None:
    """--device for the Caffe engine: the GPU id, or None for the CPU. Default: GPU 0 when
    Caffe can use one (the CUDA build on a machine with a GPU), else the CPU."""
    if device is None:
        return 0 if not gpu_unavailable_reason() else None
    if device == "cpu":
        return None
    kind, _, idx = device.partition(":")
    if kind != "cuda" or not (idx.isdigit() or idx == ""):
        raise ValueError(f"--device {device}: expected cpu, cuda or cuda:N")
    return int(idx or 0)


@contextlib.contextmanager
def located(state: Path):
    """The state as Caffe can restore it: its learned_net (an absolute path when written)
    pointed at the .caffemodel beside it, so a moved or copied run folder resumes."""
    st = pb2().SolverState()
    st.ParseFromString(state.read_bytes())
    beside = state.with_suffix(".caffemodel").resolve()
    if Path(st.learned_net) == beside:
        yield state
        return
    st.learned_net = str(beside)
    tmp = state.with_name(f".{state.name}.{os.getpid()}.resume")
    tmp.write_bytes(st.SerializeToString())
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


class CaffeEngine:
    """pycaffe's solver (Caffe's own SGD), on the CPU or one GPU."""
    main = True

    def __init__(self, run: Run, state: Path | None, log, device: str | None = None):
        os.environ["V2V_START_ITER"] = str(state_iter(state) * max(run.sp.iter_size, 1) if state else 0)
        gpu_id = caffe_gpu(device)
        try:
            cf = caffe() if gpu_id is None else use_gpu(gpu_id)
        except GpuUnavailable as e:
            raise TrainError(str(e)) from None
        if run.sp.random_seed >= 0:
            cf.set_random_seed(run.sp.random_seed)
        preflight.solver(run.eff, validate.solver_nets(run.sp))   # what Caffe would abort on: one line
        try:
            self.solver = cf.get_solver(str(run.eff))
        finally:
            os.environ.pop("V2V_START_ITER", None)  # read once by the data layers' setup
        self.sp = run.sp
        self.describe = f"caffe (pycaffe, {'CPU' if gpu_id is None else f'GPU {gpu_id}'})"
        if state:
            with located(state) as here:
                self.solver.restore(str(here))
            log(f"resumed from {state} at iteration {self.iter}")

    @property
    def iter(self) -> int:
        return self.solver.iter

    def step(self) -> float:
        if self.sp.snapshot and (self.iter + 1) % self.sp.snapshot == 0:
            self.check_room()   # this step snapshots
        self.solver.step(1)
        net = self.solver.net
        return float(sum(float(net.blobs[b].data.sum()) for b in net.outputs
                         if net.blobs[b].data.size == 1))

    def test(self) -> dict:
        """Test passes as Caffe's Solver::Test: the test net shares the current weights."""
        net, n = self.solver.test_nets[0], self.sp.test_iter[0]
        net.share_with(self.solver.net)
        acc: dict[str, float] = {}
        for _ in range(n):
            net.forward()
            for b in net.outputs:
                acc[b] = acc.get(b, 0.0) + float(net.blobs[b].data.mean())
        return {k: v / n for k, v in acc.items()}

    def snapshot(self) -> None:
        self.check_room()
        try:
            self.solver.snapshot()
        except RuntimeError as e:  # the engine's writer: "cannot write <file>: <why>", nothing left
            raise TrainError(str(e)) from None

    def check_room(self) -> None:
        """Room for a snapshot in the snapshot folder, or an OSError naming it (Caffe would abort)."""
        validate.check_snapshot_room(Path(self.sp.snapshot_prefix).parent,
                                     sum(b.data.size for blobs in self.solver.net.params.values() for b in blobs))

    def param_names(self) -> set[str]:
        return set(self.solver.net.params.keys())

    def load_weights(self, path: str) -> None:
        self.solver.net.copy_from(path)

    def any_rank(self, flag: bool) -> bool:
        return flag

    def finish(self) -> None:
        pass


class TorchEngine:
    """torch_runtime's Trainer (Caffe's SGD semantics); one DDP rank under torchrun."""

    def __init__(self, run: Run, state: Path | None, log, options: dict):
        import torch

        from torch_runtime.runtime import RunOptions
        from torch_runtime.train import Trainer
        device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        cuda = device.startswith("cuda")
        opts = RunOptions(device=device, precision=options.get("precision") or ("bf16" if cuda else "fp32"),
                          channels_last=cuda and not options.get("no_channels_last"),
                          compile=bool(options.get("compile")))
        self.tr = Trainer(run.sp, opts=opts, log=log, resume=state)
        self.main = self.tr.rank == 0
        self.describe = (f"torch on {opts.device} ×{self.tr.world}, {opts.precision}"
                         + (", channels_last" if opts.channels_last else "")
                         + (", compiled" if opts.compile else ""))

    @property
    def iter(self) -> int:
        return self.tr.iter

    def step(self) -> float:
        return self.tr.step(1)[0]

    def test(self) -> dict:
        return self.tr.test()

    def snapshot(self) -> None:
        self.tr.snapshot()

    def param_names(self) -> set[str]:
        return set(self.tr.net.params.keys())

    def load_weights(self, path: str) -> None:
        self.tr.load_weights(path)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is on one (so that all ranks stop together)."""
        if self.tr.world == 1:
            return flag
        import torch
        import torch.distributed as dist
        t = torch.tensor([int(flag)], device=self.tr.opts.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def finish(self) -> None:
        if self.tr.world > 1:
            self.tr.check_ranks_in_sync()


def start_engine(engine: str, run: Run, state, log, options: dict):
    if engine == "caffe":
        return CaffeEngine(run, state, log, options.get("device"))
    try:
        return TorchEngine(run, state, log, options)
    except (ImportError, OSError) as e:  # torch missing; a file a data layer needs
        raise TrainError(str(e)) from e


def copy_weights(engine, weights: list[str], net_path: str, log) -> None:
    """Validate each caffemodel against the net, copy it by layer name, report what it gave."""
    net_param = validate.load_net(net_path)
    have = engine.param_names()
    for w in weights:
        validate.validate_weights(w, net_param, net_path)
        model = pb2().NetParameter()
        model.ParseFromString(Path(w).read_bytes())
        src = {layer.name for layer in model.layer if len(layer.blobs)}
        engine.load_weights(w)
        copied = sorted(have & src)
        log(f"weights {w}: copied {len(copied)} layers ({', '.join(copied)}); "
            f"{len(have - src)} layers keep their fillers"
            + (f"; {len(src - have)} layers in the file are not in the net" if src - have else ""))


# ------------------------------------------------------------------ what a run records
def truncate_csv(path: Path, below: int) -> None:
    """Keep the rows of an earlier run whose iteration is < ``below`` (a kill after the last
    snapshot leaves rows the resumed run writes again)."""
    if path.exists():
        rows = path.read_text().splitlines()
        path.write_text("\n".join(rows[:1] + [r for r in rows[1:] if int(r.split(",")[0]) < below]) + "\n")


class Recorder:
    """The progress bar or lines, train_log.csv, test_log.csv and train.log of a run; silent
    on DDP ranks other than 0."""

    def __init__(self, run: Run, quiet: bool, log_every: int):
        self.run, self.quiet, self.log_every = run, quiet or not run.main, log_every
        self.train_csv, self.test_csv = run.out / "train_log.csv", run.out / "test_log.csv"
        self.t0, self.bar = time.time(), None

    def log(self, msg: str) -> None:
        if not self.run.main:
            return
        if not self.quiet:
            print(f"[train] {msg}", flush=True)
        with open(self.run.out / "train.log", "a") as f:
            f.write(time.strftime("%H:%M:%S ") + msg + "\n")

    def start(self, it: int) -> None:
        """Open the CSV log at iteration ``it`` (dropping later rows) and the progress bar."""
        from tqdm import tqdm
        if self.run.main:
            truncate_csv(self.train_csv, it)
            truncate_csv(self.test_csv, it + 1)
            if not self.train_csv.exists():
                self.train_csv.write_text("iter,loss,lr,seconds\n")
        self.bar = tqdm(total=self.run.sp.max_iter, initial=it, desc=self.run.name, unit="it",
                        disable=self.quiet or not sys.stderr.isatty(), dynamic_ncols=True)

    def row(self, it: int, loss: float, lr: float) -> None:
        """One training iteration: a CSV row, the bar (or a line every log_every)."""
        if not self.run.main:
            return
        secs = time.time() - self.t0
        with open(self.train_csv, "a") as f:
            f.write(f"{it},{loss:.6g},{lr:.6g},{secs:.2f}\n")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2g}")
        last = it + 1 == self.run.sp.max_iter
        if self.bar.disable and not self.quiet and (it % self.log_every == 0 or last):
            print(f"[train] iter {it:6d}  loss {loss:.5g}  lr {lr:.3g}  {secs:.0f}s", flush=True)

    def test(self, it: int, res: dict) -> None:
        if not self.run.main or not res:
            return
        new = not self.test_csv.exists()
        with open(self.test_csv, "a") as f:
            if new:
                f.write("iter," + ",".join(res) + "\n")
            f.write(f"{it}," + ",".join(f"{v:.6g}" for v in res.values()) + "\n")
        self.log(f"test at {it}: " + ", ".join(f"{k}={v:.5g}" for k, v in res.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plot_curve(log_csv: Path, test_csv: Path, png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
def loop(engine, run: Run, rec: Recorder) -> tuple[float, int | None]:
    """Step to max_iter; returns (last loss, the signal that stopped it or None). Raises
    LossNotFinite (no snapshot: the weights are spoilt) on a NaN/inf loss."""
    stop = {"sig": None}

    def on_signal(signum, frame):
        stop["sig"] = signum
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    last = float("nan")
    try:
        while engine.iter < run.sp.max_iter:
            it = engine.iter
            last, lr = engine.step(), learning_rate(run.sp, it)
            rec.row(it, last, lr)
            if not math.isfinite(last):
                raise LossNotFinite(
                    f"loss is {last} at iteration {it} (lr {lr:g}): training stopped. Last good "
                    f"snapshot: {latest_state(run.out) or 'none'}. Try a lower base_lr in "
                    f"{run.solver_path}, or check the data (labels, flow scale, mean).")
            if run.test_every and engine.iter % run.test_every == 0:
                rec.test(engine.iter, engine.test())
            if engine.any_rank(stop["sig"] is not None):
                stop["sig"] = stop["sig"] or signal.SIGTERM  # stopped on another rank
                break
    finally:
        rec.close()
        for s, h in old.items():
            signal.signal(s, h)
    return last, stop["sig"]


def find_solver(solver) -> Path:
    p = Path(solver)
    p = p.resolve() if p.exists() else resolve(str(solver), Path.cwd())
    if not p.exists():
        raise validate.ValidationError(f"{p}: solver prototxt file not found")
    return p


def begin(engine_kind, run: Run, rec: Recorder, fresh: bool, weights, options: dict):
    """Start the engine: from the newest snapshot in the run folder (resume), or from
    ``weights``, or from the fillers."""
    state = None if fresh else resume_state(run, rec.log)
    if fresh and run.main:
        start_over(run.out)
    engine = start_engine(engine_kind, run, state, rec.log, options)
    rec.log(f"{run.solver_path} with {engine.describe}, to iteration {run.sp.max_iter}; output in {run.out}")
    if state is None and weights:
        files = [str(resolve_weights(w)) for ws in weights for w in ws.split(",")]
        copy_weights(engine, files, run.sp.net or run.sp.train_net, rec.log)
    elif state is None:
        rec.log("training from scratch (no --weights)")
    return engine


def finish(engine, run: Run, rec: Recorder, last: float, sig, t0: float) -> dict:
    """The final snapshot, the curve and summary.json; returns the summary."""
    engine.finish()
    engine.snapshot()
    final = run.weights_file(engine.iter)
    summary = {"solver": str(run.solver_path), "effective_solver": str(run.eff), "iter": engine.iter,
               "max_iter": run.sp.max_iter, "final_loss": last, "weights": str(final),
               "seconds": round(time.time() - t0, 1), "interrupted": sig is not None,
               "curve": str(run.out / "curve.png"), "log": str(rec.train_csv)}
    if not run.main:
        return summary
    plot_curve(rec.train_csv, rec.test_csv, run.out / "curve.png", run.solver_path.stem)
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if sig is not None:
        rec.log(f"stopped by signal {sig} at iteration {engine.iter}; snapshot written; "
                f"run the same command again to resume")
    else:
        rec.log(f"done: {engine.iter} iterations, final loss {last:.5g}, weights {final}")
    return summary


def train(solver_path, weights=None, out=None, max_iter=None, snapshot=None, fresh=False,
          log_every=20, quiet=False, engine="caffe", options=None) -> dict:
    """Train; returns a summary dict. Raises TrainError / ValidationError on bad input,
    LossNotFinite on a NaN/inf loss. ``options``: the torch engine's device, precision,
    no_channels_last, compile."""
    t0 = time.time()
    run = prepare(find_solver(solver_path), out, max_iter, snapshot)
    try:
        with cli.writing(run.out):   # logs, curve, snapshots: a failed write names the run folder
            rec = Recorder(run, quiet, log_every)
            eng = begin(engine, run, rec, fresh, weights, options or {})
            rec.start(eng.iter)
            last, sig = loop(eng, run, rec)
            return finish(eng, run, rec, last, sig, t0)
    finally:
        run.release()


def sintel_3fold(weights, out=None, max_iter=None, clips=None, quiet=False, engine="caffe",
                 options=None) -> dict:
    """The paper's Sintel fine-tuning (Table 2, finetuned-V2V): for each fold k, fine-tune the UCF101
    flow model on the other folds (prototxt/flow_v2v_sintel_fold{k}_solver.prototxt) and
    evaluate on fold k (data/db/sintel/final_fold{k}_test); the EPE is averaged over all
    scored pixels of the three folds."""
    from models.paths import PROTOTXT
    from tools.evaluate import evaluate
    results = Path(out) if out else RUNS / "eval" / "sintel_3fold"   # beside the other evaluations
    out = Path(out) if out else RUNS / "sintel_3fold"
    folds, err, pix = [], 0.0, 0
    for k in range(3):
        s = train(PROTOTXT / f"flow_v2v_sintel_fold{k}_solver.prototxt", weights, out / f"fold{k}",
                  max_iter, quiet=quiet, engine=engine, options=options)
        r = evaluate("flow_v2v", s["weights"], db=resolve_repo_path(f"data/db/sintel/final_fold{k}_test"),
                     clips=clips, out=out / f"fold{k}" / "eval", quiet=True)
        folds.append({"fold": k, "epe": r["epe"], "pixels": r["pixels"], "clips": r["clips"],
                      "weights": s["weights"]})
        err, pix = err + r["epe"] * r["pixels"], pix + r["pixels"]
    res = {"net": "flow_v2v (Sintel 3-fold fine-tuned)", "task": "flow", "protocol": "release",
           "db": "sintel final, 3 folds", "clips": sum(f["clips"] for f in folds),
           "truth": "ground truth (Sintel)",
           "epe": err / max(pix, 1), "pixels": pix, "paper": SINTEL_3FOLD.value, "folds": folds}
    results.mkdir(parents=True, exist_ok=True)
    with cli.writing(results / "results.json"):
        (results / "results.json").write_text(json.dumps(res, indent=2))
    if not quiet:
        print(f"[train] Sintel 3-fold: EPE {res['epe']:.3f} (paper {res['paper']}); per fold "
              + ", ".join(f"{f['epe']:.3f}" for f in folds))
    return res


# ------------------------------------------------------------------ command line
def launch_ranks(n: int, argv: list[str]) -> int:
    """Run this command again as n DDP ranks through torchrun (one per GPU; with --device
    cpu, n CPU ranks over gloo); returns rank 0's exit status (or the first failed rank's)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run
    rest = [x for i, x in enumerate(argv) if x != "--gpus" and not x.startswith("--gpus=")
            and (i == 0 or argv[i - 1] != "--gpus")]
    print(f"[train] torchrun: {n} ranks", flush=True)
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={n}", "-m", "tools.train", *rest]))
    except ChildFailedError as e:
        rc = e.get_first_failure()[1].exitcode
        return rc if rc > 0 else 128 - rc  # killed by signal s: 128 + s, as a shell says
    except KeyboardInterrupt:
        return 130
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solver", help="solver prototxt (e.g. prototxt/seg_solver.prototxt)")
    ap.add_argument("--sintel-3fold", action="store_true",
                    help="the paper's Sintel fine-tuning: the three fold solvers from --weights (the "
                         "UCF101 flow model), each evaluated on its held-out fold; results in --out")
    ap.add_argument("--weights", action="append", help="caffemodel(s) to copy by layer name (e.g. "
                    "converted C3D weights), or a run folder (its newest snapshot); repeat or comma-separate")
    ap.add_argument("--engine", choices=("caffe", "torch"), default="caffe",
                    help="caffe: pycaffe's solver (CPU, or a GPU with the CUDA build); torch: the PyTorch runtime")
    ap.add_argument("--gpus", type=int, default=1,
                    help="torch engine: N > 1 starts N DDP ranks on this machine through torchrun")
    ap.add_argument("--out", help="output folder (default runs/<net>, <net> from the solver's "
                    "snapshot_prefix)")
    ap.add_argument("--max-iter", type=int, help="override the solver's max_iter")
    ap.add_argument("--snapshot", type=int, help="override the solver's snapshot interval")
    ap.add_argument("--fresh", action="store_true", help="ignore and delete earlier snapshots in --out")
    ap.add_argument("--log-every", type=cli.positive_int, default=20, help="log interval without a terminal")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when the engine can use one)")
    t = ap.add_argument_group("torch engine")
    t.add_argument("--precision", choices=["fp32", "tf32", "bf16"], help="default bf16 on CUDA, fp32 on CPU")
    t.add_argument("--no-channels-last", action="store_true", help="keep NCDHW on CUDA")
    t.add_argument("--compile", action="store_true", help="torch.compile the net")
    return ap


def check_args(ap, a) -> None:
    if not a.sintel_3fold and not a.solver:
        ap.error("--solver is required (or --sintel-3fold)")
    if a.sintel_3fold and not a.weights:
        ap.error("--sintel-3fold fine-tunes a trained UCF101 flow model: give --weights")
    if a.engine == "caffe" and (a.gpus != 1 or any(getattr(a, o) for o in TORCH_OPTIONS if o != "device")):
        ap.error("--gpus, --precision, --no-channels-last and --compile are for --engine torch (Caffe trains "
                 "on one device: --device cuda:N; its multi-GPU training cannot run our Python data layers)")
    if a.engine == "caffe" and a.device:
        try:
            caffe_gpu(a.device)
        except ValueError as e:
            ap.error(str(e))
    if a.gpus < 1:
        ap.error("--gpus must be >= 1")
    if a.gpus > 1 and a.sintel_3fold:
        ap.error("--sintel-3fold trains on one device (no --gpus)")


def main(argv=None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    check_args(ap, a)
    options = {o: getattr(a, o) for o in TORCH_OPTIONS}
    try:
        if a.gpus > 1 and "WORLD_SIZE" not in os.environ:
            prepare(find_solver(a.solver), a.out, a.max_iter, a.snapshot).release()  # bad input: here, once
            return launch_ranks(a.gpus, sys.argv[1:] if argv is None else list(argv))
        if a.sintel_3fold:
            sintel_3fold(a.weights, a.out, a.max_iter, quiet=a.quiet, engine=a.engine, options=options)
            return 0
        s = train(a.solver, a.weights, a.out, a.max_iter, a.snapshot, a.fresh, a.log_every, a.quiet,
                  a.engine, options)
    except (ValueError, LossNotFinite) as e:  # ValidationError and TrainError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, LossNotFinite) else 2
    except OSError as e:  # a read-only or full disk, a file where a folder should be
        if e.errno is None:
            raise
        print(cli.os_error(e), file=sys.stderr)
        return 2
    return 130 if s["interrupted"] else 0


def _exit(rc: int) -> None:
    """A DDP rank ends with os._exit: on a loaded machine the interpreter's teardown of
    gloo's C++ threads sometimes aborted a rank ("terminate called without an active
    exception") after all work was done."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    _exit(main())
