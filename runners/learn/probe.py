"""The gradient scale a DP plan is judged against, measured on public data before training.

DP-SGD's noise per coordinate (σ·C/B) is known before training; whether it
drowns the signal depends on how large and how aligned the per-example
gradients are. This probe measures that on the round's eval feed, which a
DP round requires to hold no private records, from the round's own start:
WARMUP_STEPS plain (non-private) steps at the spec's learning rate on one
half of the examples, so the gradients are those of training (per-example
norms fall several-fold after the first steps) rather than of the LoRA's
zero init, then exact per-example gradients of the other half, which the
warm-up has not fitted, with the same machinery DP-SGD uses
(runners/learn/dp_sgd.py). Every weight, optimizer and RNG state it touches
is put back, so the round that follows is unchanged.

Limits: it is one early point of the trajectory, on the eval examples; at a
very small learning rate the warm-up moves little and the signal it
measures is that of the first steps, which overstates it at a large C.
"""

from __future__ import annotations

from dataclasses import dataclass

from tgsp.errors import InputError

from .batches import Tokenized, collate, per_example_loss
from .dp_sgd import PerExampleClipper
from .train import micro_batch

WARMUP_STEPS = 15
MAX_EXAMPLES = 256


@dataclass(frozen=True)
class GradientScale:
    """Per-example gradients of public examples: norms, and the mean's norm after clipping."""

    examples: int
    warmup_steps: int
    parameters: int  # d: the LoRA parameters every example's gradient spans
    norms: tuple[float, ...]  # each example's gradient L2 norm, ascending
    clip: float  # the C the next two were measured at
    clipped_mean_norm: float  # ‖mean of clip_C(g_i)‖, debiased for the sample's own noise
    direction_mean_norm: float  # ‖mean of g_i / ‖g_i‖‖, debiased: the C → 0 limit, divided by C

    def median(self) -> float:
        return self.norms[len(self.norms) // 2]

    def quantile(self, p: float) -> float:
        return self.norms[min(len(self.norms) - 1, int(p * len(self.norms)))]

    def signal(self, clip: float) -> float:
        """The clipped mean gradient's norm at ``clip``: measured at the spec's C, and exact for
        any C at or below the smallest norm (every example clipped); else the nearer of the two."""
        if clip <= self.norms[0]:
            return clip * self.direction_mean_norm
        return self.clipped_mean_norm if clip >= self.clip else max(clip * self.direction_mean_norm,
                                                                     self.clipped_mean_norm * clip / self.clip)


def _debiased(sum_vec, sum_sq: float, n: int) -> float:
    """‖population mean‖ from n samples: E‖x̄‖² = ‖μ‖² + (E‖x‖² − ‖μ‖²)/n, solved for ‖μ‖."""
    mean_sq = float((sum_vec / n).square().sum())
    if n < 2:
        return mean_sq ** 0.5
    return max(0.0, (n * mean_sq - sum_sq / n) / (n - 1)) ** 0.5


def measure(model, tok, data: list[Tokenized], *, clip: float, rows: int, learning_rate: float, device: str,
            seed: int = 0, warmup: int = WARMUP_STEPS, objective=None) -> GradientScale:
    """Probe ``model``'s trainable LoRA factors on ``data`` (public examples), with the round's
    training ``objective`` (losses.py; default token cross-entropy); restores everything."""
    import torch

    data = data[:MAX_EXAMPLES]
    if not data:
        raise InputError("the DP plan's probe needs eval examples, and the eval feed has none",
                         hint="give the eval feed public examples of the task")
    # Warm up on one half and measure on the other: gradients of examples the warm-up did not
    # fit, as the round's training examples are before it reaches them.
    half = max(1, len(data) // 2)
    warm, probe = (data[:half], data[half:]) if len(data) > 1 else (data, data)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    was_training = model.training
    try:
        _warm_up(model, tok, warm, params, rows, learning_rate, device, seed, warmup, objective)
        return _per_example(model, tok, probe, clip, rows, device, warmup, objective)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
                p.grad = None
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        model.train(was_training)


def _warm_up(model, tok, data, params, rows: int, lr: float, device: str, seed: int, steps: int,
             objective=None) -> None:
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    batch = min(rows, len(data))
    for step in range(steps):
        ids, mask, labels = collate([data[i] for i in micro_batch(step, len(data), batch, seed)], tok.pad_token_id, device)
        per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels, objective).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _per_example(model, tok, data, clip: float, rows: int, device: str, warmup: int, objective=None) -> GradientScale:
    import torch

    clipper = PerExampleClipper(model, clip)
    norms, clipped, direction, sq_clipped, sq_direction = [], None, None, 0.0, 0.0
    try:
        model.train()
        for at in range(0, len(data), rows):
            chunk = data[at:at + rows]
            ids, mask, labels = collate(chunk, tok.pad_token_id, device)
            per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels, objective).sum().backward()
            flat = clipper.per_example(len(chunk))
            n = torch.linalg.vector_norm(flat, dim=1)
            unit = 1.0 / (n + 1e-12)
            scale = (clip / (n + 1e-6)).clamp(max=1.0)
            c, d = scale @ flat, unit @ flat
            clipped = c if clipped is None else clipped + c
            direction = d if direction is None else direction + d
            sq_clipped += float((n * scale).square().sum())
            sq_direction += float(((n * unit) ** 2).sum())
            norms += n.tolist()
            for p in model.parameters():
                p.grad = None
    finally:
        clipper.remove()
    count = len(norms)
    return GradientScale(count, warmup, clipper.parameters, tuple(sorted(norms)), clip,
                         _debiased(clipped, sq_clipped, count), _debiased(direction, sq_direction, count))
