#!/usr/bin/env bash
# The `caffe` command of this project's venv (installed by engine/build_caffe.py).
# 1. puts the venv's packages, pycaffe and the repo on PYTHONPATH: the real binary embeds
#    the system Python, which does not see a venv by itself (Python layers need them);
# 2. validates the solver / net files named on the command line with models.validate,
#    so bad input gets a clear message instead of a glog abort;
# 3. runs the real Caffe binary with the same arguments.
set -euo pipefail
VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REAL="@CAFFE_BIN@"
PYPATHS="$("$VENV/bin/python" -c 'import sys; print(":".join(p for p in sys.path[1:] if p))')"
export PYTHONPATH="@REPO@:${PYPATHS}${PYTHONPATH:+:$PYTHONPATH}"
if [ "${V2V_NO_VALIDATE:-0}" != "1" ]; then
  "$VENV/bin/python" -m models.validate --caffe-args "$@" || exit $?
fi
exec "$REAL" "$@"
