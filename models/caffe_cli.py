"""What the `caffe` wrapper (.venv/bin/caffe) runs before the real binary, through
tools/caffe_checks.py (which adds the checks that read the databases):

    prepare(["train", "-solver", "prototxt/seg_solver.prototxt", "-weights", "data/c3d/..."])

1. The same environment as our Python tools (models/paths.py), so one command works on data
   kept elsewhere and for a quick smoke run:
   - ``V2V_DATA``: a ``-weights`` / ``-snapshot`` path under ``data/`` is read from there;
   - ``V2V_RUNS``: ``caffe train`` writes its snapshots there instead of ``runs/``;
   - ``V2V_MAX_ITER=N``: ``caffe train`` stops after at most N iterations.
   For ``train`` with either of the last two set, an effective solver (the same solver with
   those two changes) is written next to the snapshots and handed to Caffe.
2. Validation (models/validate.py): a clear error instead of a glog abort.

Returns the arguments for the real binary; errors are ValidationError / PreflightError.
"""
from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format

from models import preflight, validate
from models.paths import RUNS, relocated

PATH_FLAGS = ("weights", "snapshot")


def _flag_value_index(argv: list[str], flag: str) -> int | None:
    """Index of the value of ``-flag value`` / ``--flag value`` (None for ``-flag=value``
    forms, which are left as they are)."""
    for i, a in enumerate(argv[:-1]):
        if a.lstrip("-") == flag and a.startswith("-"):
            return i + 1
    return None


def _relocate(path: str, top: str) -> str:
    """A ``top/...`` path moved as models.paths moves it; other paths unchanged."""
    moved = relocated(path) if Path(path).parts[:1] == (top,) else None
    return path if moved is None else str(moved)


def relocate_data_paths(argv: list[str]) -> list[str]:
    if "V2V_DATA" not in os.environ:
        return argv
    out = list(argv)
    for flag in PATH_FLAGS:
        i = _flag_value_index(out, flag)
        if i is not None:
            out[i] = ",".join(_relocate(p, "data") for p in out[i].split(","))
    return out


def max_iter_cap() -> int | None:
    raw = os.environ.get("V2V_MAX_ITER")
    if not raw:
        return None
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap <= 0:
        raise validate.ValidationError(f"V2V_MAX_ITER must be a positive integer, got {raw!r}")
    return cap


def effective_solver(argv: list[str]) -> list[str]:
    """For ``train`` under V2V_RUNS / V2V_MAX_ITER: the solver with its snapshot_prefix moved
    and max_iter capped, written beside the snapshots; argv then names that file."""
    cap = max_iter_cap()
    i = _flag_value_index(argv, "solver")
    if i is None or (cap is None and "V2V_RUNS" not in os.environ):
        return argv
    sp = validate.load_solver(argv[i])
    if cap is not None:
        sp.max_iter = min(sp.max_iter, cap)
        if sp.snapshot:
            sp.snapshot = min(sp.snapshot, sp.max_iter)
    if sp.snapshot_prefix:
        sp.snapshot_prefix = _relocate(sp.snapshot_prefix, "runs")
    where = Path(sp.snapshot_prefix).parent if sp.snapshot_prefix else RUNS
    where.mkdir(parents=True, exist_ok=True)
    eff = where / f"caffe_{Path(argv[i]).name}"
    eff.write_text(f"# effective solver written by the caffe wrapper from {argv[i]}\n"
                   + text_format.MessageToString(sp))
    return argv[:i] + [str(eff)] + argv[i + 1:]


def prepare(argv: list[str]) -> list[str]:
    """The arguments Caffe gets: paths relocated, then checked by the validator."""
    cmd, _ = validate.parse_caffe_args(argv)
    out = relocate_data_paths(argv)
    if cmd == "train":
        i = _flag_value_index(out, "solver")
        if i is not None:  # the user's own file first, so that its errors name it
            validate.validate_solver_file(out[i], check_nets=False)
        out = effective_solver(out)
    validate.check_caffe_command(out)
    preflight_command(out)
    return out


def command_nets(argv: list[str]) -> list[tuple[str, str]]:
    """(net file, phase) of every net the Caffe command builds."""
    cmd, f = validate.parse_caffe_args(argv)
    if cmd == "train":
        return validate.solver_nets(validate.load_solver(f["solver"]))
    if cmd in ("test", "time"):
        return [(f["model"], f.get("phase", "TEST" if cmd == "test" else "TRAIN").upper())]
    return []


def preflight_command(argv: list[str]) -> None:
    """Caffe's own setup of what the command names, in a child process (models.preflight):
    whatever the validator let through and Caffe would abort on is one line here."""
    cmd, f = validate.parse_caffe_args(argv)
    weights = f["weights"].split(",") if "weights" in f else []
    if cmd == "train":
        preflight.solver(f["solver"], command_nets(argv), weights)
    elif cmd in ("test", "time"):
        (model, phase), = command_nets(argv)
        preflight.net(model, phase, weights)
