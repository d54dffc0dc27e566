"""The Slurm job scripts in cluster/, without a Slurm: they are strict and lint clean, their
#SBATCH lines are ones sbatch reads, and the commands they run (printed with
V2V_DRY_RUN=1, from a copy of the script as sbatch runs it) are accepted by the real
parsers of data_prep.ucf101, torchrun and tools.train. The array and merge scripts also
run for real on a tiny UCF101-shaped set, and the merge equals a one-process build.
`make slurm-check` runs all of them under a real (private) Slurm."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.paths import REPO

CLUSTER = REPO / "cluster"
SCRIPTS = sorted(p for p in CLUSTER.glob("*.sh") if p.name != "lib.sh")
JOBS = ["ucf101_flow_array.sh", "ucf101_flow_merge.sh", "train_torch_ddp.sh", "train_caffe_1node.sh"]
# sbatch 22.05's long options (`sbatch --help`, and --open-mode, which it does not list)
SBATCH_OPTIONS = set("""open-mode account array bb bbf begin chdir cluster-constraint clusters comment constraint
container contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
distribution error exclude exclusive export export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus
gpus-per-node gpus-per-socket gpus-per-task gres gres-flags hold ignore-pbs input job-name licenses mail-type
mail-user mcs-label mem mem-per-cpu mem-per-gpu mincpus nice no-kill no-requeue nodefile nodelist nodes ntasks
ntasks-per-core ntasks-per-node ntasks-per-socket output overcommit oversubscribe parsable partition power
priority profile propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches
thread-spec threads-per-core time time-min tmp uid use-min-nodes verbose wait wckey wrap""".split())


def directives(path: Path) -> tuple[list[str], int]:
    """The script's #SBATCH options and the line number of its first command."""
    opts, first = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if s.startswith("#SBATCH"):
            assert first is None, f"{path.name}:{n}: #SBATCH after the first command (line {first}): sbatch ignores it"
            opts.append(s.split(None, 1)[1])
        elif s and not s.startswith("#") and first is None:
            first = n
    return opts, first


def run_script(name: str, env: dict, tmp_path: Path, submit_dir: Path = REPO / "models", check=True):
    """Run a copy of cluster/<name> from elsewhere, as sbatch does (its spool folder), with
    the Slurm variables in ``env``; returns the CompletedProcess."""
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    script = spool / "slurm_script"
    shutil.copy(CLUSTER / name, script)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "V2V_"))}
    r = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**base, "SLURM_SUBMIT_DIR": str(submit_dir), "HOME": str(tmp_path), **env})
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def commands(out: str) -> list[list[str]]:
    """The commands a script printed ("+ cmd args")."""
    return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def after(argv: list[str], marker: list[str]) -> list[str]:
    i = next(i for i in range(len(argv)) if argv[i:i + len(marker)] == marker)
    return argv[i + len(marker):]


# ------------------------------------------------------------------ every script
def test_scripts_are_strict_and_executable():
    """(tests/test_repo.py shellchecks them with the repo's other scripts.)"""
    assert {p.name for p in SCRIPTS} >= {*JOBS, "submit_ucf101_flow.sh", "slurm_check.sh"}
    for p in SCRIPTS:
        assert p.stat().st_mode & stat.S_IXUSR, f"{p.name} is not executable"
        text = p.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), p.name
        first = next(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
        assert first == "set -euo pipefail", f"{p.name}: the first command is {first!r}"


def test_sbatch_directives_are_read_by_sbatch(tmp_path):
    """All #SBATCH lines come before the first command (sbatch stops reading there) and
    name sbatch options; where Slurm is installed, sbatch itself parses them (up to
    contacting a controller, which is deliberately unreachable)."""
    for name in JOBS:
        opts, _ = directives(CLUSTER / name)
        assert opts, name
        for o in opts:
            assert o.startswith("--") and o[2:].split("=")[0] in SBATCH_OPTIONS, f"{name}: {o}"
    array, _ = directives(CLUSTER / "ucf101_flow_array.sh")
    out = next(o for o in array if o.startswith("--output="))
    assert "%A" in out and "%a" in out, "array tasks would write one log file"
    assert "--requeue" in array and "--open-mode=append" in array, "a requeued task must keep its log"
    if not shutil.which("sbatch"):
        pytest.skip("sbatch not installed (make slurm-check installs it)")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=1\nTCPTimeout=1\n"
                    "NodeName=localhost\nPartitionName=p Nodes=localhost\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for name in JOBS:
        r = subprocess.run(["sbatch", "--test-only", str(CLUSTER / name)], capture_output=True, text=True,
                           env=env, timeout=60)
        assert "Unable to contact slurm controller" in r.stdout + r.stderr, f"{name}: {r.stdout}{r.stderr}"
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\n#SBATCH --time=4h\ntrue\n")
    r = subprocess.run(["sbatch", "--test-only", str(bad)], capture_output=True, text=True, env=env, timeout=60)
    assert "Invalid --time" in r.stderr  # the probe does parse the directives


# ------------------------------------------------------------------ the UCF101 flow array
def ucf_args(out: str) -> tuple:
    """The data_prep.ucf101 command a dry run printed, parsed by the tool's own parser."""
    from data_prep.db import parse_shard
    from data_prep.ucf101 import _parser
    (cmd,) = [c for c in commands(out) if "data_prep.ucf101" in c]
    a = _parser().parse_args(after(cmd, ["-m", "data_prep.ucf101"]))
    return a, parse_shard(a.shard)


def array_env(task, count, lo, hi, **extra):
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count),
            "SLURM_ARRAY_TASK_MIN": str(lo), "SLURM_ARRAY_TASK_MAX": str(hi), "V2V_DRY_RUN": "1", **extra}


def test_array_task_builds_its_shard(tmp_path):
    r = run_script("ucf101_flow_array.sh", array_env(2, 4, 0, 3, SLURM_CPUS_PER_TASK="3",
                                                     V2V_UCF_ROOT="/d/UCF-101", V2V_OUT="db/x"), tmp_path)
    a, shard = ucf_args(r.stdout)
    assert shard == (2, 4) and a.task == "flow" and a.workers == 3 and a.root == "/d/UCF-101"
    assert a.out == str(REPO / "db" / "x")  # relative to the repository, where the job runs
    # resubmitted alone (--array=2): the task count is 1, the shard count comes from V2V_SHARDS
    r = run_script("ucf101_flow_array.sh", array_env(2, 1, 2, 2, V2V_SHARDS="4"), tmp_path)
    assert ucf_args(r.stdout)[1] == (2, 4)


@pytest.mark.parametrize("env", [array_env(2, 1, 2, 2), array_env(0, 1, 0, 0), array_env(4, 8, 0, 14),
                                 array_env(5, 4, 0, 3, V2V_SHARDS="4")],
                         ids=["resubmitted", "task-0-alone", "stepped-array", "id-beyond-N"])
def test_array_task_refuses_an_unknown_shard_count(tmp_path, env):
    """A lone task 0 would otherwise be 'shard 0 of 1': the whole database, unsharded."""
    r = run_script("ucf101_flow_array.sh", env, tmp_path, check=False)
    assert r.returncode == 2 and "error:" in r.stderr and "+ " not in r.stdout, r.stdout + r.stderr


def test_scripts_find_the_repository_from_the_submit_directory(tmp_path):
    r = run_script("ucf101_flow_array.sh", array_env(0, 2, 0, 1), tmp_path, submit_dir=tmp_path, check=False)
    assert r.returncode != 0 and "set V2V_REPO" in r.stderr
    r = run_script("ucf101_flow_array.sh", array_env(0, 2, 0, 1, V2V_REPO=str(REPO)), tmp_path,
                   submit_dir=tmp_path)
    assert ucf_args(r.stdout)[1] == (0, 2)


def tiny_ucf(root: Path, videos=3) -> None:
    from data_prep.synthetic import make_scene, write_video
    rng = np.random.default_rng(0)
    names = []
    for i in range(videos):
        names.append(f"Biking/v_Biking_g{i + 1:02d}_c01.avi")
        write_video(root / "UCF-101" / names[-1], make_scene(rng, frames=17, height=32, width=48).frames)
    (root / "lists").mkdir()
    (root / "lists" / "trainlist01.txt").write_text("".join(f"{n} 1\n" for n in names))


def test_array_and_merge_scripts_build_the_one_process_database(tmp_path):
    """The array script for each task, then the merge script: the checksum of the direct
    one-process build. The merge refuses while a shard is missing, naming the resubmission."""
    tiny_ucf(tmp_path)
    env = {"V2V_UCF_ROOT": str(tmp_path / "UCF-101"), "V2V_UCF_SPLITS": str(tmp_path / "lists"),
           "V2V_OUT": str(tmp_path / "db" / "sharded"), "V2V_BUILD_ARGS": "--height 24 --width 32"}
    run_script("ucf101_flow_array.sh", {**array_env(0, 2, 0, 1), **env, "V2V_DRY_RUN": "0"}, tmp_path)
    r = run_script("ucf101_flow_merge.sh", {**env, "V2V_SHARDS": "2"}, tmp_path, check=False)
    assert r.returncode == 2 and "--shards 2 --tasks 1\n" in r.stderr, r.stderr
    run_script("ucf101_flow_array.sh", {**array_env(1, 2, 0, 1), **env, "V2V_DRY_RUN": "0"}, tmp_path)
    r = run_script("ucf101_flow_merge.sh", {**env, "V2V_SHARDS": "2", "V2V_DELETE_SHARDS": "1"}, tmp_path)
    assert "merged database: 3 clips, 0 bad item(s)" in r.stdout, r.stdout
    subprocess.run([sys.executable, "-m", "data_prep.ucf101", "--task", "flow", "--root", env["V2V_UCF_ROOT"],
                    "--splits", env["V2V_UCF_SPLITS"], "--out", str(tmp_path / "db" / "one"), "--height", "24",
                    "--width", "32"], cwd=REPO, check=True, capture_output=True, timeout=300)
    man = {k: json.loads((tmp_path / "db" / k / "manifest.json").read_text()) for k in ("sharded", "one")}
    assert man["sharded"]["count"] == 3 and man["sharded"]["checksum"] == man["one"]["checksum"]
    assert not list((tmp_path / "db").glob("sharded.shard-*")), "V2V_DELETE_SHARDS=1 kept the shards"


def submit_dry(*args, env=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "V2V_"))}
    r = subprocess.run(["bash", str(CLUSTER / "submit_ucf101_flow.sh"), "--dry-run", *args], cwd="/",
                       capture_output=True, text=True, timeout=120, env={**base, **(env or {})})
    return r, commands(r.stderr)


def sbatch_opts(cmd: list[str]) -> tuple[dict, dict, str]:
    """(V2V_* environment, --option=value of sbatch, the script) of a printed sbatch command."""
    i = cmd.index("sbatch")
    env = dict(x.split("=", 1) for x in cmd[:i])
    opts = dict(o[2:].split("=", 1) for o in cmd[i + 1:-1])
    return env, opts, cmd[-1]


def test_submit_helper_submits_the_array_then_the_merge_after_it():
    r, cmds = submit_dry("--shards", "4", "--cpus", "2", "--", "--partition=cpu", env={"V2V_OUT": "/d/db"})
    assert r.returncode == 0, r.stderr
    (env_a, array, script_a), (env_m, merge, script_m) = (sbatch_opts(c) for c in cmds)
    assert script_a.endswith("cluster/ucf101_flow_array.sh") and script_m.endswith("cluster/ucf101_flow_merge.sh")
    assert array["array"] == "0-3" and array["cpus-per-task"] == "2" and array["partition"] == merge["partition"]
    assert merge["dependency"] == "afterok:DRYRUN"  # the array's job id
    assert env_a == env_m == {"V2V_REPO": str(REPO), "V2V_SHARDS": "4", "V2V_OUT": "/d/db"}
    assert array["comment"] == "array:v2v:flow:/d/db:4" and merge["comment"] == "merge:v2v:flow:/d/db:4"
    r, cmds = submit_dry("--shards", "4", "--tasks", "1,3", env={"V2V_OUT": "/d/db"})
    env_a, array, _ = sbatch_opts(cmds[0])
    assert array["array"] == "1,3" and env_a["V2V_SHARDS"] == "4"
    r, cmds = submit_dry("--shards", "4", "--tasks", "2-4")
    assert r.returncode == 2 and "task 4 is not a shard of 4" in r.stderr and not cmds


# ------------------------------------------------------------------ training
def fake_scontrol(tmp_path: Path) -> str:
    """A PATH with an `scontrol` answering what the DDP script asks."""
    b = tmp_path / "bin"
    b.mkdir()
    (b / "scontrol").write_text('#!/bin/sh\ncase "$1 $2" in\n  "show hostnames") printf "gpu07\\ngpu08\\n";;\n'
                                '  "show node") echo "NodeName=$4 Arch=x86_64 NodeAddr=10.1.0.7 NodeHostName=$4";;\n'
                                "esac\n")
    (b / "scontrol").chmod(0o755)
    return f"{b}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.parametrize("gpus", [0, 4])
def test_ddp_script_starts_one_torchrun_per_node_at_one_rendezvous(tmp_path, gpus):
    from torch.distributed.run import get_args_parser

    from tools.train import check_args, parser
    env = {"PATH": fake_scontrol(tmp_path), "SLURM_JOB_ID": "4321", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_CPUS_PER_TASK": "16", "V2V_DRY_RUN": "1",
           "V2V_SOLVER": "prototxt/flow_solver.prototxt", "V2V_TRAIN_ARGS": "--weights w.caffemodel"}
    if gpus:
        env["SLURM_GPUS_ON_NODE"] = str(gpus)
    (cmd,) = commands(run_script("train_torch_ddp.sh", env, tmp_path).stdout)
    srun = cmd[:cmd.index(next(x for x in cmd if x.endswith("python")))]
    assert srun[0] == "srun" and {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=16"} <= set(srun)
    tr = get_args_parser().parse_args(after(cmd, ["-m", "torch.distributed.run"]))
    assert (tr.nnodes, tr.nproc_per_node, tr.rdzv_backend) == ("2", str(gpus or 1), "c10d")
    assert tr.rdzv_endpoint == "10.1.0.7:24321" and tr.rdzv_id == "v2v-4321"  # first node's address
    assert tr.module and tr.training_script == "tools.train"
    ap = parser()
    a = ap.parse_args(tr.training_script_args)
    check_args(ap, a)
    assert a.engine == "torch" and a.solver == env["V2V_SOLVER"] and a.weights == ["w.caffemodel"]
    assert a.device == (None if gpus else "cpu")


@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_caffe_script_trains_on_one_node(tmp_path, gpus):
    from models.validate import parse_caffe_args
    from tools.train import check_args, parser
    env = {"V2V_CAFFE_GPUS": str(gpus), "V2V_DRY_RUN": "1", "V2V_SOLVER": "prototxt/seg_solver.prototxt",
           "V2V_WEIGHTS": "data/c3d/c3d_sport1m.caffemodel"}
    (cmd,) = commands(run_script("train_caffe_1node.sh", env, tmp_path).stdout)
    if gpus <= 1:
        ap = parser()
        a = ap.parse_args(after(cmd, ["-m", "tools.train"]))
        check_args(ap, a)
        assert a.engine == "caffe" and a.device == ("cuda:0" if gpus else "cpu")
        assert a.weights == [env["V2V_WEIGHTS"]]
    else:
        assert cmd[0] == str(REPO / ".venv" / "bin" / "caffe")
        assert parse_caffe_args(cmd[1:]) == ("train", {"solver": env["V2V_SOLVER"], "gpu": "0,1",
                                                       "weights": env["V2V_WEIGHTS"]})


def check_helpers():
    spec = importlib.util.spec_from_file_location("check_helpers", CLUSTER / "check_helpers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ddp_check_nets_differ_only_in_their_data_layers(tmp_path):
    """slurm-check's DDP equivalence needs the 2-rank net and the 1-process net to start
    from the same weights: the same learnable layers, in the same order, with the same
    fillers (seeded by the solver), and a data batch of B per rank vs 2B in one process."""
    from tests.data_fixtures import write_tiny_db
    from torch_runtime.net import TorchNet
    from torch_runtime.train import fill
    write_tiny_db(tmp_path / "db", "flow", H=32, W=40, n=2)
    solvers = check_helpers().ddp_nets(tmp_path / "nets", tmp_path / "db")
    nets = {}
    for k in ("ddp", "one"):
        text = Path(solvers[k]).read_text()
        net = TorchNet(re.search(r'net: "(.*)"', text).group(1), "TRAIN")
        fill(net, int(re.search(r"random_seed: (\d+)", text).group(1)))
        nets[k] = net
    pa, pb = ({n: [b.detach().numpy() for b in layer.blobs] for n, layer in nets[k].layers.items() if layer.blobs}
              for k in ("ddp", "one"))
    assert list(pa) == list(pb) == ["conv1", "conv2"]
    assert all(np.array_equal(x, y) for k in pa for x, y in zip(pa[k], pb[k]))
    texts = {k: Path(solvers[k].replace("_solver", "_net")).read_text() for k in ("ddp", "one")}
    seeds = {k: [json.loads(p)["seed"] for p in re.findall(r"param_str: '(.*)'", t)] for k, t in texts.items()}
    assert seeds == {"ddp": [5], "one": [5, 6]}  # rank r reads with seed + r (torch_runtime.data)


def test_every_script_finds_the_repository_with_the_same_code():
    """sbatch runs a copy of a script from its spool folder, so each script carries the
    finder before it can source lib.sh: the copies must stay one text."""
    def finder(p):
        text = p.read_text()
        start = text.index("v2v_find_repo() {")
        return text[start:text.index("\n}\n", start)]
    texts = {p.name: finder(p) for p in SCRIPTS if "v2v_find_repo() {" in p.read_text()}
    assert set(texts) >= {*JOBS, "submit_ucf101_flow.sh"}
    assert len(set(texts.values())) == 1, sorted(texts)
