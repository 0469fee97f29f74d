#!/usr/bin/env python3
"""Reproduce the embedded default: examples/tiny-base (model + tokenizer) and
examples/feeds/ (new-domain feed, eval set, old-domain reference set).

Everything comes from seeded generators in this file, so there is nothing to
download. The corpus is our own work under the repository's Apache-2.0 licence.

    python scripts/make_tiny_base.py          # rebuild (about 2-4 min on 2 CPU cores)
    python scripts/make_tiny_base.py --check  # rebuild into a temp dir and compare digests

Determinism: fixed seeds, torch deterministic algorithms, 2 intra-op threads,
torch 2.13 on x86-64. Other torch builds may differ in the last bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "examples" / "tiny-base"
FEEDS_DIR = ROOT / "examples" / "feeds"

# --- corpora -------------------------------------------------------------------
OLD = {
    "subject": ["The old farmer", "A small child", "My neighbour", "The baker", "Our teacher", "A tired traveller",
                "The fisherman", "Grandmother", "The young painter", "A quiet student", "The shepherd", "Her brother"],
    "verb": ["walked to", "looked at", "painted", "visited", "cleaned", "watched", "carried water to", "sang near",
             "rested beside", "talked about", "planted trees by", "found a coin near"],
    "place": ["the river", "the green hills", "the village market", "the stone bridge", "the garden", "the harbour",
              "the forest path", "the wheat field", "the little church", "the sandy beach", "the mountain lake"],
    "time": ["in the morning", "before sunset", "after the rain", "on a cold winter day", "during the spring fair",
             "at noon", "late in the evening", "on a warm summer night"],
    "tail": ["and smiled.", "while the birds sang.", "and felt calm.", "as the wind moved the leaves.",
             "and then went home for supper.", "and wrote a short letter about it.", "with a basket of apples."],
    "weather": ["The sky was clear and blue.", "Soft rain fell on the roofs.", "A cold wind came from the north.",
                "The sun warmed the old stones.", "Fog covered the valley until noon.", "Snow fell quietly all night."],
}
NEW = {
    "system": ["VPN client", "email server", "payroll app", "laptop docking station", "Wi-Fi access point",
               "password reset portal", "shared printer", "build pipeline", "database replica", "SSO login"],
    "symptom": ["fails with error 809", "times out after 30 seconds", "returns HTTP 503", "shows a certificate warning",
                "disconnects every hour", "rejects valid credentials", "is stuck at 99 percent", "crashes on start"],
    "context": ["after the latest update", "since the office move", "only on the guest network", "for remote users",
                "when two factor is enabled", "on Monday mornings", "after the password change"],
    "fix": ["Clear the cached credentials and sign in again.", "Renew the TLS certificate on the gateway.",
            "Roll back the driver to the previous version.", "Restart the sync service and re-queue the job.",
            "Add the user to the remote-access group.", "Increase the session timeout to 60 minutes.",
            "Flush the DNS cache and reconnect.", "Rebuild the search index overnight."],
}


# Round 2 of the demo route: four symptoms the route has never seen, each with its own new resolution.
NEW2 = {
    "symptom": ["loses the saved session", "rejects the new certificate", "drops the print job", "fails after the driver update"],
    # New answers in words the base model knows, so two minutes of CPU can teach them.
    "fix": ["Increase the session timeout and sign in again.", "Renew the TLS certificate and restart the sync service.",
            "Restart the sync service and flush the DNS cache.", "Roll back the driver and rebuild the search index."],
}


def old_sentence(rng: random.Random) -> str:
    s = f"{rng.choice(OLD['subject'])} {rng.choice(OLD['verb'])} {rng.choice(OLD['place'])} {rng.choice(OLD['time'])} {rng.choice(OLD['tail'])}"
    return s + (" " + rng.choice(OLD["weather"]) if rng.random() < 0.5 else "")


def tech_sentence(rng: random.Random) -> str:
    """General technical statements: the base model knows the words, not the task."""
    if rng.random() < 0.5:
        return f"The {rng.choice(NEW['system'])} {rng.choice(NEW['symptom'])} {rng.choice(NEW['context'])}."
    return f"Someone said: {rng.choice(NEW['fix'])}"


def ticket(rng: random.Random) -> dict:
    """The new task: each symptom has its own resolution, so there is something to learn."""
    n = rng.randint(1000, 9999)
    k = rng.randrange(len(NEW["symptom"]))
    prompt = f"Ticket #{n}: The {rng.choice(NEW['system'])} {NEW['symptom'][k]} {rng.choice(NEW['context'])}.\nResolution:"
    return {"prompt": prompt, "completion": " " + NEW["fix"][k]}


def new_ticket(rng: random.Random) -> dict:
    """Round 2's new task: a symptom and a resolution the route has not learned."""
    n = rng.randint(1000, 9999)
    k = rng.randrange(len(NEW2["symptom"]))
    prompt = f"Ticket #{n}: The {rng.choice(NEW['system'])} {NEW2['symptom'][k]} {rng.choice(NEW['context'])}.\nResolution:"
    return {"prompt": prompt, "completion": " " + NEW2["fix"][k]}


def reworded_ticket(rng: random.Random) -> dict:
    """A round-1 symptom in other words: nothing new to learn."""
    n = rng.randint(1000, 9999)
    k = rng.randrange(len(NEW["symptom"]))
    prompt = (f"Ticket #{n}: Since {rng.choice(NEW['context']).removeprefix('since ')}, our "
              f"{rng.choice(NEW['system'])} {NEW['symptom'][k]}.\nResolution:")
    return {"prompt": prompt, "completion": " " + NEW["fix"][k]}


# Federated demo: three sites with disjoint tickets and skewed tasks (label skew, as when each warehouse
# mostly sees its own faults): 40% of a site's tickets are drawn from its own symptoms, the rest from all
# eight, so about 62% of a site's tickets are its own symptoms.
DP_TICKETS = 10000

SITES = {"site-a": (0, 1, 2), "site-b": (3, 4, 5), "site-c": (6, 7)}
OWN_SHARE = 0.4


def site_ticket(rng: random.Random, symptoms: tuple[int, ...]) -> dict:
    n = rng.randint(1000, 9999)
    k = rng.choice(symptoms) if rng.random() < OWN_SHARE else rng.randrange(len(NEW["symptom"]))
    prompt = f"Ticket #{n}: The {rng.choice(NEW['system'])} {NEW['symptom'][k]} {rng.choice(NEW['context'])}.\nResolution:"
    return {"prompt": prompt, "completion": " " + NEW["fix"][k]}


def make_fed_feeds(out: Path) -> None:
    """examples/feeds/fed/: each site's tickets, and the aggregator's eval set covering all of them."""
    out.mkdir(parents=True, exist_ok=True)
    for site, symptoms in SITES.items():
        write_jsonl(out / f"{site}.jsonl", [site_ticket(random.Random(f"{site}-{i}"), symptoms) for i in range(96)])
    everything = tuple(range(len(NEW["symptom"])))
    write_jsonl(out / "eval.jsonl", [site_ticket(random.Random(f"fed-eval-{i}"), everything) for i in range(48)])


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def make_feeds(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "support-tickets.jsonl", [ticket(random.Random(f"ticket-{i}")) for i in range(240)])
    write_jsonl(out / "support-eval.jsonl", [ticket(random.Random(f"eval-{i}")) for i in range(48)])
    # The DP round's private feed: DP-SGD needs thousands of examples to learn at a small epsilon
    # (docs/privacy.md), so the same task gets its own, larger feed.
    write_jsonl(out / "support-tickets-private.jsonl", [ticket(random.Random(f"private-{i}")) for i in range(DP_TICKETS)])
    write_jsonl(out / "reference.jsonl", [{"text": old_sentence(random.Random(f"ref-{i}"))} for i in range(64)])
    # Round 2: 160 tickets with new resolutions and 80 reworded round-1 tickets; its eval set mixes
    # new (24) and round-1 (24) symptoms, so it measures learning and keeping at once.
    round2 = [new_ticket(random.Random(f"ticket2-{i}")) for i in range(160)]
    round2 += [reworded_ticket(random.Random(f"reworded-{i}")) for i in range(80)]
    random.Random("round2-order").shuffle(round2)
    write_jsonl(out / "support-tickets-2.jsonl", round2)
    write_jsonl(out / "support-eval-2.jsonl", [new_ticket(random.Random(f"eval2-{i}")) for i in range(24)]
                + [ticket(random.Random(f"eval2-old-{i}")) for i in range(24)])
    make_fed_feeds(out / "fed")


# --- tokenizer and model ---------------------------------------------------------
def make_tokenizer(corpus: list[str], out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, min_frequency=2, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>")
    fast.save_pretrained(out)
    return fast


def pretrain(out: Path, steps: int = 700) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    rng = random.Random("pretrain")
    corpus = [tech_sentence(rng) if rng.random() < 0.15 else old_sentence(rng) for _ in range(12000)]
    tok = make_tokenizer(corpus[:6000], out)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    ids = [tok.bos_token_id]
    for s in corpus:
        ids += tok(s)["input_ids"] + [tok.eos_token_id]
    data = torch.tensor(ids)
    seq, batch = 128, 16
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            print(f"pretrain step {step:4d} loss {loss.item():.3f}", flush=True)
    model.eval()
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    (out / "README.md").write_text(
        "# tiny-base\n\nA 4-layer, 128-wide Llama-architecture causal LM "
        f"({sum(p.numel() for p in model.parameters()):,} parameters) with a 1,024-token byte-level BPE tokenizer, "
        "pretrained on the CPU by `scripts/make_tiny_base.py` from a generated corpus: 85% everyday descriptive "
        "English sentences, 15% general IT statements (it knows the words of the support-ticket domain, not the task). It is the embedded default for `tgflow peft run`: small enough to ship, real enough "
        "that loss on a new domain and forgetting on the old one mean something.\n\n"
        "Licence: Apache-2.0 (the corpus and the weights are produced by this repository's code).\n")


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with the shipped files")
    ap.add_argument("--steps", type=int, default=700)
    args = ap.parse_args()
    if args.check:
        tmp = Path(tempfile.mkdtemp())
        make_feeds(tmp / "feeds")
        pretrain(tmp / "tiny-base", args.steps)
        ok = digests(tmp / "feeds") == digests(FEEDS_DIR) and digests(tmp / "tiny-base") == digests(MODEL_DIR)
        print("reproduced exactly" if ok else "DIFFERENT from the shipped files")
        shutil.rmtree(tmp)
        return 0 if ok else 1
    make_feeds(FEEDS_DIR)
    if MODEL_DIR.exists():
        shutil.rmtree(MODEL_DIR)
    pretrain(MODEL_DIR, args.steps)
    print(json.dumps(digests(MODEL_DIR), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
