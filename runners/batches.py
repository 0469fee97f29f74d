"""Tokenising examples and forming padded batches (a pure helper)."""

from __future__ import annotations

from dataclasses import dataclass

from .feeds import Example

IGNORE = -100


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken (the prompt, the BOS)


def tokenize(tok, examples: list[Example], max_len: int) -> list[Tokenized]:
    out = []
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    for ex in examples:
        p = tok(ex.prompt, add_special_tokens=False)["input_ids"] if ex.prompt else []
        t = tok(ex.target, add_special_tokens=False)["input_ids"] + eos
        ids = (bos + p + t)[:max_len]
        labels = ([IGNORE] * (len(bos) + len(p)) + t)[:max_len]
        if all(label == IGNORE for label in labels):  # prompt filled the window: train on the tail instead
            labels = [IGNORE] + ids[1:]
        out.append(Tokenized(ids, labels))
    return out


def collate(items: list[Tokenized], pad_id: int, device: str):
    """Right-pad to the longest item; returns (input_ids, attention_mask, labels)."""
    import torch

    width = max(len(i.input_ids) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(item.labels)
    return ids.to(device), mask.to(device), labels.to(device)


def per_example_loss(logits, labels):
    """Mean token loss of each example (never a global token mean across the batch)."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    tok_loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                               ignore_index=IGNORE, reduction="none").view(shift_labels.shape)
    counts = (shift_labels != IGNORE).sum(dim=1).clamp(min=1)
    return tok_loss.sum(dim=1) / counts
