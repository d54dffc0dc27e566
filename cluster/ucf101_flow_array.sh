#!/usr/bin/env bash
# One shard of the UCF101 flow database per Slurm array task: task k of an array 0..N-1
# runs `python -m data_prep.ucf101 --task flow ... --shard k/N` (it builds
# <db>.shard-k-of-N; cluster/ucf101_flow_merge.sh merges the N shards afterwards).
# A killed, failed or preempted task resumes where it stopped when it runs again (the
# builder skips the videos already stored): requeued by Slurm (--requeue), or resubmitted
# alone with cluster/submit_ucf101_flow.sh --shards N --tasks k.
#
#   cluster/submit_ucf101_flow.sh --shards 64            # the array and the merge job
#   sbatch --array=0-63 cluster/ucf101_flow_array.sh      # the array alone (N = 64 tasks)
#
# Environment (defaults in brackets):
#   V2V_UCF_ROOT    the UCF-101 folder of class folders [~/data/UCF-101]
#   V2V_UCF_SPLITS  the ucfTrainTestlist folder [~/data/ucfTrainTestlist]
#   V2V_SPLIT       train | test [train];  V2V_SPLIT_ID  1 | 2 | 3 [1]
#   V2V_UCF_TASK    flow | color [flow]
#   V2V_OUT         the database [data/db/ucf101_<task>/<split> under $V2V_DATA or the repo]
#   V2V_SHARDS      N [the array's task count when the array is 0..N-1; required otherwise]
#   V2V_WORKERS     processes per task [$SLURM_CPUS_PER_TASK]
#   V2V_BUILD_ARGS  more data_prep.ucf101 options (e.g. "--gpu", "--stride 8")
#   V2V_REPO, V2V_PYTHON  the repository and its Python [found from the submit directory; .venv]
#   V2V_DRY_RUN=1   print the command instead of running it
#SBATCH --job-name=v2v-ucf101-flow
#SBATCH --cpus-per-task=4
#SBATCH --mem-per-cpu=2G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%A_%a.out
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
k=${SLURM_ARRAY_TASK_ID:-}
[[ $k =~ ^[0-9]+$ ]] || v2v_die "not a Slurm array task (SLURM_ARRAY_TASK_ID is '${k}'): submit with \
sbatch --array=0-N-1, or cluster/submit_ucf101_flow.sh --shards N"
n=$(v2v_shards)
((k < n)) || v2v_die "array task $k is not a shard of $n (tasks are 0..$((n - 1)))"
workers=${V2V_WORKERS:-${SLURM_CPUS_PER_TASK:-1}}
v2v_positive V2V_WORKERS "$workers"
task=${V2V_UCF_TASK:-flow}
split=${V2V_SPLIT:-train}
cmd=("$PY" -m data_prep.ucf101 --task "$task" --root "${V2V_UCF_ROOT:-$HOME/data/UCF-101}"
     --splits "${V2V_UCF_SPLITS:-$HOME/data/ucfTrainTestlist}" --split "$split"
     --split-id "${V2V_SPLIT_ID:-1}" --workers "$workers" --shard "$k/$n")
if [[ -n ${V2V_OUT:-} ]]; then
    cmd+=(--out "$(v2v_ucf_out "$PY" "$task" "$split")")
fi
read -r -a extra <<<"${V2V_BUILD_ARGS:-}"
cmd+=("${extra[@]}")

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread per worker: --workers is the parallelism
v2v_note "shard $k/$n on $(hostname) (job ${SLURM_JOB_ID:-none}, restart ${SLURM_RESTART_COUNT:-0}), $workers worker(s)"
start=$SECONDS
v2v_run "${cmd[@]}"
[[ ${V2V_DRY_RUN:-0} == 1 ]] || v2v_note "shard $k/$n done in $((SECONDS - start)) s"
