"""DP-SGD for LoRA: exact per-example clipping from one backward pass.

A LoRA factor is a bias-free ``nn.Linear`` (peft's ``lora_A``/``lora_B``), so
the gradient of example i is ``sum_t grad_out[i, t] ⊗ input[i, t]``. While
training, each factor runs through a small autograd function that keeps its
input and, on the backward pass, forms that per-example gradient from the
output gradient (one batched matmul per factor, in place of the summed
weight gradient). Then, per logical batch:

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


def _per_example_linear():
    """A bias-free linear layer whose backward pass yields per-example weight
    gradients (into ``sink``) instead of their sum. Built lazily: torch is
    only imported by runs that train."""
    import torch

    class PerExampleLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, sink, key):
            ctx.save_for_backward(x, weight)
            ctx.sink, ctx.key = sink, key
            return torch.nn.functional.linear(x, weight)

        @staticmethod
        def backward(ctx, grad_out):
            x, weight = ctx.saved_tensors
            grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
            # (B, T, out)ᵀ x (B, T, in) -> (B, out, in), in fp32 so bf16 runs clip exactly.
            # This replaces the summed weight gradient (None below): same cost, per example.
            dtype = torch.promote_types(grad_out.dtype, torch.float32)
            g = grad_out.to(dtype).reshape(grad_out.shape[0], -1, grad_out.shape[-1])
            a = x.to(dtype).reshape(x.shape[0], -1, x.shape[-1])
            per_example = torch.bmm(g.transpose(1, 2), a)
            # A factor called twice in one forward (a shared module) sums its contributions.
            previous = ctx.sink.get(ctx.key)
            ctx.sink[ctx.key] = per_example if previous is None else previous + per_example
            return grad_x, None, None, None

    return PerExampleLinear


class PerExampleClipper:
    """Turns each backward pass into a sum of clipped per-example gradients.

    Every LoRA factor's forward is swapped for ``PerExampleLinear`` while the
    clipper is installed (``remove`` restores it). All factors share one flat
    fp32 buffer, so clipping, noise and the division are a few large
    operations per step rather than a few per factor."""

    def __init__(self, model, max_grad_norm: float, world=None) -> None:
        import torch

        self.world = world  # runners/distributed/world.py: sum the clipped sums across ranks, noise once
        self.modules = lora_factors(model)
        self.C = max_grad_norm
        self._fn = _per_example_linear()
        self._grads: dict[int, object] = {}
        self._total = None
        self._sizes = [m.weight.numel() for m in self.modules]
        self._device = self.modules[0].weight.device
        self._dtype = torch.promote_types(self.modules[0].weight.dtype, torch.float32)
        for m in self.modules:
            m.forward = self._forward_for(m)

    @property
    def parameters(self) -> int:
        """d: the trainable LoRA parameters each example's gradient spans."""
        return sum(self._sizes)

    def remove(self) -> None:
        for m in self.modules:
            m.__dict__.pop("forward", None)

    def _forward_for(self, module):
        import torch

        def forward(x):
            if not module.training or not torch.is_grad_enabled():
                return torch.nn.functional.linear(x, module.weight)
            return self._fn.apply(x, module.weight, self._grads, id(module))

        return forward

    def per_example(self, rows: int):
        """After ``backward``: the (rows, P) per-example gradients of every factor, flat, and reset."""
        import torch

        # A factor the forward pass never reached has a zero gradient for every example.
        return torch.cat([self._grads.pop(id(m)).flatten(1) if id(m) in self._grads else
                          torch.zeros(rows, m.weight.numel(), dtype=self._dtype, device=self._device)
                          for m in self.modules], dim=1)

    def accumulate(self, weights):
        """After ``backward``: clip each example's gradient (global norm over all
        factors), add the weighted sum to the running total. Returns the
        per-example norms before clipping."""
        import torch

        flat = self.per_example(len(weights))
        norms = torch.linalg.vector_norm(flat, dim=1)
        factor = (self.C / (norms + 1e-6)).clamp(max=1.0) * weights.to(norms.dtype)
        contrib = factor @ flat
        self._total = contrib if self._total is None else self._total + contrib
        return norms

    def finish(self, sigma: float, expected_batch: int, generator) -> None:
        """Set each factor's ``.grad`` to (clipped sum + N(0, σ²C²)) / B, and reset."""
        import torch

        total = self._total
        if total is None:  # an empty Poisson sample still gets its noise
            total = torch.zeros(sum(self._sizes), dtype=self._dtype, device=self._device)
        if sigma > 0 and (self.world is None or self.world.main):  # once: on rank 0, before the sum
            noise = torch.empty_like(total).normal_(0.0, sigma * self.C, generator=generator)
            total = total + noise
        if self.world is not None:
            self.world.sum_(total)
        total = total / expected_batch
        for m, part in zip(self.modules, torch.split(total, self._sizes)):
            m.weight.grad = part.view_as(m.weight).to(m.weight.dtype)
        self._total = None


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
