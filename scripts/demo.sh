#!/usr/bin/env bash
# The main job, end to end, on the embedded default, with no downloads: a route's life.
#   round 1  (`tgflow peft run`) learns the support route's eight resolutions on the bundled tiny
#            base model; its signed, encrypted package is registered as candidate; verify, unpack,
#            promote it to production;
#   round 2  starts from round 1's release, learns four new resolutions from a feed that also
#            holds reworded round-1 tickets (novelty drops those), keeps round 1's skill (measured),
#            and must not regress against production; promote it, roll back to round 1, and
#            resolve the production package as a deploying CronJob would;
#   generate shows an adapter's answer next to the base model's;
#   DP       the same task under differential privacy (epsilon 3, on 10,000 private tickets): the
#            plan says it is likely to learn before any epsilon is spent, the round learns it,
#            passes its gate, is packaged, verified and promoted (docs/privacy.md has the numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh train
out=demo-out
rm -rf "$out" && mkdir -p "$out"
export TGFLOW_HOME="$PWD/$out/keyring"
export TGFLOW_PASSPHRASE="${TGFLOW_PASSPHRASE:-demo-passphrase-change-me}"
tg=.venv/bin/tgflow
reg=(--registry "$out/registry" --signing-key release)
ticket='Ticket #4242: The VPN client rejects valid credentials since the office move.\nResolution:'
set -x
$tg key generate release --type signing
$tg key generate operator --type recipient
# Round 1
$tg peft run --spec examples/run_spec.json
$tg tgsp verify "$out/support.tgsp"
$tg tgsp unpack "$out/support.tgsp" -o "$out/adapter" --identity operator
$tg route promote support 1 "${reg[@]}"
# Round 2: warm start from production (round 1), replay of round 1's data, champion/challenger gate
$tg peft run --spec examples/run_spec_2.json
$tg route eval support --candidate 2 --against production --eval examples/feeds/support-eval-2.jsonl --identity operator --base-model examples/tiny-base "${reg[@]}"
$tg route promote support 2 "${reg[@]}"
$tg route resolve support --registry "$out/registry" --state "$out/deploy-state.json" --json
$tg route rollback support "${reg[@]}"
$tg route resolve support --registry "$out/registry" --state "$out/deploy-state.json" --json
$tg route history support --spec examples/run_spec.json
$tg peft generate --package "$out/support.tgsp" --identity operator --prompt "$ticket" --against base --base-model examples/tiny-base --max-new-tokens 14
# The same task under differential privacy: plan it (nothing spent), then run it only if it is likely to learn
$tg privacy plan --spec examples/run_spec_dp.json
$tg peft run --spec examples/run_spec_dp.json --require-plan likely
$tg tgsp verify "$out/support-dp.tgsp"
$tg route promote support-dp 1 "${reg[@]}"
$tg peft budget --spec examples/run_spec_dp.json
{ set +x; } 2>/dev/null
echo "route lifecycle OK: rounds 1 and 2 packaged and registered, promoted, rolled back to 1, resolved; the DP round (epsilon 3) learned the task, packaged and promoted"
