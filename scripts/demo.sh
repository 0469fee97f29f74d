#!/usr/bin/env bash
# The main job, end to end, on the bundled example, with no downloads:
# keys -> build (encrypted to a recipient) -> sign -> verify -> unpack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
out=demo-out
rm -rf "$out" && mkdir -p "$out"
export TGFLOW_HOME="$PWD/$out/keyring"
export TGFLOW_PASSPHRASE="${TGFLOW_PASSPHRASE:-demo-passphrase-change-me}"
tg=.venv/bin/tgflow
set -x
$tg key generate release --type signing
$tg key generate operator --type recipient
$tg tgsp build examples/demo-adapter -o "$out/adapter.tgsp" --route demo --version 1 --recipient operator
$tg tgsp sign "$out/adapter.tgsp" --key release
$tg tgsp verify "$out/adapter.tgsp"
$tg tgsp inspect "$out/adapter.tgsp"
$tg tgsp unpack "$out/adapter.tgsp" -o "$out/unpacked" --identity operator
diff -r examples/demo-adapter "$out/unpacked"
{ set +x; } 2>/dev/null
echo "round trip OK: $out/unpacked is byte-identical to examples/demo-adapter"
