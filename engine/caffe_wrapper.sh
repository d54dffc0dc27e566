#!/usr/bin/env bash
# The `caffe` command of this project's venv (installed by engine/build_caffe.py).
# 1. puts the venv's packages, pycaffe and the repo on PYTHONPATH: the real binary embeds
#    the system Python, which does not see a venv by itself (Python layers need them);
# 2. validates the solver / net / weights files named on the command line and the labels of
#    the databases the nets read (tools/caffe_checks.py: models/caffe_cli.py with
#    models/validate.py, then data_prep's label check), so bad input gets a clear message
#    instead of a glog abort, and honours V2V_DATA / V2V_RUNS / V2V_MAX_ITER as our Python
#    tools do;
# 3. runs the real Caffe binary with those arguments.
set -euo pipefail
VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REAL="@CAFFE_BIN@"
PYPATHS="$("$VENV/bin/python" -c 'import sys; print(":".join(p for p in sys.path[1:] if p))')"
export PYTHONPATH="@REPO@:${PYPATHS}${PYTHONPATH:+:$PYTHONPATH}"
if [ "${V2V_NO_VALIDATE:-0}" = "1" ] || [ $# -eq 0 ]; then
  exec "$REAL" "$@"
fi
# tools.caffe_checks relocates data/ and runs/ paths ($V2V_DATA, $V2V_RUNS), applies
# $V2V_MAX_ITER, validates, checks labels, and prints the arguments for Caffe, one per line.
args="$("$VENV/bin/python" -m tools.caffe_checks "$@")" || exit $?
mapfile -t ARGS <<< "$args"
exec "$REAL" "${ARGS[@]}"
