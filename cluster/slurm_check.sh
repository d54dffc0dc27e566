#!/usr/bin/env bash
# make slurm-check: the cluster/ job scripts under a real Slurm, started privately here.
#
# Installs Debian's slurm-wlm and munge when missing (apt-get; the only change to the
# system), then starts a private cluster in a temporary folder: its own munge key and
# munged socket, its own slurm.conf (this host as two Slurm nodes n0 and n1 — two slurmd
# with their own ports, one CPU each — so that a multi-node job really spans
# two nodes), its own free ports, state, spool, pid and log files. Everything is stopped
# and the folder removed on exit. Then, on a small synthetic UCF101-shaped download:
#
#   array    cluster/submit_ucf101_flow.sh --shards 4: 4 array tasks + the afterok merge;
#            the merged database has the checksum of a one-process build
#   kill     the same into a new database, with task 1 killed by scancel mid-build and
#            resubmitted alone (--tasks 1), and task 2 requeued mid-build (what preemption
#            does); both resume; the merge waits for them; the same checksum again
#   ddp      cluster/train_torch_ddp.sh on 2 nodes (2 CPU ranks, gloo, c10d rendezvous) vs
#            the same script on 1 node with a net that reads both ranks' clips in one batch
#            of the same size: final weights equal to float32 rounding (relative 1e-5), and
#            a control run (rank 1's clips replaced) differs by far more
#   resume   the time limit's SIGTERM (--signal) sent to a 2-node training job: it writes a
#            snapshot and stops; the same job submitted again resumes there
#   caffe    cluster/train_caffe_1node.sh: Caffe (CPU) on the same database, 2 iterations
#
# Prints a table (step, result, seconds) and exits non-zero if any step failed.
# Environment: V2V_SLURM_CHECK_LOGS [runs/slurm_check under $V2V_RUNS or the repo] for the
# logs (each step's, the jobs', the daemons'); V2V_SLURM_CHECK_KEEP=1 keeps the temporary
# folder (its path is printed); V2V_SLURM_CHECK_STEPS="ddp resume" runs only those steps
# (after the data step, which the others need).
# The steps and the cleanup are called by name (run_step, trap):
# shellcheck disable=SC2329
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=$REPO/.venv/bin/python
LOGS=${V2V_SLURM_CHECK_LOGS:-${V2V_RUNS:-$REPO/runs}/slurm_check}
[[ -x $PY ]] || { echo "error: no $PY: run make setup-torch first" >&2; exit 2; }
"$PY" -c 'import torch, lmdb, av' 2>/dev/null || { echo "error: the venv lacks torch/lmdb/av: make setup-torch" >&2; exit 2; }

# ------------------------------------------------------------------ Slurm and munge
install_packages() {
    local tools=(slurmctld slurmd sbatch srun squeue scontrol scancel sinfo munged) missing=()
    for t in "${tools[@]}"; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    ((${#missing[@]})) || return 0
    if [[ $EUID != 0 ]] || ! command -v apt-get >/dev/null; then
        echo "error: ${missing[*]} not installed; as root on Debian/Ubuntu: apt-get install slurm-wlm munge" >&2
        exit 2
    fi
    echo "installing slurm-wlm and munge (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends slurm-wlm munge >"$LOGS/apt.log" 2>&1 ||
        { apt-get update >>"$LOGS/apt.log" 2>&1 &&
            apt-get install -y --no-install-recommends slurm-wlm munge >>"$LOGS/apt.log" 2>&1; } ||
        { echo "error: apt-get install slurm-wlm munge failed: see $LOGS/apt.log" >&2; exit 2; }
    note "installed slurm-wlm and munge (apt-get) in $((SECONDS - t0)) s"
}

free_ports() {  # n free TCP ports (bound once by the kernel, then released)
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

T="" MUNGE_SOCKET="" CLUSTER_UP=0
cleanup() {
    local rc=$?
    set +e
    if ((CLUSTER_UP)); then
        scancel --quiet -u "$(id -un)" 2>/dev/null
        for _ in $(seq 60); do  # running steps outlive slurmd: let them end first
            [[ -z $(squeue -h 2>/dev/null) ]] && break
            sleep 0.5
        done
        scontrol shutdown >/dev/null 2>&1
    fi
    if [[ -n $T ]]; then
        local f pid
        for f in "$T"/run/slurm*.pid "$T/run/munged.pid"; do
            [[ -f $f ]] || continue
            pid=$(cat "$f")
            [[ $f != */munged.pid ]] || munged --stop --socket="$MUNGE_SOCKET" >/dev/null 2>&1
            for _ in $(seq 40); do  # the daemons we started, by their pid files
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
            kill -0 "$pid" 2>/dev/null && kill "$pid"
        done
        mkdir -p "$LOGS/daemons"
        cp "$T"/log/*.log "$LOGS/daemons/" 2>/dev/null
        if [[ ${V2V_SLURM_CHECK_KEEP:-0} == 1 ]]; then
            echo "kept $T"
        else
            rm -rf -- "$T"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_cluster() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/v2v-slurm-check.XXXXXX")
    chmod 755 "$T"  # munged wants every folder above its socket searchable by all
    mkdir -p "$T"/{munge,run,log,state,spool,work}
    MUNGE_SOCKET=$T/munge/munge.socket
    head -c 1024 /dev/urandom >"$T/munge/munge.key"
    chmod 400 "$T/munge/munge.key"
    munged --socket="$MUNGE_SOCKET" --key-file="$T/munge/munge.key" --pid-file="$T/run/munged.pid" \
        --log-file="$T/log/munged.log" --seed-file="$T/munge/seed" ||
        { echo "error: munged did not start: $(tail -n 3 "$T/log/munged.log")" >&2; return 1; }

    local host cpus=1 mem ports  # one CPU per node on any machine: the same schedule everywhere
    host=$(hostname -s)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
    read -r -a ports <<<"$(free_ports 4)"
    RDZV_PORT=${ports[3]}
    cat >"$T/slurm.conf" <<EOF
# private cluster of cluster/slurm_check.sh (removed when it ends)
ClusterName=v2vcheck
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/%n
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd-%n.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
# SIGTERM to SIGKILL: 10 s was too short for a snapshot on a loaded 2-core machine
KillWait=60
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName=n0 NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[1]} CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[2]} CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=check Nodes=n0,n1 Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$T/slurm.conf
    CLUSTER_UP=1
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF" -N n0
    slurmd -f "$SLURM_CONF" -N n1
    for _ in $(seq 120); do
        [[ $(sinfo -h -N -o '%t' 2>/dev/null | sort -u | tr -d '\n') == idle ]] && break
        sleep 0.5
    done
    sinfo -N
    [[ $(sinfo -h -N -o '%t' | sort -u | tr -d '\n') == idle ]] ||
        { echo "error: the nodes did not come up: see $T/log" >&2; return 1; }
    note "Slurm $(sinfo -V | awk '{print $2}'), nodes n0 n1 ($cpus CPU each) on $host, ports ${ports[*]:0:3}"
}

# ------------------------------------------------------------------ job helpers
# "<job>=<state>[/<reason>]" for every job (array tasks one by one) of the given ids.
job_states() {
    local id out line j state reason
    for id in "$@"; do
        out=$(scontrol show job -o "$id" 2>/dev/null) || continue
        while IFS= read -r line; do
            [[ $line =~ JobId=([0-9]+) ]] || continue
            j=${BASH_REMATCH[1]} state="" reason=""
            if [[ $line =~ ArrayJobId=([0-9]+)\ ArrayTaskId=([0-9]+) ]]; then
                j=${BASH_REMATCH[1]}_${BASH_REMATCH[2]}
            fi
            [[ $line =~ JobState=([A-Z_]+) ]] && state=${BASH_REMATCH[1]}
            [[ $line =~ Reason=([A-Za-z_]+) && ${BASH_REMATCH[1]} != None ]] && reason=/${BASH_REMATCH[1]}
            echo "$j=$state$reason"
        done <<<"$out"
    done
}

# Wait until every job of the given ids has ended (or can never start); fail after $WAIT_S s.
wait_jobs() {
    local t0=$SECONDS states
    while :; do
        states=$(job_states "$@")
        if ! grep -Eq '=(PENDING|RUNNING|CONFIGURING|COMPLETING|REQUEUED|RESIZING|SUSPENDED)' <<<"$states" ||
            ! grep -E '=(PENDING|RUNNING|CONFIGURING|COMPLETING|REQUEUED|RESIZING|SUSPENDED)' <<<"$states" |
            grep -vq 'DependencyNeverSatisfied'; then
            echo "$states" | tr '\n' ' '
            echo
            return 0
        fi
        ((SECONDS - t0 < ${WAIT_S:-600})) || { echo "timeout; states: $states" >&2; return 1; }
        sleep 1
    done
}

state_of() {  # the state of one job (or array task)
    local s
    s=$(job_states "$1" | head -n 1)
    s=${s#*=}
    echo "${s%%/*}"
}

note() {  # a line of the current step's detail (shown in the summary)
    echo "$*"
    [[ -z ${DETAIL:-} ]] || echo "$*" >>"$DETAIL"
}

fail() {
    note "FAILED: $*"
    return 1
}

submit_build() {  # out, extra args -> sets ARRAY, MERGE
    local out=$1 line
    shift
    line=$(V2V_OUT=$out V2V_UCF_ROOT=$RAW/UCF-101 V2V_UCF_SPLITS=$RAW/ucfTrainTestlist \
        V2V_SLURM_LOGS=$JOBLOGS cluster/submit_ucf101_flow.sh --shards 4 --cpus 1 "$@" | tee /dev/stderr |
        grep '^V2V_JOBS ') || return 1
    [[ $line =~ array=([0-9]+)\ merge=([0-9]+) ]] || return 1
    ARRAY=${BASH_REMATCH[1]} MERGE=${BASH_REMATCH[2]}
}

task_log() {  # array job, task -> its log file
    echo "$JOBLOGS/v2v-ucf101-flow-train-$1_$2.out"
}

# ------------------------------------------------------------------ the steps
step_data() {
    "$PY" cluster/check_helpers.py ucf "$RAW"
    local t0=$SECONDS
    "$PY" -m data_prep.ucf101 --task flow --root "$RAW/UCF-101" --splits "$RAW/ucfTrainTestlist" \
        --split train --out "$DB/one_process" >"$LOGS/one_process_build.log" 2>&1 ||
        fail "the one-process build failed: $(tail -n 5 "$LOGS/one_process_build.log")"
    grep -A1 'bad item' "$LOGS/one_process_build.log" | cut -c1-150
    local s
    s=$("$PY" cluster/check_helpers.py same-db "$DB/one_process" "$DB/one_process")
    s=${s#same (}
    note "one-process build of 17 videos (1 corrupt) in $((SECONDS - t0)) s: ${s%)}"
}

step_array() {
    submit_build "$DB/array"
    wait_jobs "$ARRAY" "$MERGE" || fail "the jobs did not end"
    [[ $(state_of "$MERGE") == COMPLETED ]] || fail "merge job $MERGE: $(job_states "$MERGE")"
    local k times=()
    for k in 0 1 2 3; do
        times+=("$(grep -o 'done in [0-9]* s' "$(task_log "$ARRAY" "$k")" | grep -o '[0-9]*')")
    done
    note "4 array tasks (${times[*]} s each) + merge job $MERGE after afterok:$ARRAY"
    local same
    same=$("$PY" cluster/check_helpers.py same-db "$DB/array" "$DB/one_process") ||
        fail "the merged database differs from the one-process build: $same"
    note "merged vs one-process: $same"
}

step_kill() {
    local out=$DB/killed
    submit_build "$out"
    local first_array=$ARRAY first_merge=$MERGE
    # task 1: killed with scancel once it has stored a video (resubmitted alone below)
    "$PY" cluster/check_helpers.py wait-progress "$out.shard-1-of-4" --timeout 300 ||
        fail "task 1 did not reach mid-build (exit $? of wait-progress: 3 = finished first)"
    scancel "${first_array}_1"
    WAIT_S=60 wait_jobs "${first_array}_1" >/dev/null || fail "task 1 did not end after scancel"
    [[ $(state_of "${first_array}_1") == CANCELLED ]] || fail "task 1: $(job_states "${first_array}_1")"
    note "task ${first_array}_1 cancelled mid-build; merge $first_merge: $(job_states "$first_merge" | cut -d= -f2)"
    # task 2 (started on the freed CPU): requeued by Slurm mid-build, as preemption does; it
    # restarts by itself (--requeue)
    "$PY" cluster/check_helpers.py wait-progress "$out.shard-2-of-4" --timeout 300 ||
        fail "task 2 did not reach mid-build (exit $? of wait-progress: 3 = finished first)"
    scontrol requeue "${first_array}_2"
    for _ in $(seq 60); do  # once pending again: start now (a requeued job otherwise waits ~2 min)
        [[ $(state_of "${first_array}_2") == PENDING ]] && break
        sleep 0.5
    done
    scontrol update jobid="${first_array}_2" StartTime=now
    note "task ${first_array}_2 requeued mid-build"
    # the resubmission: task 1 alone, a new merge after it and after the rest of the first array
    submit_build "$out" --tasks 1
    [[ $(state_of "$first_merge") == CANCELLED ]] ||
        fail "the resubmission left the first merge job: $(job_states "$first_merge")"
    note "resubmitted task 1 as $ARRAY; merge $first_merge cancelled (never ran), new merge $MERGE"
    WAIT_S=900 wait_jobs "$first_array" "$ARRAY" "$MERGE" || fail "the jobs did not end"
    [[ $(state_of "$MERGE") == COMPLETED ]] || fail "merge job $MERGE: $(job_states "$MERGE")"
    local r1 r2
    r1=$(grep -o 'resuming .*' "$(task_log "$ARRAY" 1)") || fail "resubmitted task 1 did not resume"
    r2=$(grep -o 'resuming .*' "$(task_log "$first_array" 2)") || fail "requeued task 2 did not resume"
    r1=${r1#*: } r2=${r2#*: }
    note "resumed: task 1 with ${r1%%,*}, task 2 with ${r2%%,*}"
    local same
    same=$("$PY" cluster/check_helpers.py same-db "$out" "$DB/one_process") ||
        fail "the merged database differs from the one-process build: $same"
    note "merged vs one-process: $same"
}

TOL=1e-5
step_ddp() {
    "$PY" cluster/check_helpers.py ddp-nets "$WORK/nets" --db "$DB/one_process"
    local name nodes jobs=()
    for name in ddp one control; do
        nodes=$([[ $name == ddp ]] && echo 2 || echo 1)
        jobs+=("$(V2V_SOLVER=$WORK/nets/${name}_solver.prototxt V2V_OUT=$WORK/runs/$name V2V_RDZV_PORT=$RDZV_PORT \
            V2V_TRAIN_ARGS=--quiet sbatch --parsable --export=ALL --nodes="$nodes" --cpus-per-task=1 \
            --job-name="check-$name" --output="$JOBLOGS/train-$name-%j.out" cluster/train_torch_ddp.sh)")
        WAIT_S=600 wait_jobs "${jobs[-1]}" || fail "$name training did not end"  # one at a time (one port)
        [[ $(state_of "${jobs[-1]}") == COMPLETED ]] || fail "$name training job ${jobs[-1]}: $(job_states "${jobs[-1]}")"
    done
    grep -q "2 ranks, weights in sync" "$WORK/runs/ddp/train.log" || fail "the DDP run did not report 2 ranks in sync"
    local w=snapshots/ddpcheck res
    res=$("$PY" cluster/check_helpers.py compare-weights --tol "$TOL" \
        "$WORK/runs/ddp/${w}_ddp_iter_6.caffemodel" "$WORK/runs/one/${w}_one_iter_6.caffemodel") ||
        fail "the 2-rank weights differ from the 1-process run's: $res"
    note "2 nodes x 1 rank vs 1 process: $res"
    res=$("$PY" cluster/check_helpers.py compare-weights --at-least --tol 1e-3 \
        "$WORK/runs/ddp/${w}_ddp_iter_6.caffemodel" "$WORK/runs/control/${w}_control_iter_6.caffemodel") ||
        fail "the control run is as close as the equivalent one, the comparison cannot tell: $res"
    note "control (rank 1's clips replaced): $res"
    if cmp -s <(cut -d, -f2 "$WORK/runs/ddp/train_log.csv") <(cut -d, -f2 "$WORK/runs/one/train_log.csv"); then
        note "loss curves identical (6 iterations)"
    else
        note "loss curves (ddp one): $(paste -d' ' <(cut -d, -f2 "$WORK/runs/ddp/train_log.csv") \
            <(cut -d, -f2 "$WORK/runs/one/train_log.csv") | tail -n +2 | tr '\n' ';')"
    fi
}

step_resume() {
    # the time limit's SIGTERM (--signal=TERM@300), sent now: a snapshot, then the same job resumes
    "$PY" cluster/check_helpers.py ddp-nets "$WORK/nets_long" --db "$DB/one_process" --iters 100000 >/dev/null
    local job log=$WORK/runs/resume/train_log.csv
    job=$(V2V_SOLVER=$WORK/nets_long/ddp_solver.prototxt V2V_OUT=$WORK/runs/resume V2V_RDZV_PORT=$RDZV_PORT \
        V2V_TRAIN_ARGS=--quiet sbatch --parsable --export=ALL --nodes=2 --cpus-per-task=1 --job-name=check-resume \
        --output="$JOBLOGS/train-resume-%j.out" cluster/train_torch_ddp.sh)
    local t0=$SECONDS
    until [[ -f $log && $(wc -l <"$log") -ge 4 ]]; do  # 3 iterations done
        ((SECONDS - t0 < 300)) || fail "no training progress in $log"
        [[ $(state_of "$job") =~ ^(PENDING|RUNNING|CONFIGURING)$ ]] || fail "job $job: $(job_states "$job")"
        sleep 0.5
    done
    scancel --signal=TERM "$job"
    WAIT_S=120 wait_jobs "$job" || fail "job $job did not stop on SIGTERM"
    local snap k
    snap=$(ls "$WORK"/runs/resume/snapshots/*.solverstate 2>/dev/null) || fail "no snapshot after SIGTERM"
    [[ $snap =~ _iter_([0-9]+)\.solverstate$ ]] || fail "snapshot name $snap"
    k=${BASH_REMATCH[1]}
    grep -q "stopped by signal" "$WORK/runs/resume/train.log" || fail "train.log does not say it stopped"
    note "SIGTERM to job $job at iteration $k: snapshot written, job $(state_of "$job") (torchrun exits 1 on a signal)"
    job=$(V2V_SOLVER=$WORK/nets_long/ddp_solver.prototxt V2V_OUT=$WORK/runs/resume V2V_RDZV_PORT=$RDZV_PORT \
        V2V_TRAIN_ARGS="--quiet --max-iter $((k + 2))" sbatch --parsable --export=ALL --nodes=2 --cpus-per-task=1 \
        --job-name=check-resume --output="$JOBLOGS/train-resume-%j.out" cluster/train_torch_ddp.sh)
    WAIT_S=300 wait_jobs "$job" || fail "the resubmitted job did not end"
    [[ $(state_of "$job") == COMPLETED ]] || fail "resubmitted job $job: $(job_states "$job")"
    grep -q "resumed from .* at iteration $k" "$WORK/runs/resume/train.log" || fail "it did not resume at $k"
    [[ $(cut -d, -f1 "$log" | tail -n +2 | tr '\n' ' ') == "$(seq -s ' ' 0 $((k + 1))) " ]] ||
        fail "train_log.csv iterations: $(cut -d, -f1 "$log" | tail -n +2 | tr '\n' ' ')"
    note "resubmitted as job $job: resumed at iteration $k, went on to $((k + 2)) (train_log.csv 0..$((k + 1)))"
}

step_caffe() {
    local job
    [[ -f $WORK/nets/one_solver.prototxt ]] ||
        "$PY" cluster/check_helpers.py ddp-nets "$WORK/nets" --db "$DB/one_process" >/dev/null
    job=$(V2V_SOLVER=$WORK/nets/one_solver.prototxt V2V_OUT=$WORK/runs/caffe V2V_TRAIN_ARGS="--max-iter 2 --quiet" \
        sbatch --parsable --export=ALL --cpus-per-task=1 --job-name=check-caffe \
        --output="$JOBLOGS/train-caffe-%j.out" cluster/train_caffe_1node.sh)
    WAIT_S=600 wait_jobs "$job" || fail "the caffe job did not end"
    [[ $(state_of "$job") == COMPLETED ]] || fail "caffe job $job: $(job_states "$job")"
    [[ -f $WORK/runs/caffe/snapshots/ddpcheck_one_iter_2.caffemodel ]] || fail "no snapshot at iteration 2"
    local last
    last=$(tail -n 1 "$WORK/runs/caffe/train.log")
    last=${last#*done: }
    note "Caffe (CPU) on the 1-process net: ${last%%, weights*}, snapshot written"
}

# ------------------------------------------------------------------ main
ROWS=()
FAILED=0
run_step() {  # name, function: runs it with set -e in a subshell, logs, times, records
    local name=$1 fn=$2 t0=$SECONDS rc
    DETAIL=$LOGS/$name.detail
    : >"$DETAIL"
    echo "=== $name"
    set +e
    (set -e; "$fn") 2>&1 | tee "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    local secs=$((SECONDS - t0)) result=PASS
    ((rc == 0)) || { result=FAIL; FAILED=1; }
    ROWS+=("$name|$result|$secs|$(paste -sd'|' "$DETAIL")")
}

rm -rf "$LOGS"
mkdir -p "$LOGS"
t_all=$SECONDS
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
DETAIL=$LOGS/cluster.detail
: >"$DETAIL"
t0=$SECONDS
install_packages
start_cluster > >(tee "$LOGS/cluster.log") 2>&1
ROWS+=("cluster|PASS|$((SECONDS - t0))|$(paste -sd'|' "$DETAIL")")
RAW=$T/work/raw DB=$T/work/db WORK=$T/work JOBLOGS=$LOGS/jobs
mkdir -p "$JOBLOGS" "$DB"
export PYTHONPATH=$REPO OMP_NUM_THREADS=1

STEPS=${V2V_SLURM_CHECK_STEPS:-array kill ddp resume caffe}
run_step data step_data  # every other step uses its database
for step in $STEPS; do
    declare -F "step_$step" >/dev/null || { echo "error: no step '$step' (steps: array kill ddp resume caffe)" >&2; exit 2; }
    run_step "$step" "step_$step"
done

{
    echo
    printf '%-8s %-6s %6s  %s\n' step result secs detail
    for row in "${ROWS[@]}"; do
        IFS='|' read -r -a f <<<"$row"
        printf '%-8s %-6s %6s  %s\n' "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]:-}"
        for d in "${f[@]:4}"; do
            printf '%-8s %-6s %6s  %s\n' "" "" "" "$d"
        done
    done
    echo "total $((SECONDS - t_all)) s on $(getconf _NPROCESSORS_ONLN) cores ($(uname -n), load before: $LOAD0); logs in $LOGS"
} | tee "$LOGS/summary.txt"
exit "$FAILED"
