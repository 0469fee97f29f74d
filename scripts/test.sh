#!/usr/bin/env bash
# Install tgflow with its test extras into .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
# --dist loadscope: each module on one worker. Some modules continue one fixture's state in order
# (tests/route/test_lifecycle.py's route), and module fixtures are then built once, not per worker.
exec .venv/bin/python -m pytest -n auto --dist loadscope -q "$@"
