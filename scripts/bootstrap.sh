#!/usr/bin/env bash
# Make .venv and install tgflow into it (editable) with the given extras.
# Idempotent and non-interactive: safe for CI and fresh machines.
#   usage: scripts/bootstrap.sh [EXTRAS]   e.g. scripts/bootstrap.sh test
# With the train or test extras, torch is installed first: the CPU build
# (torch==2.13.0, from this machine's wheel cache) when there is no NVIDIA
# GPU, because any other torch requirement pulls several GB of CUDA packages.
# Override with TGFLOW_TORCH_SPEC, e.g. TGFLOW_TORCH_SPEC="torch==2.13.0+cpu".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
if [[ "$extras" == *train* || "$extras" == *test* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" "${TGFLOW_TORCH_SPEC:-torch}"
  else
    "${pip[@]}" "${TGFLOW_TORCH_SPEC:-torch==2.13.0}"
  fi
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
"${pip[@]}" -e "$spec"
