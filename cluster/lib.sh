# Shared by the cluster/ job scripts (sourced, not run). Each script finds the repository
# first (sbatch runs a copy of the script from Slurm's spool folder, so the script's own
# path does not lead back to the repository), then sources this file.
# shellcheck shell=bash

v2v_die() {
    echo "error: $*" >&2
    exit 2
}

v2v_note() {
    echo "[$(date '+%F %T')] $*"
}

# The project's Python: $V2V_PYTHON, else the repository's venv.
v2v_python() {
    local py=${V2V_PYTHON:-$V2V_REPO_ROOT/.venv/bin/python}
    [[ -x $py ]] || v2v_die "no Python at $py: set up the repository on the cluster's shared filesystem \
(make setup-torch in $V2V_REPO_ROOT) or point V2V_PYTHON at its interpreter"
    echo "$py"
}

# A positive integer, or a clear error naming the variable.
v2v_positive() {
    local name=$1 value=$2
    [[ $value =~ ^[0-9]+$ && $value -ge 1 ]] || v2v_die "$name must be a positive integer, got '$value'"
}

# Run a command, or with V2V_DRY_RUN=1 only print it (one line, shell-quoted, after "+ ").
v2v_run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ ${V2V_DRY_RUN:-0} == 1 ]]; then
        return 0
    fi
    "$@"
}

# The database folder the UCF101 builder writes to (its --out, or the default under
# $V2V_DATA/data), as an absolute path. Args: python, task, split.
v2v_ucf_out() {
    local py=$1 task=$2 split=$3
    if [[ -n ${V2V_OUT:-} ]]; then
        (cd "$V2V_REPO_ROOT" && realpath -m -- "$V2V_OUT")
    else
        (cd "$V2V_REPO_ROOT" && "$py" -c 'import sys; from models.paths import db_path
print(db_path(f"ucf101_{sys.argv[1]}", sys.argv[2]).resolve())' "$task" "$split")
    fi
}

# Shard count of an array task: $V2V_SHARDS, else the array's task count when the array is
# exactly 0..N-1 (N >= 2). A resubmitted task (--array=5) has a task count of 1: it needs
# V2V_SHARDS, which cluster/submit_ucf101_flow.sh always sets.
v2v_shards() {
    if [[ -n ${V2V_SHARDS:-} ]]; then
        v2v_positive V2V_SHARDS "$V2V_SHARDS"
        echo "$V2V_SHARDS"
        return
    fi
    local n=${SLURM_ARRAY_TASK_COUNT:-} lo=${SLURM_ARRAY_TASK_MIN:-} hi=${SLURM_ARRAY_TASK_MAX:-}
    if [[ -z $n || $n -lt 2 || $lo != 0 || $((hi + 1)) != "$n" ]]; then
        v2v_die "cannot tell the number of shards from this array (tasks ${lo:-?}..${hi:-?}, ${n:-?} of them): \
set V2V_SHARDS=N, e.g. sbatch --array=5 --export=ALL,V2V_SHARDS=64 cluster/ucf101_flow_array.sh \
(or use cluster/submit_ucf101_flow.sh --shards 64 --tasks 5)"
    fi
    echo "$n"
}

# As v2v_run, but the command replaces this shell (signals sent to the batch shell, e.g. by
# sbatch --signal=B:TERM@300, then reach it).
v2v_exec() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ ${V2V_DRY_RUN:-0} == 1 ]]; then
        exit 0
    fi
    exec "$@"
}
