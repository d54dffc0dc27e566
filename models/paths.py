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
    that ``data/...`` goes to $V2V_DATA when that is set (data kept elsewhere, or tests)."""
    p = Path(p)
    if p.is_absolute():
        return p
    if p.parts and p.parts[0] == "data" and "V2V_DATA" in os.environ:
        return DATA.joinpath(*p.parts[1:])
    return REPO / p
