"""Tokenising examples and forming padded batches (a pure helper)."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.feeds import Example

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


def _token_losses(logits, labels, objective=None):
    """Loss of predicting token t+1 at position t, shape (B, T): token cross-entropy, or
    ``objective``'s per-token loss (losses.py). The labels are shifted (not the logits), so
    the large logits tensor is never copied."""
    import torch.nn.functional as F

    shifted = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    logits, targets = logits.float().view(-1, logits.size(-1)), shifted.reshape(-1)
    if objective is None:
        flat = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")
    else:
        flat = objective.token_losses(logits, targets) * (targets != IGNORE)
    return flat.view(shifted.shape), shifted


def per_example_loss(logits, labels, objective=None):
    """Mean token loss of each example (never a global token mean across the batch)."""
    tok_loss, shifted = _token_losses(logits, labels, objective)
    return tok_loss.sum(dim=1) / (shifted != IGNORE).sum(dim=1).clamp(min=1)


# --- sequence packing (no cross-contamination) ------------------------------------
@dataclass(frozen=True)
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segments: list[int]  # example index within the micro-batch


def pack(items: list[Tokenized], max_len: int) -> list[PackedRow]:
    """First-fit-decreasing: the micro-batch's examples, longest first, each
    into the first row of at most ``max_len`` tokens it fits.

    Each example keeps its own position ids (restarting at 0), so attention
    never crosses an example boundary (transformers builds a block-diagonal
    causal mask from the position-id resets), and its first label is masked
    so no loss is taken across a boundary either.
    """
    rows: list[dict] = []
    order = sorted(range(len(items)), key=lambda i: (-len(items[i].input_ids), i))
    for index in order:
        item = items[index]
        n = len(item.input_ids)
        row = next((r for r in rows if len(r["ids"]) + n <= max_len), None)
        if row is None:
            row = {"ids": [], "labels": [], "pos": [], "seg": []}
            rows.append(row)
        row["ids"] += item.input_ids
        row["labels"] += [IGNORE] + item.labels[1:]
        row["pos"] += list(range(n))
        row["seg"] += [index] * n
    return [PackedRow(r["ids"], r["labels"], r["pos"], r["seg"]) for r in rows]


def collate_packed(rows: list[PackedRow], pad_id: int, device: str):
    """(input_ids, position_ids, labels, segments); padding is its own sequence with segment -1."""
    import torch

    width = max(len(r.input_ids) for r in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    seg = torch.full(shape, -1, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n], labels[i, :n] = torch.tensor(r.input_ids), torch.tensor(r.labels)
        pos[i, :n], seg[i, :n] = torch.tensor(r.position_ids), torch.tensor(r.segments)
        pos[i, n:] = torch.arange(width - n)
    return ids.to(device), pos.to(device), labels.to(device), seg.to(device)


def forward_packed(model, ids, pos):
    """Logits for a packed batch. ``use_cache=False`` matters: transformers only
    builds the block-diagonal mask from position-id resets when no KV cache
    exists, and with one it silently lets examples attend to each other."""
    return model(input_ids=ids, position_ids=pos, use_cache=False).logits


def per_example_loss_packed(logits, labels, segments, n_examples: int, objective=None):
    """Mean token loss of each example in a packed batch (indexed by segment)."""
    import torch
    import torch.nn.functional as F

    tok_loss, shifted = _token_losses(logits, labels, objective)
    shift_seg = F.pad(segments, (0, 1), value=-1)[:, 1:]
    tok_loss = tok_loss.reshape(-1)
    valid = (shifted.reshape(-1) != IGNORE) & (shift_seg.reshape(-1) >= 0)
    seg = shift_seg.reshape(-1).clamp(min=0)
    sums = torch.zeros(n_examples, device=logits.device).scatter_add(0, seg, tok_loss * valid)
    counts = torch.zeros(n_examples, device=logits.device).scatter_add(0, seg, valid.float())
    return sums / counts.clamp(min=1)
