"""DP-SGD for LoRA: exact per-example clipping from one backward pass.

A LoRA factor is a bias-free ``nn.Linear`` (peft's ``lora_A``/``lora_B``), so
the gradient of example i is ``sum_t grad_out[i, t] ⊗ input[i, t]``. Hooks
cache each factor's input on the forward pass and form that per-example
gradient from the output gradient on the backward pass (one small batched
matmul per factor). Then, per logical batch:

  g_i     = per-example gradient of example i's token-mean loss (all LoRA factors)
  ĝ_i     = g_i · min(1, C / ‖g_i‖₂)          (global norm across every factor)
  update  = (Σ ĝ_i + N(0, σ²C²·I)) / B         (B: the spec's expected batch size)

B is public and fixed, never the sampled count, so one example moves the
update by at most C/B before noise. Batches are Poisson samples (rate q);
micro-batches keep a fixed number of rows, padded with empty zero-weight rows.
See docs/adr/0006-dp-sgd.md and docs/privacy.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from tgsp.errors import InputError

TEST_SEED_ENV = "TGFLOW_DP_TEST_SEED"


@dataclass(frozen=True)
class DPConfig:
    max_grad_norm: float  # C
    noise_multiplier: float  # σ
    sample_rate: float  # q
    expected_batch: int  # B


def lora_factors(model) -> list:
    """Every trainable module, which must be a bias-free Linear (a LoRA factor).

    Anything else trainable (biases, modules_to_save, embeddings) would be
    trained without per-example clipping, so it is refused."""
    import torch

    found, covered = [], set()
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not isinstance(module, torch.nn.Linear) or module.bias is not None or ".lora_" not in name:
            raise InputError(f"privacy.mode dp trains LoRA factors only, but {name} has trainable parameters",
                             hint="use lora target_modules without modules_to_save or trainable biases")
        found.append(module)
        covered.add(id(module.weight))
    if any(p.requires_grad and id(p) not in covered for p in model.parameters()):
        raise InputError("privacy.mode dp found a trainable parameter outside the LoRA factors")
    if not found:
        raise InputError("privacy.mode dp found no trainable LoRA factors")
    return found


class PerExampleClipper:
    """Hooks that turn each backward pass into a sum of clipped per-example gradients."""

    def __init__(self, model, max_grad_norm: float) -> None:
        self.modules = lora_factors(model)
        self.C = max_grad_norm
        self._inputs: dict[int, object] = {}
        self._grads: dict[int, object] = {}
        self.summed = {id(m): None for m in self.modules}
        self._handles = [m.register_forward_hook(self._forward) for m in self.modules]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def _forward(self, module, inputs, output) -> None:
        import torch

        if not module.training or not output.requires_grad:
            return
        x = inputs[0].detach()
        key = id(module)
        self._inputs[key] = x

        def grad_hook(grad_out):
            # (B, T, out) x (B, T, in) -> (B, out, in); fp32 so bf16 runs clip exactly.
            xs = self._inputs.pop(key)
            dtype = torch.promote_types(grad_out.dtype, torch.float32)
            g = grad_out.to(dtype).reshape(grad_out.shape[0], -1, grad_out.shape[-1])
            a = xs.to(dtype).reshape(xs.shape[0], -1, xs.shape[-1])
            self._grads[key] = torch.bmm(g.transpose(1, 2), a)

        output.register_hook(grad_hook)

    def accumulate(self, weights) -> "object":
        """After ``backward``: clip each example's gradient, add the weighted sum
        to the running total. Returns the per-example norms (before clipping)."""
        import torch

        grads = [self._grads.pop(id(m)) for m in self.modules]
        sq = torch.stack([g.pow(2).sum(dim=(1, 2)) for g in grads]).sum(0)
        norms = sq.sqrt()
        factor = (self.C / (norms + 1e-6)).clamp(max=1.0) * weights.to(norms.dtype)
        for m, g in zip(self.modules, grads):
            contrib = torch.einsum("b,boi->oi", factor, g)
            key = id(m)
            self.summed[key] = contrib if self.summed[key] is None else self.summed[key] + contrib
        self._inputs.clear()
        return norms

    def finish(self, sigma: float, expected_batch: int, generator) -> None:
        """Set each factor's ``.grad`` to (clipped sum + N(0, σ²C²)) / B, and reset."""
        import torch

        for m in self.modules:
            w = m.weight
            total = self.summed[id(m)]
            if total is None:  # an empty Poisson sample still gets its noise
                total = torch.zeros(w.shape, dtype=torch.promote_types(w.dtype, torch.float32), device=w.device)
            if sigma > 0:
                noise = torch.empty(w.shape, dtype=total.dtype, device=w.device)
                noise.normal_(0.0, sigma * self.C, generator=generator)
                total = total + noise
            w.grad = (total / expected_batch).to(w.dtype)
            self.summed[id(m)] = None


class DPRandom:
    """The generators behind Poisson sampling and the noise.

    Both are secret: the accountant's amplification by sampling assumes nobody
    knows which examples each step used. In production they are seeded from
    ``os.urandom``; the environment variable TGFLOW_DP_TEST_SEED makes them
    reproducible for tests, and the evidence then says the run is not private.
    """

    def __init__(self, device: str) -> None:
        import torch

        seed = os.environ.get(TEST_SEED_ENV)
        if seed is not None:
            try:
                base = int(seed)
            except ValueError:
                raise InputError(f"{TEST_SEED_ENV} must be an integer") from None
            self.source = "test-seed (NOT private: the sampling and noise can be replayed)"
        else:
            base = int.from_bytes(os.urandom(8), "little") >> 1
            self.source = "os.urandom"
        self.test_mode = seed is not None
        self.sampling = torch.Generator().manual_seed(base)
        self.noise = torch.Generator(device=device).manual_seed(base ^ 0x5DEECE66D)

    def state(self) -> dict:
        return {"dp_sampling": self.sampling.get_state(), "dp_noise": self.noise.get_state()}

    def restore(self, rng: dict) -> None:
        if "dp_sampling" not in rng or "dp_noise" not in rng:
            raise InputError("checkpoint has no DP generator state", hint="remove the route's checkpoint folder to restart the round")
        self.sampling.set_state(rng["dp_sampling"])
        self.noise.set_state(rng["dp_noise"])


def poisson_sample(n: int, q: float, generator) -> list[int]:
    """Each of the ``n`` examples independently with probability ``q``."""
    import torch

    return torch.nonzero(torch.rand(n, generator=generator) < q).flatten().tolist()


def micro_batches(items: list, rows: int) -> Iterator[tuple[list, int]]:
    """Chunks of at most ``rows`` items, each with its count of real rows
    (the caller pads every chunk to ``rows``). No chunk for an empty sample."""
    for i in range(0, len(items), rows):
        chunk = items[i : i + rows]
        yield chunk, len(chunk)
