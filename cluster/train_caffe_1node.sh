#!/usr/bin/env bash
# Train a solver with Caffe (this repository's C3D Caffe) on one node.
#
#   sbatch --gpus=1 --export=ALL,V2V_SOLVER=prototxt/seg_solver.prototxt,\
#   V2V_WEIGHTS=data/c3d/c3d_sport1m.caffemodel cluster/train_caffe_1node.sh
#
# One GPU (or none: the CPU) goes through `python -m tools.train --engine caffe`: validation,
# logs, snapshots in runs/<net> (or V2V_OUT), and resume when the job runs again; SIGTERM
# before the time limit (--signal) writes a snapshot. Several GPUs (V2V_CAFFE_GPUS > 1) go
# to `caffe train -gpu 0,1,...` (Caffe's own multi-GPU solver, P2PSync): Caffe cannot run
# Python layers there, and every train net of this repository reads its clips with one
# (data_prep.layers.ClipDataLayer), so for them the caffe wrapper refuses with that reason;
# it serves nets with Caffe's own data layers only. Several GPUs for our nets:
# cluster/train_torch_ddp.sh (on one node: sbatch --nodes=1 --gpus-per-node=N ...).
#
# Environment:
#   V2V_SOLVER      the solver prototxt (required)
#   V2V_WEIGHTS     weights to start from (tools.train --weights / caffe -weights)
#   V2V_OUT         the run folder [runs/<net>] (one device only)
#   V2V_CAFFE_GPUS  GPUs to train on [the GPUs Slurm gave the job, else 0 = the CPU]
#   V2V_TRAIN_ARGS  more tools.train options (one device only)
#   V2V_REPO, V2V_PYTHON, V2V_DRY_RUN as for the other cluster/ scripts
#SBATCH --job-name=v2v-train-caffe
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# The repository: $V2V_REPO, else the folder above this script, else the submit directory
# or one of its parents (sbatch runs a copy of this script from Slurm's spool folder).
v2v_find_repo() {
    local d
    if [[ -n ${V2V_REPO:-} ]]; then
        [[ -f $V2V_REPO/cluster/lib.sh ]] || { echo "error: V2V_REPO=$V2V_REPO is not the v2v repository" >&2; return 1; }
        (cd -- "$V2V_REPO" && pwd)
        return
    fi
    for d in "$(dirname -- "${BASH_SOURCE[0]}")/.." "${SLURM_SUBMIT_DIR:-.}"; do
        d=$(cd -- "$d" 2>/dev/null && pwd) || continue
        while :; do
            if [[ -f $d/cluster/lib.sh && -f $d/data_prep/ucf101.py ]]; then
                echo "$d"
                return
            fi
            [[ $d == / ]] && break
            d=$(dirname -- "$d")
        done
    done
    echo "error: cannot find the v2v repository: submit from inside it, or set V2V_REPO=/path/to/it" >&2
    return 1
}
V2V_REPO_ROOT=$(v2v_find_repo)
# shellcheck source=/dev/null
source "$V2V_REPO_ROOT/cluster/lib.sh"
cd "$V2V_REPO_ROOT"

PY=$(v2v_python)
solver=${V2V_SOLVER:-}
[[ -n $solver ]] || v2v_die "set V2V_SOLVER to the solver prototxt, e.g. --export=ALL,V2V_SOLVER=prototxt/seg_solver.prototxt"
[[ -f $solver ]] || v2v_die "V2V_SOLVER=$solver: no such file (relative paths start at $V2V_REPO_ROOT)"
gpus=${V2V_CAFFE_GPUS:-${SLURM_GPUS_ON_NODE:-0}}
[[ $gpus =~ ^[0-9]+$ ]] || v2v_die "V2V_CAFFE_GPUS must be a number of GPUs, got '$gpus'"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

if ((gpus <= 1)); then
    if ((gpus == 1)); then
        device=cuda:0 where="GPU 0 of the job"
    else
        device=cpu where="the CPU"
    fi
    args=(--solver "$solver" --engine caffe --device "$device")
    [[ -z ${V2V_WEIGHTS:-} ]] || args+=(--weights "$V2V_WEIGHTS")
    [[ -z ${V2V_OUT:-} ]] || args+=(--out "$V2V_OUT")
    read -r -a extra <<<"${V2V_TRAIN_ARGS:-}"
    v2v_note "Caffe on $where (job ${SLURM_JOB_ID:-none})"
    # exec: the batch shell's SIGTERM (--signal=B:TERM) reaches tools.train, which snapshots.
    v2v_exec "$PY" -m tools.train "${args[@]}" "${extra[@]}"
fi
[[ -z ${V2V_OUT:-} && -z ${V2V_TRAIN_ARGS:-} ]] || v2v_die "V2V_OUT and V2V_TRAIN_ARGS are tools.train \
options: with V2V_CAFFE_GPUS > 1 caffe train runs (snapshots under the solver's snapshot_prefix)"
ids=$(seq -s, 0 $((gpus - 1)))
cmd=("$V2V_REPO_ROOT/.venv/bin/caffe" train -solver "$solver" -gpu "$ids")
[[ -z ${V2V_WEIGHTS:-} ]] || cmd+=(-weights "$V2V_WEIGHTS")
v2v_note "caffe train on GPUs $ids (job ${SLURM_JOB_ID:-none}); the wrapper refuses nets with Python layers"
v2v_exec "${cmd[@]}"
