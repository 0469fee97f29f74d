#!/usr/bin/env bash
# The main job, end to end, on the embedded default, with no downloads:
# one continuous-learning round (`tgflow peft run`) on the bundled tiny base
# model and support-ticket feed, producing a signed, encrypted TGSP package;
# then verify it, unpack it, and load the adapter with PEFT. Then the same
# round under differential privacy (DP-SGD, with the route's privacy ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh train
out=demo-out
rm -rf "$out" && mkdir -p "$out"
export TGFLOW_HOME="$PWD/$out/keyring"
export TGFLOW_PASSPHRASE="${TGFLOW_PASSPHRASE:-demo-passphrase-change-me}"
tg=.venv/bin/tgflow
set -x
$tg key generate release --type signing
$tg key generate operator --type recipient
$tg peft run --spec examples/run_spec.json
$tg tgsp verify "$out/support.tgsp"
$tg tgsp unpack "$out/support.tgsp" -o "$out/adapter" --identity operator
# The same round with differential privacy (epsilon 3 per round, route budget 10).
$tg peft run --spec examples/run_spec_dp.json
$tg tgsp verify "$out/support-dp.tgsp"
$tg peft budget --spec examples/run_spec_dp.json
{ set +x; } 2>/dev/null
.venv/bin/python - "$out/adapter" <<'PY'
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("examples/tiny-base")
base = AutoModelForCausalLM.from_pretrained("examples/tiny-base")
prompt = "Ticket #4242: The VPN client rejects valid credentials since the office move.\nResolution:"
ids = tok(prompt, return_tensors="pt").input_ids
ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids], dim=1)
gen = lambda m: tok.decode(m.generate(ids, max_new_tokens=14, do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:], skip_special_tokens=True)
print("\nprompt:        ", prompt.replace("\n", " | "))
print("base model:    ", gen(base))
print("with adapter:  ", gen(PeftModel.from_pretrained(base, sys.argv[1])))
PY
echo "round trip OK: $out/support.tgsp verified, decrypted, and loaded with PeftModel.from_pretrained"
