#!/usr/bin/env bash
# Train a solver with the PyTorch runtime over several nodes: srun starts one torchrun per
# node, torchrun starts one DDP rank per GPU (CPU nodes: one rank, gloo), and the ranks meet
# at a c10d rendezvous on the job's first node (address and port from the Slurm
# environment). Ranks = nodes × ranks per node; gradients are averaged over them, so the
# effective batch is ranks × batch_size × iter_size (torch_runtime/README.md).
#
#   sbatch --nodes=4 --gpus-per-node=8 --cpus-per-task=64 \
#       --export=ALL,V2V_SOLVER=prototxt/flow_solver.prototxt cluster/train_torch_ddp.sh
#
# Rank 0 writes the run folder (runs/<net>, or V2V_OUT) on the shared filesystem; running
# the same job again resumes from its newest snapshot. Slurm sends SIGTERM 5 minutes before
# the time limit (--signal): tools.train writes a snapshot and exits 130; resubmit to go on.
#
# Environment:
#   V2V_SOLVER          the solver prototxt (required)
#   V2V_OUT             the run folder [runs/<net> under $V2V_RUNS or the repo]
#   V2V_PROCS_PER_NODE  ranks per node [the GPUs Slurm gave the node; 1 without GPUs]
#   V2V_TRAIN_ARGS      more tools.train options (e.g. "--weights data/c3d/c3d_sport1m.caffemodel")
#   V2V_RDZV_PORT       the rendezvous port on the first node [20000 + job id mod 20000]
#   V2V_REPO, V2V_PYTHON, V2V_DRY_RUN as for the other cluster/ scripts
#SBATCH --job-name=v2v-train-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300
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
[[ -n ${SLURM_JOB_ID:-} ]] || v2v_die "not inside a Slurm job: submit with sbatch (see the header of this script)"
solver=${V2V_SOLVER:-}
[[ -n $solver ]] || v2v_die "set V2V_SOLVER to the solver prototxt, e.g. --export=ALL,V2V_SOLVER=prototxt/flow_solver.prototxt"
[[ -f $solver ]] || v2v_die "V2V_SOLVER=$solver: no such file (relative paths start at $V2V_REPO_ROOT)"
nodes=${SLURM_NNODES:-1}

# Ranks per node: one per GPU Slurm gave this node (SLURM_GPUS_ON_NODE), else one CPU rank.
gpus=${SLURM_GPUS_ON_NODE:-0}
procs=${V2V_PROCS_PER_NODE:-$((gpus > 0 ? gpus : 1))}
v2v_positive V2V_PROCS_PER_NODE "$procs"
args=(--solver "$solver" --engine torch)
((gpus > 0)) || args+=(--device cpu)
[[ -z ${V2V_OUT:-} ]] || args+=(--out "$V2V_OUT")
read -r -a extra <<<"${V2V_TRAIN_ARGS:-}"
args+=("${extra[@]}")

# The rendezvous: the first node of the allocation, by the address Slurm reaches it at.
mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${hosts[0]:?no nodes in SLURM_JOB_NODELIST}
addr=$(scontrol show node -o "$head_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
addr=${addr:-$head_node}
port=${V2V_RDZV_PORT:-$((20000 + SLURM_JOB_ID % 20000))}

# Threads per rank: the task's CPUs shared by its ranks (torchrun would otherwise set 1).
cpus=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((cpus / procs > 0 ? cpus / procs : 1))}
# srun does not inherit --cpus-per-task from sbatch in every Slurm version: pass it on.
# A node's torchrun exits 1 when it stops on SIGTERM, even after its ranks wrote the
# snapshot and left cleanly: so no --kill-on-bad-exit (it would kill rank 0 while it writes
# the run's logs); a node whose ranks crash ends the step 2 minutes later (--wait).
step=(srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=0 --wait=120)
[[ -z ${SLURM_CPUS_PER_TASK:-} ]] || step+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")

v2v_note "$nodes node(s) × $procs rank(s), rendezvous $addr:$port (job $SLURM_JOB_ID)"
v2v_run "${step[@]}" "$PY" -m torch.distributed.run --nnodes="$nodes" --nproc_per_node="$procs" \
    --rdzv_backend=c10d --rdzv_endpoint="$addr:$port" --rdzv_id="v2v-$SLURM_JOB_ID" --max_restarts=0 \
    -m tools.train "${args[@]}"
