#!/usr/bin/env bash
# The GPU figures of issue #31, in one short run on a machine with an NVIDIA GPU
# (the device machine: bash scripts/bench_gpu.sh; about 8 minutes on an H100).
#   1. the GPU test marker (tests/runners/test_gpu.py);
#   2. scripts/bench_train.py in bf16: the shipped tiny model and a 0.44B Llama built from
#      a config (random weights), each against plain peft + transformers: like-for-like
#      ratio, tokens/s, peak memory;
#   3. scripts/bench_dp.py on the 0.44B model: the DP step overhead against a non-DP step;
#   4. scripts/bench_tgsp.py at 1 GiB: how verify scales with the machine's cores.
# Each writes its JSON (scripts/benchkit.py) under OUT_DIR (default .bench/gpu), and
# scripts/bench_table.py puts them in one table.
set -uo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
out="${1:-.bench/gpu}"
mkdir -p "$out"
nvidia-smi -L || { echo "no NVIDIA GPU here" >&2; exit 2; }
"$py" -m pytest -q -m gpu tests/runners/test_gpu.py 2>&1 | tail -5 | tee "$out/gpu-tests.log"
run() {
  local name="$1"; shift
  echo "== $name: $*" >&2
  timeout 900 "$py" "$@" --json > "$out/$name.json" 2> "$out/$name.log"
  echo $? > "$out/$name.rc"
}
run train-tiny scripts/bench_train.py --device cuda --model tiny --dtype bf16 --repeat 2
run train-0.5b scripts/bench_train.py --device cuda --model 0.5b --dtype bf16 --repeat 2
run dp-0.5b scripts/bench_dp.py --device cuda --model 0.5b --repeat 2 --no-opacus
run tgsp scripts/bench_tgsp.py --size-mib 1024 --small-mib 64 --repeat 3
"$py" scripts/bench_table.py "$out"
