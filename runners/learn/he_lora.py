"""`peft generate --he` (experimental): the base model runs in plaintext while every targeted
module's LoRA delta is computed by the adapter plane under CKKS (runners/n2he/lora.py) and
added by the key holder.

Both planes run in this process, passing bytes only, so the demo can measure what a split
deployment pays: ciphertexts and bytes each way, time on each side, and the delta's error
against the plaintext delta (which only a demo holding both planes can compute).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import numpy as np

from runners.n2he.lora import PARAMS, Adapter, AdapterPlane, KeyHolder
from tgsp.errors import InputError

PROTECTS = ("the activations, and so the prompt and the generated text, from an honest-but-curious adapter plane: "
            "it sees ciphertexts, token and call counts (prompt and generation lengths) and timing")
DOES_NOT_PROTECT = ("the adapter from the key holder: any one answer reveals ΔW exactly (no noise flooding); nor the "
                    "delta's integrity: a dishonest plane can return any delta, and learn bits of the activations "
                    "from how the key holder reacts to it")


def adapters_of(peft_model, adapter: str = "default") -> dict[str, Adapter]:
    """Each LoRA-wrapped linear module's A and s·B, as the plane holds them."""
    from peft.tuners.lora.layer import Linear

    out = {}
    for name, m in peft_model.named_modules():
        if not hasattr(m, "lora_A") or adapter not in m.lora_A:
            continue
        a, b = m.lora_A[adapter], m.lora_B[adapter]
        if type(m) is not Linear or adapter in getattr(m, "lora_variant", {}) or a.bias is not None or b.bias is not None:
            raise InputError(f"HE-LoRA supports plain LoRA on linear layers; {name} is not one",
                             hint="run without --he")
        out[name] = Adapter(a=a.weight.detach().double().cpu().numpy(),
                            sb=(b.weight.detach().double() * float(m.scaling[adapter])).cpu().numpy())
    if not out:
        raise InputError("the adapter has no LoRA linear modules to compute under HE", hint="run without --he")
    return out


class HELoRA:
    """Hooks the two planes into ``peft_model``: inside ``active()`` its own adapter is off and
    each targeted module's output gets the delta the plane computed on ciphertexts."""

    def __init__(self, peft_model, adapter: str = "default"):
        self.model = peft_model
        self.adapters = adapters_of(peft_model, adapter)
        self.holder = KeyHolder()
        self.plane = AdapterPlane(self.holder.plane_context(), self.adapters)
        self._last: tuple[Any, int] | None = None
        self.stats = {"module_calls": 0, "inputs_encrypted": 0, "tokens": 0, "ciphertexts_to_plane": 0,
                      "ciphertexts_to_key_holder": 0, "bytes_to_plane": 0, "bytes_to_key_holder": 0,
                      "seconds": {"encrypt": 0.0, "adapter_plane": 0.0, "decrypt": 0.0}, "max_delta_error": 0.0}

    @contextmanager
    def active(self):
        modules = dict(self.model.named_modules())
        handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.adapters]
        try:
            with self.model.disable_adapter():
                yield self
        finally:
            for h in handles:
                h.remove()
            self._last = None

    def _hook(self, name: str):
        def add_delta(module, args, output):
            x = args[0]
            flat = x.detach().reshape(-1, x.shape[-1]).double().cpu().numpy()
            delta = self.delta(name, x, flat)
            return output + _as(output, delta.reshape(*output.shape[:-1], -1))
        return add_delta

    def delta(self, name: str, x, flat: np.ndarray) -> np.ndarray:
        """The key holder's view of one module call: encrypt (once per input), ask, decrypt."""
        s = self.stats
        if self._last is None or self._last[0] is not x or self._last[1] != x._version:
            t = time.perf_counter()
            chunks = self.holder.encrypt(flat)
            s["seconds"]["encrypt"] += time.perf_counter() - t
            self.plane.receive(chunks)
            self._last = (x, x._version)
            s["inputs_encrypted"] += 1
            s["tokens"] += flat.shape[0]
            s["ciphertexts_to_plane"] += sum(len(c) for c in chunks)
            s["bytes_to_plane"] += sum(len(b) for c in chunks for b in c)
        t = time.perf_counter()
        answer = self.plane.delta(name)
        s["seconds"]["adapter_plane"] += time.perf_counter() - t
        s["ciphertexts_to_key_holder"] += sum(b is not None for c in answer for b in c)
        s["bytes_to_key_holder"] += sum(len(b) for c in answer for b in c if b is not None)
        t = time.perf_counter()
        delta = self.holder.decrypt(answer, flat.shape[0])
        s["seconds"]["decrypt"] += time.perf_counter() - t
        ad = self.adapters[name]
        s["max_delta_error"] = max(s["max_delta_error"], float(np.abs(delta - flat @ ad.a.T @ ad.sb.T).max(initial=0)))
        s["module_calls"] += 1
        return delta

    def report(self, **extra) -> dict[str, Any]:
        return {"experimental": True, "scheme": "CKKS (TenSEAL)", "security_bits": 128,
                "params": PARAMS.to_dict(), "layout": "one token per slot, rotation-free",
                "modules": sorted(self.adapters), **self.stats, **extra,
                "protects": PROTECTS, "does_not_protect": DOES_NOT_PROTECT}


def _as(output, delta: np.ndarray):
    import torch

    return torch.from_numpy(delta).to(device=output.device, dtype=output.dtype)
