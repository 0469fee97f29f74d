"""Novelty: is this data new to the route?

score(x) = 1 - max over h in H of cos(e(x), e(h)), where e is the mean of
the frozen base model's last hidden state over the example's tokens, and H
holds the embeddings of every example already trained on for this route.
An exact duplicate (same SHA-256 as a seen example, or as an earlier
example in this feed) scores 0. With no history, every example scores 1.
The history lives in the route's state folder and only grows when a round
succeeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tgsp.atomic import write_bytes

from .batches import collate, tokenize
from .feeds import Example


@dataclass(frozen=True)
class NoveltyResult:
    scores: list[float]
    novel: list[int]  # indices of examples that pass
    duplicates: int
    history_size: int
    comparable: bool  # False when the history came from another base model

    def summary(self, threshold: float, minimum: int) -> dict:
        s = sorted(self.scores)
        pick = lambda q: round(s[min(len(s) - 1, int(q * len(s)))], 6) if s else None  # noqa: E731
        return {"threshold": threshold, "min_novel_examples": minimum, "examples": len(self.scores),
                "duplicates": self.duplicates, "novel": len(self.novel), "history_size": self.history_size,
                "history_comparable": self.comparable, "score_min": pick(0), "score_median": pick(0.5),
                "score_max": pick(0.999999), "skipped": len(self.novel) < minimum,
                "histogram": histogram(self.scores)}


def histogram(scores: list[float], bins: int = 20) -> dict:
    """Counts of novelty scores in equal bins over [0, 1] (for the report's plot)."""
    counts = [0] * bins
    for x in scores:
        counts[min(bins - 1, max(0, int(x * bins)))] += 1
    return {"low": 0.0, "high": 1.0, "counts": counts}


def embed(model, tok, examples: list[Example], device: str, max_len: int, batch: int = 32):
    import torch

    items = tokenize(tok, examples, max_len)
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(items), batch):
            ids, mask, _ = collate(items[i : i + batch], tok.pad_token_id, device)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1].float()
            m = mask.unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros((0, model.config.hidden_size))


class History:
    """Embeddings and digests of what the route has trained on."""

    def __init__(self, folder: Path, model_digest: str) -> None:
        self.folder, self.model_digest = folder, model_digest

    def load(self):
        import torch
        from safetensors.torch import load_file

        meta_path = self.folder / "history.json"
        if not meta_path.exists():
            return set(), None, True
        meta = json.loads(meta_path.read_text())
        digests = set(meta.get("digests", []))
        if meta.get("model_digest") != self.model_digest:
            return digests, None, False
        emb = load_file(str(self.folder / "history.safetensors"))["embeddings"]
        return digests, emb.to(torch.float32), True

    def append(self, examples: list[Example], embeddings) -> None:
        import torch
        from safetensors.torch import save_file

        digests, old, comparable = self.load()
        emb = embeddings if old is None else torch.cat([old, embeddings])
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".history.safetensors.tmp"
        save_file({"embeddings": emb.contiguous()}, str(tmp))
        tmp.replace(self.folder / "history.safetensors")
        meta = {"model_digest": self.model_digest, "digests": sorted(digests | {e.digest for e in examples})}
        write_bytes(self.folder / "history.json", json.dumps(meta).encode())


def score(examples: list[Example], embeddings, history: History | None, threshold: float) -> NoveltyResult:
    """Scores against ``history``; with None, only duplicates within the feed score 0."""
    seen, hist, comparable = history.load() if history is not None else (set(), None, True)
    scores = [1.0] * len(examples)
    if hist is not None and len(hist):
        sims = embeddings @ hist.T
        scores = (1.0 - sims.max(dim=1).values).clamp(min=0.0).tolist()
    dups = 0
    in_feed: set[str] = set()
    for i, ex in enumerate(examples):
        if ex.digest in seen or ex.digest in in_feed:
            scores[i] = 0.0
            dups += 1
        in_feed.add(ex.digest)
    novel = [i for i, s in enumerate(scores) if s >= threshold and s > 0.0]
    size = 0 if hist is None else len(hist)
    return NoveltyResult(scores, novel, dups, max(size, len(seen)), comparable)
