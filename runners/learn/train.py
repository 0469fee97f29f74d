"""The training recipe for one round: LoRA on a frozen base, plain torch.

Readable on purpose: one function, no trainer framework. The data order for
every step follows from the seed alone, and a checkpoint holds every piece
of state the next step depends on (LoRA weights, AdamW moments, RNG), so a
resumed run ends on the same bytes as an uninterrupted one (on the CPU).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tgsp.errors import InputError, Interrupted

from ..spec import LoraSpec, TrainingSpec
from ..state.checkpoint import Checkpoint, CheckpointStore
from .batches import (IGNORE, Tokenized, collate, collate_packed, forward_packed, pack, per_example_loss,
                      per_example_loss_packed)
from . import losses as losses_mod
from .dp_sgd import DPConfig, DPRandom, PerExampleClipper, micro_batches, poisson_sample


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0

    # Computed from the private records outside the DP mechanism: never shown under DP.
    PRIVATE = ("tokens", "seconds", "tokens_per_second", "loss_first", "loss_last", "loss_curve")
    CURVE_POINTS = 256

    def curve(self) -> dict:
        """Per-step training losses, every ``stride``-th step so at most CURVE_POINTS values."""
        stride = max(1, math.ceil(len(self.losses) / self.CURVE_POINTS))
        return {"stride": stride, "losses": [round(x, 6) for x in self.losses[::stride]]}

    def metrics(self, *, private: bool = False) -> dict:
        if private:
            return {**{k: v for k, v in self.metrics().items() if k not in self.PRIVATE},
                    "withheld_under_dp": list(self.PRIVATE)}
        return {"steps": self.steps, "tokens": self.tokens, "seconds": round(self.seconds, 3),
                "tokens_per_second": round(self.tokens / self.seconds, 1) if self.seconds else None,
                "loss_first": round(self.losses[0], 6) if self.losses else None,
                "loss_last": round(self.losses[-1], 6) if self.losses else None,
                "loss_curve": self.curve(),
                "resumed_from_step": self.resumed_from}


def total_steps(spec: TrainingSpec, n_examples: int) -> int:
    if spec.steps is not None:
        return spec.steps
    per_step = spec.batch_size * spec.gradient_accumulation
    return max(1, math.ceil(spec.epochs * n_examples / per_step))


def micro_batch(index: int, n: int, batch: int, seed: int) -> list[int]:
    """Example indices of global micro-batch ``index``: epochs of seeded permutations."""
    import torch

    out: list[int] = []
    pos = index * batch
    while len(out) < batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        take = perm[offset : offset + batch - len(out)]
        out += take
        pos += len(take)
    return out


def check_target_modules(model, wanted) -> None:
    """Name the model's real module names when a target does not exist."""
    if wanted == "all-linear":
        return
    import torch

    linear = set()
    for n, m in model.named_modules():
        parts = n.split(".")
        if (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D") and not any(p.startswith("lora_") for p in parts):
            linear.add(parts[-2] if parts[-1] == "base_layer" and len(parts) > 1 else parts[-1])  # a LoRA-wrapped layer
    linear = sorted(linear)
    missing = [w for w in wanted if w not in linear]
    if missing:
        raise InputError(f"lora.target_modules {', '.join(missing)} not found in the model",
                         hint=f"its linear modules are: {', '.join(linear)} (or use \"all-linear\")")


def lora_config(lora: LoraSpec):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def add_lora(model, lora: LoraSpec, seed: int):
    import torch
    from peft import get_peft_model

    check_target_modules(model, lora.target_modules)
    torch.manual_seed(seed)  # LoRA A init draws from the RNG
    return get_peft_model(model, lora_config(lora))


def _lr(step: int, spec: TrainingSpec, total: int) -> float:
    if spec.warmup_steps and step < spec.warmup_steps:
        return spec.learning_rate * (step + 1) / spec.warmup_steps
    return spec.learning_rate


@dataclass
class DPRun:
    """What DP-SGD needs besides the model: the mechanism and its secret randomness."""

    config: DPConfig
    random: DPRandom


def train(model, tok, data: list[Tokenized], spec: TrainingSpec, device: str, store: CheckpointStore,
          fingerprint: dict, *, stop: threading.Event | None = None,
          progress: Callable[[int, int, float, int], None] | None = None,
          dp: DPRun | None = None, limit: int | None = None, world=None,
          on_resume: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train the LoRA parameters of ``model`` (already wrapped by ``add_lora``).

    With ``dp``, every step is a DP-SGD step on a Poisson sample. ``limit``
    stops after that many steps (the privacy budget) even if more were planned.
    With ``world`` (runners/distributed/world.py), each rank trains on its share of every
    global batch and the gradients are summed: the same steps as one process. Only
    rank 0 writes checkpoints; a stop on any rank stops every rank at the same step.
    """
    import torch

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in params], lr=spec.learning_rate, weight_decay=spec.weight_decay)
    total = total_steps(spec, len(data))
    end = total if limit is None else min(total, limit)
    result = TrainResult(0, 0, 0.0)
    start = 0
    ckpt = store.load(fingerprint)
    if ckpt is not None:
        start = _restore(ckpt, params, opt, device, dp)
        result.losses = list(ckpt.meta.get("losses", []))
        result.tokens = int(ckpt.meta.get("tokens", 0))
        result.resumed_from = start
        if on_resume:  # before any step: the caller can say "resumed from step N of M"
            on_resume(start, end)
    clipper = PerExampleClipper(model, dp.config.max_grad_norm, world) if dp else None
    objective = losses_mod.resolve(spec.loss)
    if dp and world is not None:
        share_sampling(dp, world)
    model.train()
    t0 = time.perf_counter()
    try:
        for step in range(start, end):
            for g in opt.param_groups:
                g["lr"] = _lr(step, spec, total)
            step_loss, tokens = _gradient(model, tok, data, spec, step, device, params, dp, clipper, world, objective)
            result.tokens += tokens
            opt.step()
            opt.zero_grad(set_to_none=True)
            result.losses.append(step_loss)
            done = step + 1
            if progress:
                progress(done, end, step_loss, result.tokens)
            interrupted = stop is not None and stop.is_set() and done < end
            if world is not None:
                interrupted = world.any(interrupted)
            if (interrupted or (done % spec.checkpoint_every == 0 and done < end)) and (world is None or world.main):
                _save(store, done, params, opt, fingerprint, result, dp)
            if interrupted:
                raise Interrupted(f"stopped at step {done} of {end}; checkpoint saved, re-run the same command to resume")
    finally:
        if clipper:
            clipper.remove()
    result.steps = end
    result.seconds = time.perf_counter() - t0
    return result


def _gradient(model, tok, data, spec: TrainingSpec, step: int, device: str, params, dp, clipper, world, objective):
    """Set every LoRA factor's ``.grad`` for ``step``; returns (loss, tokens)."""
    import torch

    if dp:
        return dp_step(model, tok, data, spec.batch_size, device, clipper, dp, world, objective)
    step_loss, tokens = _plain_step(model, tok, data, spec, step, device, world, objective)
    if world is not None:
        step_loss, tokens = _sum_grads(params, world, step_loss, tokens)
    torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
    return step_loss, tokens


def _plain_step(model, tok, data: list[Tokenized], spec: TrainingSpec, step: int, device: str,
                world=None, objective=None) -> tuple[float, int]:
    """Accumulate the mean loss gradient of one seeded batch; returns (loss, tokens). With
    ``world``, this rank's share of it, scaled so the ranks' gradients sum to the batch's."""
    step_loss, tokens = 0.0, 0
    for j in range(spec.gradient_accumulation):
        items = [data[i] for i in micro_batch(step * spec.gradient_accumulation + j, len(data), spec.batch_size, spec.seed)]
        scale = 1.0
        if world is not None:
            scale, items = len(world.share(items)) / len(items), world.share(items)
        if spec.packing:
            ids, pos, labels, seg = collate_packed(pack(items, spec.max_seq_len), tok.pad_token_id, device)
            losses = per_example_loss_packed(forward_packed(model, ids, pos), labels, seg, len(items), objective)
        else:
            ids, mask, labels = collate(items, tok.pad_token_id, device)
            losses = per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels, objective)
        loss = losses.mean() * scale / spec.gradient_accumulation
        loss.backward()
        step_loss += loss.item()
        tokens += sum(len(i.input_ids) for i in items)
    return step_loss, tokens


def dp_step(model, tok, data: list[Tokenized], rows: int, device: str, clipper: PerExampleClipper,
            dp: DPRun, world=None, objective=None) -> tuple[float, int]:
    """Set ``.grad`` of every LoRA factor for one DP-SGD step on a fresh Poisson
    sample; returns (mean loss, tokens). With ``world``, the sample is global (every rank
    draws the same one) and each rank clips its share of it."""
    sample = poisson_sample(len(data), dp.config.sample_rate, dp.random.sampling)
    if world is not None:
        sample = world.share(sample)
    return dp_gradient(model, tok, [data[i] for i in sample], rows // (world.size if world else 1), device, clipper, dp,
                       objective)


def dp_gradient(model, tok, batch: list[Tokenized], rows: int, device: str, clipper: PerExampleClipper,
                dp: DPRun, objective=None) -> tuple[float, int]:
    """Clipped, noised gradient of one logical batch (any size, even empty).

    Every micro-batch has exactly ``rows`` rows: the batch fills them and
    empty rows of weight 0 pad the last one, so shapes stay static."""
    import torch

    empty = Tokenized([tok.pad_token_id], [IGNORE])
    loss_sum, tokens = 0.0, 0
    for chunk, real in micro_batches(batch, rows):
        items = chunk + [empty] * (rows - real)
        ids, mask, labels = collate(items, tok.pad_token_id, device)
        weights = torch.zeros(rows, device=ids.device)
        weights[:real] = 1.0
        losses = per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels, objective) * weights
        losses.sum().backward()
        clipper.accumulate(weights)
        loss_sum += float(losses.detach().sum())
        tokens += sum(len(i.input_ids) for i in chunk)
    clipper.finish(dp.config.noise_multiplier, dp.config.expected_batch, dp.random.noise)
    return loss_sum / max(len(batch), 1), tokens


def _sum_grads(params, world, loss: float, tokens: int) -> tuple[float, int]:
    """Sum every LoRA gradient across the ranks, in one flat buffer (one collective per step)."""
    import torch

    grads = [p.grad for _, p in params]
    flat = torch.cat([g.flatten().float() for g in grads] + [torch.tensor([loss, float(tokens)], device=grads[0].device)])
    world.sum_(flat)
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()
    return float(flat[-2]), int(flat[-1])


def _save(store: CheckpointStore, step: int, params, opt, fingerprint: dict, result: TrainResult,
          dp: DPRun | None) -> None:
    import torch

    optim = {}
    state = opt.state_dict()["state"]
    for i, s in state.items():
        for k, v in s.items():
            optim[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = st
    if dp:
        rng.update(dp.random.state())
    store.save(Checkpoint(step, {**fingerprint, "losses": result.losses, "tokens": result.tokens},
                          {n: p for n, p in params}, optim, rng))


def _restore(ckpt: Checkpoint, params, opt, device: str, dp: DPRun | None) -> int:
    import torch

    with torch.no_grad():
        for n, p in params:
            p.copy_(ckpt.params[n].to(p.device, p.dtype))
    state: dict[int, dict] = {}
    for key, value in ckpt.optim.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value.to(device) if name != "step" else value
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    torch.set_rng_state(ckpt.rng["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([ckpt.rng[k] for k in sorted(ckpt.rng) if k.startswith("cuda")])
    if dp:
        dp.random.restore(ckpt.rng)
    return ckpt.step


def share_sampling(dp, world) -> None:
    """One global Poisson sample per step: every rank draws it from rank 0's generator state."""
    world.share_generator(dp.random.sampling)
