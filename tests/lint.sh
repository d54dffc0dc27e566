#!/usr/bin/env bash
# ruff (rules in pyproject.toml) and the import-direction contract (import-linter), with the
# project's venv. Run by `make lint` and by the suite (tests/test_repo.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
