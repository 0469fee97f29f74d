"""Evaluation: mean per-example loss on a set, and the forgetting measure.

forgetting = (L_after - L_before) / L_before on the fixed reference set,
where L is the mean over examples of each example's mean token loss, with
the frozen base model (before) and with the adapter (after).
"""

from __future__ import annotations

from .batches import Tokenized, collate, per_example_loss


def mean_loss(model, tok, data: list[Tokenized], device: str, batch: int = 32) -> float:
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), batch):
            ids, mask, labels = collate(data[i : i + batch], tok.pad_token_id, device)
            losses = per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
            total += float(losses.sum())
            n += len(losses)
    return total / max(n, 1)


def example_losses(model, tok, data: list[Tokenized], device: str, batch: int = 32) -> list[float]:
    """Each example's mean token loss."""
    import torch

    model.eval()
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(data), batch):
            ids, mask, labels = collate(data[i : i + batch], tok.pad_token_id, device)
            out += per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels).tolist()
    return out


def relative_change(before: float, after: float) -> float:
    return (after - before) / before if before > 0 else 0.0
