"""Where things live. The one module that names default locations.

All defaults are under the repository root, whatever the current directory
(``$V2V_DATA`` moves data/, ``$V2V_RUNS`` moves runs/):
  data/db/<dataset>/<split>   clip databases (git-ignored)
  runs/                       outputs of tools (git-ignored)
  prototxt/                   generated nets (committed)
Relative paths given by a user are resolved against the current directory; relative
paths written inside our prototxts (e.g. a data layer's ``db``) are resolved against the
repository root, so the same file works from the CLI (run from the root) and from tools.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("V2V_DATA", REPO / "data"))
DB_ROOT = DATA / "db"
RUNS = Path(os.environ.get("V2V_RUNS", REPO / "runs"))
PROTOTXT = REPO / "prototxt"

DATASETS = ("gatech", "ucf101_flow", "ucf101_color", "sintel")


def db_path(dataset: str, split: str) -> Path:
    """Default database location of a dataset split: data/db/<dataset>/<split>."""
    return DB_ROOT / dataset / split


def db_rel(dataset: str, split: str) -> str:
    """The same location as written in prototxts (relative to the repo root)."""
    return f"data/db/{dataset}/{split}"


def resolve_repo_path(p: str | os.PathLike) -> Path:
    """A path from a prototxt: absolute as is, relative against the repo root — except
    that ``data/...`` goes to $V2V_DATA and ``runs/...`` to $V2V_RUNS when those are set
    (data kept elsewhere, or tests)."""
    p = Path(p)
    if p.is_absolute():
        return p
    moved = relocated(p)
    return moved if moved is not None else REPO / p


def relocated(p: str | os.PathLike) -> Path | None:
    """A relative ``data/...`` path under $V2V_DATA, or ``runs/...`` under $V2V_RUNS, when
    that variable is set; None for any other path."""
    p = Path(p)
    for top, var, root in (("data", "V2V_DATA", DATA), ("runs", "V2V_RUNS", RUNS)):
        if not p.is_absolute() and p.parts and p.parts[0] == top and var in os.environ:
            return root.joinpath(*p.parts[1:])
    return None


def user_path(p: str | os.PathLike) -> Path:
    """A path given on a command line: the current directory first, then as a prototxt's
    path (the repo root; data/ and runs/ relocated), so commands work from anywhere."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return resolve_repo_path(p)


def snapshot_iter(path: Path) -> int:
    """N of ``<prefix>_iter_N.caffemodel`` / ``.solverstate`` (-1 for other names)."""
    try:
        return int(path.stem.rsplit("_iter_", 1)[1])
    except (IndexError, ValueError):
        return -1


def resolve_weights(p: str | os.PathLike) -> Path:
    """A --weights argument: a .caffemodel, or a run folder (runs/<net>), which means its
    newest snapshot (the highest iteration in <folder>/snapshots/ or the folder itself)."""
    path = user_path(p)
    if not path.is_dir():
        return path
    models = [m for d in (path / "snapshots", path) for m in d.glob("*.caffemodel")]
    if not models:
        raise ValueError(f"{path}: a run folder without snapshots (no *.caffemodel in it or in "
                                f"{path / 'snapshots'}): train first, or name a .caffemodel")
    return max(models, key=snapshot_iter)
