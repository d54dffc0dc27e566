#!/usr/bin/env bash
# Submit the UCF101 flow database as a Slurm array (one shard per task) plus the merge job
# that runs after all of them (--dependency=afterok), or resubmit some tasks alone.
#
#   cluster/submit_ucf101_flow.sh --shards 64 [--cpus 4] [--time 04:00:00] [-- --partition=cpu ...]
#   cluster/submit_ucf101_flow.sh --shards 64 --tasks 5,17     # after tasks 5 and 17 failed
#
# --tasks resubmits only those tasks (same N: they resume their shards) and a new merge job
# after them; it cancels the earlier merge job (a failed task means its afterok can never be
# met) and, while tasks of the earlier array still run, makes the new merge wait for those
# too. Options after "--" go to both sbatch calls (partition, account, qos ...). The build's
# settings are the V2V_* variables of cluster/ucf101_flow_array.sh, taken from this
# environment (the jobs get --export=ALL). Logs: $V2V_SLURM_LOGS [runs/slurm under $V2V_RUNS].
# --dry-run (or V2V_DRY_RUN=1) prints the sbatch commands without submitting.
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

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

shards="" tasks="" cpus="" time_limit="" max_running="" dry=${V2V_DRY_RUN:-0}
extra=()
while (($#)); do
    case $1 in
        --shards) shards=${2:?--shards needs N}; shift 2 ;;
        --tasks) tasks=${2:?--tasks needs a list, e.g. 5,17 or 3-6}; shift 2 ;;
        --cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
        --time) time_limit=${2:?--time needs a time limit}; shift 2 ;;
        --max-running) max_running=${2:?--max-running needs a number}; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h | --help) usage 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "error: unknown option $1" >&2; usage 2 ;;
    esac
done
[[ -n $shards ]] || v2v_die "give --shards N (the number of array tasks; see cluster/README.md for sizing)"
v2v_positive --shards "$shards"
((shards <= 1000)) || v2v_die "--shards $shards: Slurm's default MaxArraySize allows task ids up to 1000"
[[ -z $cpus ]] || v2v_positive --cpus "$cpus"
[[ -z $max_running ]] || v2v_positive --max-running "$max_running"

# The task ids to submit: all (0..N-1) or the --tasks list (ids and ranges, each < N).
ids=()
if [[ -z $tasks ]]; then
    spec="0-$((shards - 1))"
else
    IFS=, read -r -a parts <<<"$tasks"
    for p in "${parts[@]}"; do
        if [[ $p =~ ^([0-9]+)-([0-9]+)$ ]]; then
            for ((i = BASH_REMATCH[1]; i <= BASH_REMATCH[2]; i++)); do ids+=("$i"); done
        elif [[ $p =~ ^[0-9]+$ ]]; then
            ids+=("$p")
        else
            v2v_die "--tasks $tasks: expected ids and ranges such as 5,17 or 3-6"
        fi
    done
    for i in "${ids[@]}"; do
        ((10#$i < shards)) || v2v_die "--tasks: task $i is not a shard of $shards (0..$((shards - 1)))"
    done
    spec=$tasks
fi
[[ -z $max_running ]] || spec="$spec%$max_running"

PY=$(v2v_python)
task=${V2V_UCF_TASK:-flow}
split=${V2V_SPLIT:-train}
out=$(v2v_ucf_out "$PY" "$task" "$split")
export V2V_REPO=$V2V_REPO_ROOT V2V_SHARDS=$shards V2V_OUT=$out
tag="v2v:$task:$out:$shards"
name="v2v-ucf101-$task-$split"
logs=${V2V_SLURM_LOGS:-${V2V_RUNS:-$V2V_REPO_ROOT/runs}/slurm}
[[ $dry == 1 ]] || mkdir -p "$logs"

# Jobs of this build (same database and N) still in the queue: "<array job>|<job>|<state>|<comment>".
active=()
if [[ $dry == 0 ]]; then
    command -v sbatch >/dev/null || v2v_die "sbatch not found: run this on a Slurm login node"
    err=$(squeue -h -u "$(id -un)" 2>&1 >/dev/null) || v2v_die "cannot reach Slurm (squeue: ${err##*$'\n'})"
    mapfile -t active < <(squeue -h -r -u "$(id -un)" -o '%F|%i|%T|%k' | grep -F "|array:$tag" || true)
    mapfile -t -O "${#active[@]}" active < <(squeue -h -u "$(id -un)" -o '%F|%i|%T|%k' | grep -F "|merge:$tag" || true)
fi
deps=()
cancel=()
for line in "${active[@]}"; do
    IFS='|' read -r array_id job state comment <<<"$line"
    [[ $comment == "array:$tag" || $comment == "merge:$tag" ]] || continue
    if [[ $comment == "merge:$tag" ]]; then
        [[ $state == PENDING ]] || v2v_die "merge job $job of $out is $state: wait for it"
        cancel+=("$job")
        continue
    fi
    [[ -n $tasks ]] || v2v_die "$out is already being built (job $job is $state): wait, scancel it, or \
resubmit failed tasks with --tasks"
    for i in "${ids[@]}"; do
        [[ $job != "${array_id}_$((10#$i))" ]] || v2v_die "task $i is still in the queue as job $job ($state): \
scancel $job first, or let it finish"
    done
    [[ " ${deps[*]} " == *" afterany:$array_id "* ]] || deps+=("afterany:$array_id")
done

submit() {  # sbatch ... -> the job id
    if [[ $dry == 1 ]]; then
        printf '+ V2V_REPO=%q V2V_SHARDS=%q V2V_OUT=%q sbatch' "$V2V_REPO" "$V2V_SHARDS" "$V2V_OUT" >&2
        printf ' %q' "$@" >&2
        printf '\n' >&2
        echo "DRYRUN"
        return
    fi
    local id
    id=$(sbatch --parsable "$@") || v2v_die "sbatch $* failed"
    echo "${id%%;*}"
}

if ((${#cancel[@]})); then
    v2v_note "cancelling the earlier merge job(s) ${cancel[*]} (a failed task means their afterok can never be met)"
    scancel "${cancel[@]}"
fi
opts=(--export=ALL --chdir="$V2V_REPO_ROOT" "${extra[@]}")
array_opts=(--array="$spec" --job-name="$name" --comment="array:$tag" --output="$logs/%x-%A_%a.out")
[[ -z $cpus ]] || array_opts+=(--cpus-per-task="$cpus")
[[ -z $time_limit ]] || array_opts+=(--time="$time_limit")
array_job=$(submit "${opts[@]}" "${array_opts[@]}" "$V2V_REPO_ROOT/cluster/ucf101_flow_array.sh")
dep=$(IFS=,; echo "afterok:$array_job${deps[*]:+,${deps[*]}}")
merge_job=$(submit "${opts[@]}" --dependency="$dep" --job-name="$name-merge" --comment="merge:$tag" \
    --output="$logs/%x-%j.out" "$V2V_REPO_ROOT/cluster/ucf101_flow_merge.sh")
v2v_note "array job $array_job (tasks $spec of $shards) builds $out.shard-<k>-of-$shards"
v2v_note "merge job $merge_job runs after $dep; logs in $logs"
echo "V2V_JOBS array=$array_job merge=$merge_job"
