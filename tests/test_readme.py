"""Every command in README.md and data_prep/README.md, run exactly as written.

The downloads are made here, small and laid out like the real ones, in a private home
folder (``~/data/...`` in the commands); the databases, converted weights and runs go to a
private $V2V_DATA / $V2V_RUNS, and V2V_MAX_ITER=1 makes every training a smoke run
(models/caffe_cli.py, tools/train.py). Steps run in order: data, training, then what reads
their results; afterwards every path a command names must exist. Table cells with
placeholders are synopses: their tool's --help must know every flag they name.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import validate
from models.paths import REPO
from models.v2v import VARIANTS
from tests.data_fixtures import sintel_tree
from tests.readme_commands import Step, steps_of
from tests.wire import c3d_v10_model, v10_blob

DOCS = [REPO / "README.md", REPO / "data_prep" / "README.md"]
FRAMES = 17  # one 16-frame clip (+1 frame for the 16th flow)

# Commands not run here, each with the reason; each is a target of the Makefile.
ELSEWHERE = {
    "make test": "the suite itself: CI runs exactly this (.ci/run)",
    "make test-fast": "the suite itself, less its slow tests",
    "make demo": "minutes of training: tests/test_demo.py runs the demo's job (python -m tools.demo --quick)",
    "make bench": "timing runs: tests/test_bench.py runs python -m tools.bench on a small shape",
    "make setup-cuda": "a 25-minute engine build that switches the venv the suite runs in",
    "make setup-cpu": "switches the venv the suite runs in to the other engine build",
    "make test-gpu": "the GPU tests: tests/test_gpu.py, where a GPU is (tests/test_gpu_probe.py checks the plumbing)",
    "make gpu-check": "for a GPU machine: the CUDA build, make test-gpu and make bench in one run",
    "make slurm-check": "installs Debian packages and starts daemons: run by hand (cluster/README.md); "
                        "tests/test_cluster.py checks the scripts without Slurm",
    "make docker-check": "docker builds of both images and the suite inside them, most of an hour (docker/check.sh)",
}
CAFFE_FLAGS = {"train": {"solver", "weights", "snapshot", "gpu"}, "test": {"model", "weights", "iterations", "gpu"},
               "time": {"model", "weights", "iterations", "gpu", "phase"}}
STEPS = [s for doc in DOCS for s in steps_of(doc, REPO)]
RUNNABLE = sorted({s.text: s for s in reversed(STEPS) if not s.synopsis}.values(),  # each text once
                  key=lambda s: (s.stage, STEPS.index(s)))


def _downloads(home: Path) -> None:
    """~/data laid out like the public downloads (GATECH, UCF101, Sintel, C3D)."""
    from data_prep.synthetic import make_scene, write_gatech_like, write_video
    rng, raw = np.random.default_rng(0), home / "data"
    write_gatech_like(raw / "gatech", {
        split: [make_scene(rng, frames=FRAMES if split == "train" else 16, height=64, width=86,
                           classes=8, objects=4)] for split in ("train", "test")})
    for g in (8, 1):  # group 8 in the train list, group 1 in the test list
        s = make_scene(rng, frames=FRAMES, height=120, width=160)
        write_video(raw / "UCF-101" / "ApplyEyeMakeup" / f"v_ApplyEyeMakeup_g{g:02d}_c01.avi", s.frames)
    lists = raw / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    sintel_tree(raw / "MPI-Sintel-complete", seqs=("alley_1", "bamboo_1", "cave_2"), frames=FRAMES,
                h=48, w=64)
    (raw / "c3d").mkdir()
    c3d_v10_model(raw / "c3d" / "conv3d_deepnetA_sport1m_iter_1900000", np.random.default_rng(1))
    (raw / "c3d" / "sport1m_train16_128_mean.binaryproto").write_bytes(
        v10_blob(np.full((1, 3, 16, 128, 171), 100, np.float32)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    home = base / "home"
    _downloads(home)
    venv_bin = str(REPO / ".venv" / "bin")
    # the engine cache stays where setup put it (its default is under the real home)
    cache = os.environ.get("V2V_ENGINE_CACHE", str(Path.home() / ".cache" / "v2v-engine"))
    env = {**os.environ, "HOME": str(home), "V2V_DATA": str(base / "data"), "V2V_RUNS": str(base / "runs"),
           "V2V_ENGINE_CACHE": cache,
           "V2V_MAX_ITER": "1", "PATH": venv_bin + os.pathsep + os.environ["PATH"],
           "VIRTUAL_ENV": str(REPO / ".venv"), "MPLBACKEND": "Agg"}
    return env, base


def _script(step: Step) -> str:
    lines = [x for x in step.lines if x not in ELSEWHERE]
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def where(token: str, env: dict) -> Path:
    """A path as written, resolved as the tools resolve it under this environment."""
    if token.startswith("~/"):
        return Path(env["HOME"]) / token[2:]
    parts = Path(token).parts
    if parts and parts[0] in ("data", "runs"):
        root = env["V2V_DATA"] if parts[0] == "data" else env["V2V_RUNS"]
        return Path(root).joinpath(*parts[1:])
    return REPO / token


def _exists(token: str, env: dict) -> bool:
    p = where(token, env)
    if any(c in token for c in "*?"):
        return bool(list(Path(p.anchor).glob(str(p.relative_to(p.anchor)))))
    return p.exists()


def _listing() -> dict:
    return {d: sorted(os.listdir(REPO / d)) if (REPO / d).exists() else None for d in ("data", "runs")}


@pytest.fixture(scope="module")
def ran(world):
    """Run every runnable step in stage order; the first failure fails the module."""
    env, base = world
    before = _listing()
    for step in RUNNABLE:
        r = subprocess.run(["bash", "-c", _script(step)], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, f"{step.source}:\n{step.text}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return env, base, before


@pytest.mark.slow
def test_paths_named_by_commands_exist_afterwards(ran):
    env, _, _ = ran
    missing = [(s.source, p) for s in RUNNABLE for p in s.paths() if not _exists(p, env)]
    assert not missing, f"paths named by commands but not there afterwards: {missing}"


@pytest.mark.slow
def test_commands_leave_the_repository_alone(ran):
    assert _listing() == ran[2], "a README command wrote into the repository's data/ or runs/"


@pytest.mark.slow
def test_every_paper_row_was_trained_and_evaluated(ran):
    """Each row's evaluation ran on what its training wrote, with the paper's value beside it."""
    env, base, _ = ran
    results = {json.loads(p.read_text())["net"]: json.loads(p.read_text())
               for p in (base / "runs" / "eval").glob("*/results.json")}
    for v in VARIANTS:
        if v.key.startswith("flow_v2v_sintel_fold"):
            continue  # the 3-fold command evaluates them together (runs/sintel_3fold)
        res = results.get(v.key)
        assert res is not None, f"no README command evaluated {v.key}"
        metric = {"seg": "pixel_accuracy", "flow": "epe", "color": "ade"}[v.task]
        assert np.isfinite(res[metric]) and res["clips"] >= 1 and res["paper"] is not None, res
    folds = json.loads((base / "runs" / "eval" / "sintel_3fold" / "results.json").read_text())
    assert [f["fold"] for f in folds["folds"]] == [0, 1, 2] and np.isfinite(folds["epe"])


@pytest.mark.parametrize("step", [s for s in STEPS if s.synopsis], ids=lambda s: s.source)
def test_synopses_match_their_tools(step):
    """A synopsis names a real tool and only flags that tool has."""
    if step.text.startswith("caffe "):
        cmd, flags = validate.parse_caffe_args(step.text.split()[1:])
        assert cmd in CAFFE_FLAGS and set(flags) <= CAFFE_FLAGS[cmd], step
        return
    m = re.match(r"python -m ([\w.]+)", step.text)
    assert m, f"{step.source}: a synopsis must name a python -m tool or caffe: {step.text}"
    r = subprocess.run([sys.executable, "-m", m.group(1), "--help"], cwd="/", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", step.text):
        assert flag in r.stdout, f"{step.source}: {flag} is not in `python -m {m.group(1)} --help`"


def test_commands_not_run_here_are_make_targets():
    named = {line for s in STEPS for line in s.lines}
    makefile = (REPO / "Makefile").read_text()
    for cmd in ELSEWHERE:
        assert cmd in named, f"{cmd} is no longer in the docs: drop it from ELSEWHERE"
        assert f"\n{cmd.split()[1]}:" in makefile, f"{cmd}: no such Makefile target"


def test_every_doc_has_commands():
    for doc in DOCS:
        assert any(s.source.startswith(str(doc.relative_to(REPO))) and not s.synopsis for s in STEPS), doc
