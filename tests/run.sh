#!/usr/bin/env bash
# Runs the test suite with the project's venv. pytest's exit codes are passed on as they
# are, except 5 (no tests collected), which is turned into a failure: a suite that runs
# nothing must not look green.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
