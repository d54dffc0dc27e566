#!/usr/bin/env bash
# Merge the N shards of the UCF101 flow database (cluster/ucf101_flow_array.sh) into one:
# `python -m data_prep.db merge OUT OUT.shard-0-of-N ... OUT.shard-(N-1)-of-N`, byte-identical
# to a one-process build (same manifest checksum). Submitted by cluster/submit_ucf101_flow.sh
# with --dependency=afterok on the array, so it starts only when every task succeeded; run
# alone it first checks that every shard is finished and names the ones that are not.
#
#   sbatch --export=ALL,V2V_SHARDS=64 --dependency=afterok:<array job id> cluster/ucf101_flow_merge.sh
#
# Environment: V2V_SHARDS (required), V2V_OUT, V2V_SPLIT, V2V_UCF_TASK, V2V_REPO, V2V_PYTHON,
# V2V_DRY_RUN as for cluster/ucf101_flow_array.sh; V2V_DELETE_SHARDS=1 removes the shards
# after a merge whose clip and bad-item counts add up.
#SBATCH --job-name=v2v-ucf101-flow-merge
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=08:00:00
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
[[ -n ${V2V_SHARDS:-} ]] || v2v_die "set V2V_SHARDS=N, the number of shards to merge"
v2v_positive V2V_SHARDS "$V2V_SHARDS"
n=$V2V_SHARDS
task=${V2V_UCF_TASK:-flow}
split=${V2V_SPLIT:-train}
out=$(v2v_ucf_out "$PY" "$task" "$split")
if ((n == 1)); then  # --shard 0/1 builds the database itself: nothing to merge
    [[ -f $out/manifest.json ]] || v2v_die "$out is not finished: run its one task again (it resumes)"
    v2v_note "one shard: $out was built in place, nothing to merge"
    exit 0
fi
shards=()
missing=()
for ((k = 0; k < n; k++)); do
    s="$out.shard-$k-of-$n"
    shards+=("$s")
    [[ -f $s/manifest.json ]] || missing+=("$k")
done
if ((${#missing[@]})); then
    list=""  # the ids as ranges: 0-3,7
    for ((i = 0; i < ${#missing[@]}; i++)); do
        a=${missing[i]} b=$a
        while ((i + 1 < ${#missing[@]} && missing[i + 1] == b + 1)); do
            b=${missing[++i]}
        done
        list+="${list:+,}$a"
        ((b == a)) || list+="-$b"
    done
    v2v_die "${#missing[@]} of $n shards of $out are not finished (tasks $list): run them again, e.g.
  cluster/submit_ucf101_flow.sh --shards $n --tasks $list
(with the same V2V_* settings); they resume where they stopped"
fi
v2v_note "merging $n shards into $out"
start=$SECONDS
v2v_run "$PY" -m data_prep.db merge "$out" "${shards[@]}"
if [[ ${V2V_DRY_RUN:-0} == 1 ]]; then
    exit 0
fi
# The merged manifest must hold every shard's clips and bad items (nothing lost, nothing twice).
"$PY" - "$out" "${shards[@]}" <<'PYEOF'
import json, sys
from pathlib import Path
def man(p):
    return json.loads((Path(p) / "manifest.json").read_text())
out, shards = man(sys.argv[1]), [man(s) for s in sys.argv[2:]]
clips, bad = sum(s["count"] for s in shards), sum(len(s["bad"]) for s in shards)
if (out["count"], len(out["bad"])) != (clips, bad):
    sys.exit(f"error: merged {out['count']} clips / {len(out['bad'])} bad items, the shards hold {clips} / {bad}")
print(f"merged database: {clips} clips, {bad} bad item(s), checksum {out['checksum']}")
PYEOF
v2v_note "merge done in $((SECONDS - start)) s"
if [[ ${V2V_DELETE_SHARDS:-0} == 1 ]]; then
    v2v_note "removing the $n shards (V2V_DELETE_SHARDS=1)"
    rm -rf -- "${shards[@]}"
fi
