"""The adapter a federated round starts from, the same at every site and at the aggregator.

Either the route's release (named by package id), or a fresh LoRA: B = 0 and A
drawn from a CPU generator seeded with ``training.seed``, so a GPU site and a CPU
aggregator draw the same A. Its digest (over names, shapes and float32 bytes)
is in every update, so the aggregator can check that all sites started alike.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from tgsp.canonical import encode, sha256_hex

A_SUFFIX, B_SUFFIX = ".lora_A.weight", ".lora_B.weight"


def lora_state(model, adapter: str = "default") -> dict[str, Any]:
    """The adapter's LoRA tensors (peft's saved names), as CPU float32 copies."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter)
    return {k: v.detach().to("cpu", copy=True).float() for k, v in state.items() if ".lora_" in k}


def fresh_init(model, seed: int, adapter: str = "default") -> None:
    """A from kaiming-uniform (peft's default) on a seeded CPU generator, B = 0: device-independent."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if f".lora_A.{adapter}." in name:
                cpu = torch.empty(p.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(cpu, a=math.sqrt(5), generator=g)
                p.copy_(cpu)
            elif f".lora_B.{adapter}." in name:
                p.zero_()


def freeze_a(model, adapter: str = "default") -> None:
    for name, p in model.named_parameters():
        if f".lora_A.{adapter}." in name:
            p.requires_grad_(False)


def modules(state: dict[str, Any]) -> list[str]:
    """Module names that carry both factors, sorted."""
    names = {k[: -len(A_SUFFIX)] for k in state if k.endswith(A_SUFFIX)}
    return sorted(n for n in names if n + B_SUFFIX in state)


def digest(state: dict[str, Any]) -> str:
    rows = [[k, list(v.shape), hashlib.sha256(v.contiguous().numpy().astype("<f4").tobytes()).hexdigest()]
            for k, v in sorted(state.items())]
    return sha256_hex(encode(rows))


def identity(parent_id: str | None, seed: int, state: dict[str, Any]) -> dict[str, Any]:
    """What an update says it started from."""
    return {"package_id": parent_id, "init": "release" if parent_id else "fresh", "seed": None if parent_id else seed,
            "adapter_sha256": digest(state)}
