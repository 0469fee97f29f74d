#!/usr/bin/env python3
"""Benchmark HE-LoRA (experimental, `peft generate --he`): the LoRA delta under CKKS.

Trains the README's main job (examples/run_spec.json, privacy off) through the real CLI,
decrypts the released adapter in memory, and greedily completes all 48 shipped eval prompts
(examples/feeds/support-eval.jsonl) in one left-padded batch, twice:

- plaintext: the peft adapter as `peft generate` applies it (the baseline, same run);
- HE-LoRA: the adapter switched off, and each targeted module's delta computed by the
  adapter plane on encrypted activations, decrypted and added by the key holder
  (runners/learn/he_lora.py; both planes in this process, passing bytes).

Printed: latency per generated token for both and their ratio, the amortized cost per
token per module of the prefill pass (the rotation-free layout's unit cost), the largest
error of the delta against the plaintext delta, how many of the 48 greedy completions
equal plaintext, and the ciphertext bytes each way. About 3 minutes on 2 CPU cores.

    python scripts/bench_he_lora.py [--json] [--max-new-tokens 8] [--prompts 48]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import benchkit  # noqa: E402
from bench_quality import PASS, spec_copy, tg  # noqa: E402


def trained_adapter(work: Path, env: dict):
    """The README's main job, released and decrypted in memory: (tokenizer, peft model)."""
    from runners.learn import adapters, model as model_mod
    from tgsp import Keyring

    for name, kind in [("release", "signing"), ("operator", "recipient")]:
        tg(env, "key", "generate", name, "--type", kind)
    spec = spec_copy(work, "main", "run_spec.json", lambda s: None)
    report, _ = tg(env, "peft", "run", "--spec", spec, "--output-root", work / "out", "--json")
    kr = Keyring(Path(env["TGFLOW_HOME"]))
    release = adapters.read_release(Path(report["package"]), kr.trust_policy(), kr.identities("operator", lambda: PASS))
    tok, model = model_mod.load(ROOT / "examples" / "tiny-base", model_mod.pick_device("cpu"))
    return tok, adapters.attach(model, release, "default").eval()


def batch(tok, prompts: list[str]):
    """Left-padded input ids and mask, each prompt after BOS as `peft generate` encodes it."""
    import torch

    rows = [[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def greedy(model, tok, ids, mask, new: int):
    import torch

    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                             pad_token_id=tok.pad_token_id, min_new_tokens=new)
    return out[:, ids.shape[1]:]


def measure(tok, model, prompts: list[str], new: int) -> dict:
    from runners.learn.he_lora import HELoRA

    ids, mask = batch(tok, prompts)
    plain_runs = []
    for _ in range(3):
        t = time.perf_counter()
        plain = greedy(model, tok, ids, mask, new)
        plain_runs.append(time.perf_counter() - t)
    he = HELoRA(model)
    t = time.perf_counter()
    with he.active():
        enc = greedy(model, tok, ids, mask, new)
    he_s = time.perf_counter() - t
    generated = len(prompts) * new
    same = int((enc == plain).all(dim=1).sum())
    s = he.report()
    prefill_tokens = ids.numel()
    return {"prompts": len(prompts), "new_tokens": new, "prefill_tokens": prefill_tokens,
            "plain_seconds": statistics.median(plain_runs), "he_seconds": he_s,
            "plain_ms_per_token": 1000 * statistics.median(plain_runs) / generated,
            "he_ms_per_token": 1000 * he_s / generated, "equal_completions": same,
            "he_stats": {k: v for k, v in s.items() if k not in ("protects", "does_not_protect")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    benchkit.add_json_flag(ap)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=48, help="eval prompts to complete in one batch (at most 48)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-he-lora-"))
    env = {**os.environ, "TGFLOW_HOME": str(work / "home"), "TGFLOW_PASSPHRASE": PASS}
    with benchkit.run("he_lora", "the same adapter applied in plaintext by peft, same batch, same run",
                      args.json) as res:
        try:
            tok, model = trained_adapter(work, env)
            lines = (ROOT / "examples" / "feeds" / "support-eval.jsonl").read_text().splitlines()
            prompts = [json.loads(x)["prompt"] for x in lines][:args.prompts]
            m = measure(tok, model, prompts, args.max_new_tokens)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res.update(m)
        st = m["he_stats"]
        calls_per_pass = len(st["modules"])
        passes = st["module_calls"] / calls_per_pass
        res["rows"] = [
            benchkit.row("HE-LoRA latency per generated token", round(m["he_ms_per_token"], 1), "ms",
                         round(m["he_ms_per_token"] / m["plain_ms_per_token"], 1)),
            benchkit.row("max |delta error|", st["max_delta_error"], "", None, "<= 1e-6", st["max_delta_error"] <= 1e-6),
            benchkit.row("greedy completions equal to plaintext", m["equal_completions"], f"of {m['prompts']}", None,
                         "all", m["equal_completions"] == m["prompts"]),
        ]
        res["passes"] = passes
        print(f"plaintext: {m['plain_seconds']:.3f} s for {m['prompts']} x {m['new_tokens']} tokens "
              f"({m['plain_ms_per_token']:.2f} ms per token)")
        print(f"HE-LoRA:   {m['he_seconds']:.1f} s ({m['he_ms_per_token']:.0f} ms per token, "
              f"{m['he_ms_per_token'] / m['plain_ms_per_token']:.0f}x plaintext); {passes:.0f} forward passes, "
              f"{calls_per_pass} modules; encrypt {st['seconds']['encrypt']:.1f} s, adapter plane "
              f"{st['seconds']['adapter_plane']:.1f} s, decrypt {st['seconds']['decrypt']:.1f} s")
        per_call = 1000 * sum(st["seconds"].values()) / st["module_calls"]
        res["ms_per_module_call"] = per_call
        print(f"per module call (all three sides): {per_call:.0f} ms whatever the tokens up to 4096, so "
              f"{per_call / 4096:.3f} ms per token per module with every slot used")
        print(f"ciphertexts: {st['ciphertexts_to_plane']} to the plane ({st['bytes_to_plane'] / 1e6:.0f} MB), "
              f"{st['ciphertexts_to_key_holder']} back ({st['bytes_to_key_holder'] / 1e6:.0f} MB)")
        print(f"max |HE delta - plaintext delta|: {st['max_delta_error']:.2e}")
        print(f"greedy completions equal to plaintext: {m['equal_completions']} of {m['prompts']}")
    return benchkit.verdict(res["rows"])


if __name__ == "__main__":
    sys.exit(main())
