"""Task-level metrics: does the adapter give the right answer, not just a lower loss?

exact_match      greedy decoding from the prompt reproduces the completion
                 token for token, then ends (EOS); the fraction of examples.
choice_accuracy  when the eval set has few distinct completions (2 to
                 MAX_CHOICES), each example's completions are ranked by their
                 total log-likelihood given the prompt; the fraction where
                 the true one ranks first. Chance is 1 / choices.
loss             the mean per-example token loss (runners/learn/evaluate.py).

Plain-text examples (no prompt) have no answer to check: only the loss.
"""

from __future__ import annotations

from typing import Any

from ..data.feeds import Example
from .batches import IGNORE, Tokenized, _token_losses, collate, tokenize
from .evaluate import mean_loss
from .intervals import interval

MAX_CHOICES = 32


def measure(model, tok, examples: list[Example], device: str, max_len: int) -> dict[str, Any]:
    """Loss, exact match and (when it applies) choice accuracy on ``examples``."""
    out: dict[str, Any] = {"examples": len(examples),
                           "loss": round(mean_loss(model, tok, tokenize(tok, examples, max_len), device), 6)}
    qa = [e for e in examples if e.prompt]
    if qa:
        out["exact_match"] = round(exact_match(model, tok, qa, device, max_len), 6)
        out["exact_match_ci95"] = interval(out["exact_match"], len(qa))
        choices = sorted({e.target for e in qa})
        if 2 <= len(choices) <= MAX_CHOICES:
            out["choice_accuracy"] = round(choice_accuracy(model, tok, qa, choices, device, max_len), 6)
            out["choice_accuracy_ci95"] = interval(out["choice_accuracy"], len(qa))
            out["choices"] = len(choices)
    return out


def exact_match(model, tok, examples: list[Example], device: str, max_len: int, batch: int = 64) -> float:
    """Greedy decoding reproduces the completion (and its EOS) exactly iff, fed the completion,
    the model's argmax at every position is the completion's next token: one batched forward
    pass gives what token-by-token generation would (ties aside)."""
    import torch

    model.eval()
    items = tokenize(tok, examples, max_len)
    hits = 0
    with torch.no_grad():
        for i in range(0, len(items), batch):
            ids, mask, labels = collate(items[i:i + batch], tok.pad_token_id, device)
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            target = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
            ok = (pred == target) | (target == IGNORE)
            hits += int(ok.all(dim=1).sum())
    return hits / max(len(examples), 1)


def generated_exact_match(model, tok, examples: list[Example], device: str, max_len: int) -> float:
    """The same metric by actual greedy generation, one example at a time (the reference for tests)."""
    import torch

    model.eval()
    hits = 0
    with torch.no_grad():
        for item in tokenize(tok, examples, max_len):
            cut = next(i for i, label in enumerate(item.labels) if label != IGNORE)
            prompt, want = item.input_ids[:cut], item.input_ids[cut:]
            ids = torch.tensor([prompt], device=device)
            got = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(want),
                                 do_sample=False, pad_token_id=tok.pad_token_id, use_cache=True)[0, len(prompt):]
            hits += got.tolist() == want
    return hits / max(len(examples), 1)


def choice_accuracy(model, tok, examples: list[Example], choices: list[str], device: str, max_len: int,
                    batch: int = 64) -> float:
    import torch

    model.eval()
    pairs = [Example(e.prompt, c) for e in examples for c in choices]
    items = tokenize(tok, pairs, max_len)
    totals: list[float] = []
    with torch.no_grad():
        for i in range(0, len(items), batch):
            totals += _sum_loss(model, tok, items[i:i + batch], device)
    hits = 0
    for n, e in enumerate(examples):
        row = totals[n * len(choices):(n + 1) * len(choices)]
        hits += choices[min(range(len(choices)), key=row.__getitem__)] == e.target
    return hits / max(len(examples), 1)


def _sum_loss(model, tok, items: list[Tokenized], device: str) -> list[float]:
    ids, mask, labels = collate(items, tok.pad_token_id, device)
    tok_loss, _ = _token_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
    return tok_loss.sum(dim=1).tolist()


def regression(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """How much each task metric fell from ``before`` to ``after`` (positive = worse)."""
    return {k: round(before[k] - after[k], 6) for k in ("exact_match", "choice_accuracy") if k in before and k in after}
