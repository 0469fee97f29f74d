#!/usr/bin/env bash
# Run the quick benchmarks and write one table, so a regression is visible at a glance.
#   usage: bash scripts/bench_all.sh [OUT_DIR]     (default .bench/<UTC time>)
# Each benchmark runs with --json; its document goes to OUT_DIR/<name>.json, its text
# to OUT_DIR/<name>.log, and OUT_DIR/table.md gets one row per headline figure, with
# the machine and load each ran under. A benchmark that fails or misses a target is
# marked in the table; the script exits 1 if any did. bench_quality.py (tens of minutes)
# and GPU runs are not quick: run them on their own.
set -uo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
out="${1:-.bench/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
run() {  # name, then the command's arguments
  local name="$1"; shift
  echo "== $name: $*" >&2
  timeout 1800 "$py" "$@" --json > "$out/$name.json" 2> "$out/$name.log"
  echo $? > "$out/$name.rc"
}
run tgsp scripts/bench_tgsp.py --size-mib 1024 --small-mib 64 --repeat 3
run route scripts/bench_route.py --repeat 10
run telemetry scripts/bench_telemetry.py --repeat 10
if command -v softhsm2-util >/dev/null 2>&1; then run pkcs11 scripts/bench_pkcs11.py --repeat 50; fi
run train scripts/bench_train.py --repeat 1
run dp scripts/bench_dp.py --repeat 1 --no-opacus
run fed scripts/bench_fed.py --quick --repeat 1
run n2he scripts/bench_n2he.py
run state scripts/bench_state.py
if command -v docker-registry >/dev/null 2>&1 && command -v skopeo >/dev/null 2>&1; then run oci scripts/bench_oci.py --mib 256 --runs 3; fi
run he_lora scripts/bench_he_lora.py --prompts 16 --max-new-tokens 4
run ddp scripts/bench_ddp.py
"$py" scripts/bench_table.py "$out"
